// Shared-memory transport.
//
// Each rank owns one POSIX shared-memory segment holding an inbound ring buffer per sender
// (itself included). Sender q writes rank r's ring[q]; only r reads it: single producer, single
// consumer, no locks. A ring is a byte stream: `head` counts bytes ever written, `tail` bytes
// ever read (each on its own cache line, so producer and consumer never share a line). Messages
// in the stream are a MessageHeader (tag, bytes) followed by the payload, padded to 8 bytes, so
// every message starts 8-aligned and a receiver can hand out pieces that never split an element
// (irecvConsume reduces straight out of the ring).
//
// Memory: a segment is its header and ring controls (allocated at once) and one ring per sender,
// allocated (posix_fallocate) by that sender before its first message, so pairs that never talk
// cost nothing and a /dev/shm too small is a clear error on the sending rank, not a SIGBUS. The
// group's rank 0 sizes the rings when ZCOLL_SHM_RING_BYTES does not (chooseRingBytes): 4 MiB,
// less where the group is large or /dev/shm small, so a rank's rings take O(1) memory at any
// group size. A fresh ring is prefaulted in the sender's mapping, and in the receiver's at its
// first message (MADV_POPULATE_*): no pass through a ring page-faults (measured without this:
// the first ~1000 4 KiB all-reduces took 17 us instead of 8 until the rings had wrapped once).
//
// Bootstrap: every rank creates its segment under a unique name, publishes the name in the
// store, maps every peer's segment, says so in the store, and once all ranks have mapped
// everything, unlinks its own name: from then on nothing is left in /dev/shm even if a process
// is killed (the kernel frees the memory when the last mapping goes). A bootstrap that fails
// (a rank killed while the group forms) unlinks every name published so far, the dead rank's
// included.
//
// Single copy: a message of at least ZCOLL_SHM_SINGLE_COPY_BYTES does not pass through the ring.
// Its sender writes only a descriptor there (its pid and the buffer's address); the receiver,
// once it has posted the matching receive, reads the sender's buffer straight into its own with
// process_vm_readv (one copy instead of two: into the ring and out of it) and counts the message
// in the ring's `acked`, which completes the send. A receive that consumes in place reads into a
// small bounce buffer, piece by piece, and hands the pieces on while they are in cache. Whether
// a receiver may read a sender's memory (ptrace rules: Yama, other users, PID namespaces that
// make the pid another process's) is probed once at bootstrap, by reading a random word of the
// sender's header through the kernel and comparing it with the shared mapping; where it may not,
// that pair keeps the rings, and ZCOLL_DEBUG=INFO says why. Checksummed groups keep the rings:
// the CRC covers bytes that went through them.
//
// Waiting: spin briefly (lowest latency when ranks have their own cores), yield a few times, then
// sleep on a futex in our segment header (the doorbell): a peer that publishes data or frees ring
// space for us rings it when someone sleeps there, so a sleeper wakes at once and an idle or
// oversubscribed rank (8 ranks on 2 cores) burns no CPU. A peer whose process is gone is told
// by the group's liveness channels (transport/liveness.h; not by pid, which zombies and other
// PID namespaces defeat), long before the deadline.
#include "transport/shm/shm_transport.h"
#include "transport/liveness.h"
#include "transport/tag.h"
#include "util/crc32c.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

namespace zcoll {
namespace {

constexpr uint64_t kSegmentMagic = 0x7a636f6c6c73686dULL;  // "zcollshm"
constexpr uint64_t kMessageMagic = 0x7a636d7367ULL;
constexpr uint64_t kChecksummedMagic = 0x7a636d7363ULL;  // a message followed by a CRC32C trailer
constexpr uint64_t kSingleCopyMagic = 0x7a636d7331ULL;   // a descriptor of the sender's buffer
constexpr size_t kLine = 64;

constexpr size_t kAbortReasonBytes = 1024;
constexpr size_t kPage = 4096;

// The rings a group sizes itself (chooseRingBytes) when ZCOLL_SHM_RING_BYTES is not set: at most
// 4 MiB, at least 64 KiB, and at most 32 MiB of one transport's rings from a rank's peers.
constexpr size_t kAutoRingMax = size_t{4} << 20, kAutoRingMin = size_t{64} << 10;
constexpr size_t kAutoRingsPerRank = size_t{32} << 20;
// A zcoll group's shm transports on a host: the collectives' and the point-to-point lane's.
constexpr int kLanesPerGroup = 2;

// How long wait() spins, then yields, before it sleeps on the doorbell. Waking a sleeper costs
// tens to hundreds of microseconds (a syscall on each side, and on a VM an idle vCPU to wake), so
// a peer that is merely a few Python statements behind must be caught while spinning. Spinning
// only pays when every rank has a core: with more ranks than cores, a spinning rank holds the
// core a peer needs, so oversubscribed groups go straight to yielding (measured at 4 ranks on 2
// cores: 1.2-2.2x faster all-reduces from 64 KiB to 1 MiB).
constexpr auto kSpinFor = std::chrono::microseconds(20), kYieldUntil = std::chrono::microseconds(1000);
constexpr unsigned kRoundsPerClockRead = 64;

// Where a rank sleeps: `seq` is the futex word, bumped by whoever may have unblocked the rank;
// `sleepers` tells peers whether a bump (and a wake syscall) is needed at all.
struct alignas(kLine) Doorbell {
  std::atomic<uint32_t> seq;
  std::atomic<uint32_t> sleepers;
};

struct alignas(kLine) SegmentHeader {
  uint64_t magic;
  uint64_t ringBytes;
  uint64_t size;
  // Set by abort(): peers waiting on this rank raise with the reason instead of timing out.
  std::atomic<uint32_t> aborted;
  char abortReason[kAbortReasonBytes];
  // Single copy: the owner's pid, and where in its address space `probe` (a random word) is, so
  // that a peer can check it reads the right process's memory.
  uint64_t pid;
  uint64_t probeAddress;
  uint64_t probe;
  Doorbell doorbell;  // its own cache line: peers touch it on every publish
};
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex words are plain 32-bit integers");

// Process-shared futex (no FUTEX_PRIVATE_FLAG: the word lives in shared memory).
void futexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::microseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000000), static_cast<long>(timeout.count() % 1000000) * 1000};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}
void futexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

struct alignas(kLine) RingControl {
  alignas(kLine) std::atomic<uint64_t> head;  // written by the producer
  alignas(kLine) std::atomic<uint64_t> tail;  // written by the consumer
  // Single-copy messages the consumer has read from the producer's memory (completes its sends).
  alignas(kLine) std::atomic<uint64_t> acked;
  // Set by the consumer at bootstrap: it can read the producer's memory (single copy allowed).
  std::atomic<uint32_t> singleCopy;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "process-shared atomics must be lock-free");

struct MessageHeader {
  uint64_t magic;
  uint64_t tag;
  uint64_t bytes;
};
static_assert(sizeof(MessageHeader) % 8 == 0, "messages start 8-aligned");

constexpr size_t kHeaderBytes = sizeof(MessageHeader);

// What a single-copy message carries in the ring instead of its payload.
struct SingleCopyDescriptor {
  uint64_t pid;
  uint64_t address;
};
constexpr size_t kDescriptorBytes = sizeof(SingleCopyDescriptor);
// A single-copy read moves at most this much per pass of the progress loop, so that our other
// requests (the send our peer waits for, full duplex) are not held up behind a large message;
// a consumer gets pieces of kConsumePiece through the bounce buffer (they stay in L2).
constexpr size_t kSingleCopyPiece = 1 << 20, kConsumePiece = 256 << 10;
// A reduction's operands (isendOperand) go by single copy only from this size: below it the
// rings win, since the sender's copy into them overlaps the receiver's reduction and the sender
// does not wait for the read (2 ranks: one-shot 64 KiB all-reduce 15.5 us through the rings,
// 38 us by single copy; two-shot 1 MiB 172 against 212 us; 4 MiB, 1 MiB messages, 641 against
// 774 us the other way round).
constexpr size_t kOperandSingleCopyBytes = 1 << 20;
// With checksums, 8 bytes after the padded payload: the payload's CRC32C, then zeros.
constexpr size_t kTrailerBytes = 8;
// Ring bytes of a message's header, payload and padding to 8 (its trailer comes after).
constexpr size_t footprint(size_t payload) { return kHeaderBytes + ((payload + 7) & ~size_t{7}); }
// A consumer gets checksummed ring bytes in pieces this small, each checksummed right after it is
// consumed, while in cache (multiples of 8: pieces never split an element).
constexpr size_t kChecksumPiece = 64 << 10;

size_t roundUpPow2(size_t v) {
  size_t p = 4096;
  while (p < v) p <<= 1;
  return p;
}

// One mapped segment: header and `size` ring controls (whole pages), then `size` data areas.
struct Segment {
  void* base = nullptr;
  size_t bytes = 0;
  size_t ringBytes = 0;
  size_t headerBytes = 0;
  int fd = -1;  // kept open: a sender allocates its ring in the receiver's segment through it

  SegmentHeader* header() const { return static_cast<SegmentHeader*>(base); }
  RingControl* control(int sender) const {
    return reinterpret_cast<RingControl*>(static_cast<char*>(base) + sizeof(SegmentHeader)) + sender;
  }
  size_t dataOffset(int sender) const { return headerBytes + static_cast<size_t>(sender) * ringBytes; }
  char* data(int sender) const { return static_cast<char*>(base) + dataOffset(sender); }
  static size_t headerBytesFor(int size) {
    return (sizeof(SegmentHeader) + size * sizeof(RingControl) + kPage - 1) / kPage * kPage;
  }
  static size_t totalBytes(int size, size_t ringBytes) { return headerBytesFor(size) + size * ringBytes; }
  void release() {
    if (base) munmap(base, bytes);
    if (fd >= 0) close(fd);
    base = nullptr;
    fd = -1;
  }
};

// The ring size a group takes when none is configured (rank 0 decides for all): kAutoRingMax,
// halved while one transport's rings from a rank's p-1 peers would exceed kAutoRingsPerRank (so
// a rank's worst case, every peer's ring of both lanes allocated, stays under 64 MiB at any group
// size), and while that worst case for every rank of the host would not fit in what /dev/shm
// has free (Docker gives 64 MiB); never below kAutoRingMin. (zcoll's schedules never send to
// their own rank; a transport user that did would add that ring.)
size_t chooseRingBytes(int size) {
  const size_t peers = size > 1 ? static_cast<size_t>(size - 1) : 1;
  size_t ring = kAutoRingMax;
  while (ring > kAutoRingMin && ring * peers > kAutoRingsPerRank) ring >>= 1;
  struct statvfs fs {};
  if (statvfs("/dev/shm", &fs) == 0) {
    const size_t free = static_cast<size_t>(fs.f_bavail) * fs.f_frsize;
    while (ring > kAutoRingMin && kLanesPerGroup * size * (Segment::headerBytesFor(size) + peers * ring) > free)
      ring >>= 1;
  }
  return ring;
}

// Maps a range's pages (they exist: the sender allocated them) so the passes through a ring take
// no page faults; before Linux 5.14 (no MADV_POPULATE_*) they map at first touch instead.
void prefault(char* at, size_t bytes, bool write) {
#if defined(MADV_POPULATE_WRITE) && defined(MADV_POPULATE_READ)
  madvise(at, bytes, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
#else
  (void)at, (void)bytes, (void)write;
#endif
}

struct Request {
  RequestId id;
  bool send;
  uint64_t tag;
  char* data;
  size_t bytes;
  size_t done = 0;   // ring bytes (header, payload, padding, trailer) moved so far
  Consumer consume;  // irecvConsume: takes the payload from the ring instead of `data`
  uint32_t crc = 0;  // CRC32C of the payload moved so far (with checksums)
  // Single copy. Send: the value of the ring's `acked` that completes it. Receive: where the
  // payload is in the sender (pid 0: it comes through the ring), and how much of it is read.
  uint64_t ack = 0;
  bool operand = false;  // isendOperand: single copy only from kOperandSingleCopyBytes
  SingleCopyDescriptor source{};
  size_t copied = 0;
};

// Where a peer's header says it is, reads its probe word through the kernel: true when that is
// the word the shared mapping shows (the pid is that process, and it lets us read its memory).
bool canReadMemoryOf(const SegmentHeader& peer, std::string* why) {
  uint64_t seen = 0;
  iovec local{&seen, sizeof seen}, remote{reinterpret_cast<void*>(peer.probeAddress), sizeof seen};
  const ssize_t n = process_vm_readv(static_cast<pid_t>(peer.pid), &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(sizeof seen) && seen == peer.probe) return true;
  *why = n < 0 ? std::string("process_vm_readv: ") + std::strerror(errno)
               : "its pid " + std::to_string(peer.pid) + " is another process here (another PID namespace)";
  return false;
}

// Whether a host's `size` ranks each have a core: spinning and single copy pay only then.
bool ranksHaveCores(int size) { return static_cast<unsigned>(size) <= std::thread::hardware_concurrency(); }

// The configured single-copy threshold, or where not configured, the default when every rank of
// the host has a core and 0 (off) when they outnumber the cores: a single-copy send completes
// only once its receiver has run and read it, while the ring lets the sender move on. Measured
// at 4 ranks on 2 cores, single copy made 16 KiB-4 MiB all-reduces 1.4-2.7x slower.
size_t singleCopyThreshold(int64_t configured, int size) {
  if (configured >= 0) return static_cast<size_t>(configured);
  return ranksHaveCores(size) ? kDefaultShmSingleCopyBytes : 0;
}

// Under Yama's ptrace_scope 1 (Ubuntu's default) only an ancestor may read a process's memory:
// let the group's peers, which are not our ancestors, read the buffers we send.
void allowPeersToReadOurMemory() {
  FILE* f = std::fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
  if (!f) return;
  int scope = 0;
  const bool read = std::fscanf(f, "%d", &scope) == 1;
  std::fclose(f);
#ifdef PR_SET_PTRACER
  if (read && scope == 1) prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#else
  (void)read;
#endif
}

class ShmTransport : public Transport {
 public:
  ShmTransport(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& opt);
  ~ShmTransport() override;

  const char* name() const override { return "shm"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId isendOperand(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) override;
  void wait(RequestId req, Deadline deadline) override;
  bool test(RequestId req) override;
  void idle(std::chrono::microseconds upTo) override { sleepUntilRung(Clock::now() + upTo); }
  SharedMemoryUse sharedMemory() const override;
  void abort(const std::string& why) override {
    std::lock_guard<std::mutex> lock(abortMutex_);
    if (aborted_.load()) return;  // the first cause is the useful one
    abortReason_ = why.empty() ? "aborted" : why;
    SegmentHeader* h = segs_[rank_].header();
    std::snprintf(h->abortReason, kAbortReasonBytes, "%s", abortReason_.c_str());
    h->aborted.store(1, std::memory_order_release);
    aborted_.store(true, std::memory_order_release);
    for (int p = 0; p < size_; ++p) wake(p, true);  // sleeping peers wake and read the flag
  }

 private:
  bool progressSend(int peer);
  bool progressRecv(int peer);
  bool completeAcknowledged(int peer);
  bool sendsSingleCopy(int peer, const Request& r);
  // One piece of a single-copy receive; true when the message is complete.
  bool readSingleCopy(int peer, Request& r);
  // Probes which peers' memory we can read, and says so in their rings' controls.
  void probeSingleCopy(const log::Logger& log);
  void consumeFromRing(Request& r, size_t at, const char* src, size_t n);
  // Wakes `peer` if it sleeps (always bumps its doorbell when `force`): after we published data
  // to it or freed space in its ring to us.
  void wake(int peer, bool force = false);
  void sleepUntilRung(Deadline deadline);
  void checkPeerAlive(int peer) const;
  // Throws if `peer` has aborted, with its reason; `when` qualifies "gave up" in the message.
  void checkPeerNotAborted(int peer, const char* when = "") const;
  void checkPeer(int peer) const;
  std::string pendingSummary() const;
  void checkPendingPeersDrained();
  void allocateRing(int peer);
  // What a /dev/shm too small for this group needs, for its errors.
  std::string sizingAdvice() const;

  // The group rank of local rank i, for messages: under the "auto" transport this transport
  // spans one host's ranks of a larger group.
  int g(int i) const { return groupRanks_.empty() ? i : groupRanks_[i]; }

  int rank_, size_;
  std::vector<int> groupRanks_;
  std::shared_ptr<Liveness> liveness_;  // may be null (transport tests without one)
  const bool checksum_;                 // CRC32C trailer on every message (ZCOLL_CHECKSUM)
  int64_t flipAt_;                      // test-only: corrupt the payload of this received message
  int64_t received_ = 0;                // messages with a payload received so far
  size_t singleCopyBytes_;               // 0: single copy off (configured, or checksums on)
  std::vector<int8_t> peerReadsUs_;      // -1: not yet looked up; else the peer's probe verdict
  std::vector<std::deque<Request>> unacked_;  // single-copy sends waiting for the peer's read
  std::vector<uint64_t> singleCopySent_;      // single-copy messages written to each peer's ring
  std::vector<uint64_t> bounce_;              // kConsumePiece bytes, for consumers (8-aligned)
  uint64_t singleCopyMessages_ = 0, singleCopyReceived_ = 0;
  size_t ringBytes_ = 0;
  bool ringBytesChosen_ = false;  // by rank 0 for the group (no ZCOLL_SHM_RING_BYTES)
  std::vector<bool> ringAllocated_;  // ours in peer p's segment
  std::vector<bool> ringPrefaulted_;  // peer p's in ours, in our mapping
  std::chrono::microseconds spinFor_;  // kSpinFor, or 0 when the ranks outnumber the cores
  std::vector<Segment> segs_;  // segs_[r]: rank r's segment (inbound rings of r)
  std::vector<std::deque<Request>> sendq_, recvq_;
  std::unordered_map<RequestId, int> owner_;  // pending request -> peer (for messages)
  RequestId nextId_ = 1;
  std::atomic<bool> aborted_{false};  // abort() may come from another thread
  std::mutex abortMutex_;
  std::string abortReason_;
  Clock::time_point nextLivenessCheck_{};  // test(): peers' flags and liveness, at most every 10 ms
};

std::string uniqueName(int rank) {
  std::random_device rd;
  char buf[96];
  std::snprintf(buf, sizeof buf, "/zcoll-%d-r%d-%08x%08x", static_cast<int>(getpid()), rank, rd(), rd());
  return buf;
}

std::vector<uint8_t> bytesOf(const std::string& s) { return {s.begin(), s.end()}; }

// Unlinks every segment name published under `key` (those already gone are ignored).
void unlinkPublished(Store& store, const std::string& key, int size) {
  for (int p = 0; p < size; ++p) {
    try {
      const std::string k = key + "name/" + std::to_string(p);
      if (!store.check(k)) continue;
      const auto name = store.get(k);
      shm_unlink(std::string(name.begin(), name.end()).c_str());
    } catch (...) {
      // the store itself failed: nothing more can be found
    }
  }
}

ShmTransport::ShmTransport(Store& store, const std::string& prefix, int rank, int size,
                           const TransportOptions& opt)
    : rank_(rank), size_(size), groupRanks_(opt.groupRanks), liveness_(opt.liveness), checksum_(opt.checksum),
      flipAt_(opt.testFlipBitAt),
      singleCopyBytes_(opt.checksum || opt.testFlipBitAt >= 0 ? 0 : singleCopyThreshold(opt.shmSingleCopyBytes, size)),
      peerReadsUs_(size, -1), unacked_(size), singleCopySent_(size), ringAllocated_(size), ringPrefaulted_(size),
      spinFor_(ranksHaveCores(size) ? kSpinFor : std::chrono::microseconds(0)),
      segs_(size), sendq_(size), recvq_(size) {
  ZCOLL_CHECK(opt.shmRingBytes <= kMaxShmRingBytes, "rank ", g(rank), " shm: ZCOLL_SHM_RING_BYTES=", opt.shmRingBytes,
              " is larger than the ", kMaxShmRingBytes, " bytes a ring may have");
  const std::string key = prefix + "/shm/";
  Rendezvous rendezvous(store, opt.failKey.empty() ? prefix + "/failed" : opt.failKey,
                        "rank " + std::to_string(g(rank)) + " shm: ", opt.liveness.get());
  const Deadline deadline = Clock::now() + opt.timeout;
  // 0. The ring size: configured, or rank 0's for the group (which it publishes either way, so
  // a rank configured otherwise fails the segment check below instead of waiting here).
  ringBytesChosen_ = opt.shmRingBytes == 0;
  ringBytes_ = roundUpPow2(std::max<size_t>(opt.shmRingBytes, 4096));
  if (rank == 0) {
    if (ringBytesChosen_) ringBytes_ = chooseRingBytes(size);
    store.set(key + "ring", bytesOf(std::to_string(ringBytes_)));
  } else if (ringBytesChosen_) {
    const auto v = rendezvous.await(key + "ring", deadline, "rank " + std::to_string(g(0)) + "'s ring size");
    ringBytes_ = std::stoull(std::string(v.begin(), v.end()));
  }
  // 1. Create and publish this rank's segment: its header allocated, its rings by their senders.
  const std::string mine = uniqueName(rank);
  const size_t total = Segment::totalBytes(size, ringBytes_), headerBytes = Segment::headerBytesFor(size);
  const int fd = shm_open(mine.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ZCOLL_CHECK(fd >= 0, "rank ", g(rank), " shm: shm_open(", mine, ") failed: ", std::strerror(errno));
  // Allocated, not only sized: tmpfs hands out pages at first touch, and a touch that finds
  // /dev/shm full kills the process with SIGBUS.
  const int allocErr = ftruncate(fd, static_cast<off_t>(total)) == 0 ? posix_fallocate(fd, 0, static_cast<off_t>(headerBytes)) : errno;
  void* base = allocErr == 0 ? mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  const int err = allocErr ? allocErr : errno;
  if (base == MAP_FAILED) {
    close(fd);
    shm_unlink(mine.c_str());
    ZCOLL_CHECK(false, "rank ", g(rank), " shm: cannot allocate ", headerBytes, " bytes of shared memory for ", mine,
                " (", std::strerror(err), "): ", sizingAdvice());
  }
  segs_[rank] = {base, total, ringBytes_, headerBytes, fd};
  for (int s = 0; s < size; ++s) {
    new (segs_[rank].control(s)) RingControl();
    segs_[rank].control(s)->head.store(0);
    segs_[rank].control(s)->tail.store(0);
    segs_[rank].control(s)->acked.store(0);
    segs_[rank].control(s)->singleCopy.store(0);
  }
  SegmentHeader* own = segs_[rank].header();
  own->magic = kSegmentMagic;
  own->ringBytes = ringBytes_;
  own->size = static_cast<uint64_t>(size);
  own->aborted.store(0);
  own->abortReason[0] = '\0';
  {
    std::random_device rd;
    own->probe = (static_cast<uint64_t>(rd()) << 32) | rd();
    own->probeAddress = reinterpret_cast<uint64_t>(&own->probe);
    own->pid = static_cast<uint64_t>(getpid());
  }
  if (singleCopyBytes_) allowPeersToReadOurMemory();
  new (&own->doorbell) Doorbell();
  own->doorbell.seq.store(0);
  own->doorbell.sleepers.store(0);
  std::atomic_thread_fence(std::memory_order_release);
  try {
    store.set(key + "name/" + std::to_string(rank), bytesOf(mine));
    if (opt.testFault == "exit_in_shm_bootstrap") _exit(3);
    // 2. Map every peer's segment (its descriptor kept: our ring in it is ours to allocate).
    for (int p = 0; p < size; ++p) {
      if (p == rank) continue;
      const auto nameBytes = rendezvous.await(key + "name/" + std::to_string(p), deadline,
                                              "rank " + std::to_string(g(p)) + "'s segment");
      const std::string name(nameBytes.begin(), nameBytes.end());
      const int pfd = shm_open(name.c_str(), O_RDWR, 0600);
      ZCOLL_CHECK(pfd >= 0, "rank ", g(rank), " shm: cannot open rank ", g(p), "'s segment ", name, ": ",
                  std::strerror(errno), " (are all ranks on one host? else use ZCOLL_TRANSPORT=tcp)");
      void* pbase = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
      if (pbase == MAP_FAILED) close(pfd);
      ZCOLL_CHECK(pbase != MAP_FAILED, "rank ", g(rank), " shm: cannot map rank ", g(p), "'s segment: ", std::strerror(errno));
      segs_[p] = {pbase, total, ringBytes_, headerBytes, pfd};
      const SegmentHeader& h = *segs_[p].header();
      ZCOLL_CHECK(h.magic == kSegmentMagic && h.ringBytes == ringBytes_ && h.size == static_cast<uint64_t>(size),
                  "rank ", g(rank), " shm: rank ", g(p), "'s segment does not match (ring bytes ", h.ringBytes, " vs ",
                  ringBytes_, ", group size ", h.size, " vs ", size, ")");
    }
    const log::Logger log{opt.logLevel, g(rank)};
    if (singleCopyBytes_) {
      probeSingleCopy(log);
    } else if (size > 1) {
      log.info("shm: single copy off: ",
               opt.checksum ? "checksums cover what goes through the rings"
               : opt.shmSingleCopyBytes == 0 ? "ZCOLL_SHM_SINGLE_COPY_BYTES=0"
               : opt.testFlipBitAt >= 0 ? "a test corrupts ring bytes"
               : std::to_string(size) + " ranks share " + std::to_string(std::thread::hardware_concurrency()) +
                     " cores (a send would wait for its reader to be scheduled; ZCOLL_SHM_SINGLE_COPY_BYTES forces it)");
    }
    // 3. Everyone mapped everything: unlink our name so nothing outlives the processes.
    store.set(key + "mapped/" + std::to_string(rank), bytesOf("1"));
    for (int p = 0; p < size; ++p)
      rendezvous.await(key + "mapped/" + std::to_string(p), deadline,
                       "rank " + std::to_string(g(p)) + " to map every segment");
  } catch (const Error& e) {
    shm_unlink(mine.c_str());
    for (auto& s : segs_) s.release();
    // A rank killed mid-bootstrap cannot unlink its own name: every survivor unlinks them all,
    // after publishing the cause (a peer that then misses a segment reports that cause).
    try {
      rendezvous.checkFailed();  // another rank failed first (and left): report that cause
    } catch (...) {
      unlinkPublished(store, key, size);
      throw;
    }
    rendezvous.fail(e.what());
    unlinkPublished(store, key, size);
    throw;
  } catch (...) {
    shm_unlink(mine.c_str());
    for (auto& s : segs_) s.release();
    throw;
  }
  shm_unlink(mine.c_str());
}

ShmTransport::~ShmTransport() {
  for (auto& s : segs_) s.release();
}

std::string ShmTransport::sizingAdvice() const {
  const std::string origin = ringBytesChosen_ ? std::to_string(ringBytes_) + " bytes, the group's choice"
                                              : "ZCOLL_SHM_RING_BYTES=" + std::to_string(ringBytes_);
  const size_t need = Segment::headerBytesFor(size_) + static_cast<size_t>(size_ - 1) * ringBytes_;
  return "enlarge /dev/shm (docker run --shm-size) or lower ZCOLL_SHM_RING_BYTES (rings of " + origin + "): each of " +
         "this host's " + std::to_string(size_) + " ranks may need " + std::to_string(need) + " bytes for each of " +
         "a group's " + std::to_string(kLanesPerGroup) + " lanes, a ring per peer allocated at its first message";
}

// Our ring in `peer`'s segment, allocated before our first message to it.
void ShmTransport::allocateRing(int peer) {
  const Segment& seg = segs_[peer];
  const int err = posix_fallocate(seg.fd, static_cast<off_t>(seg.dataOffset(rank_)), static_cast<off_t>(ringBytes_));
  if (err)
    throw Error("rank " + std::to_string(g(rank_)) + " shm: cannot allocate the " + std::to_string(ringBytes_) +
                "-byte ring for messages to rank " + std::to_string(g(peer)) + " in /dev/shm (" + std::strerror(err) +
                "): " + sizingAdvice());
  prefault(seg.data(rank_), ringBytes_, true);
  ringAllocated_[peer] = true;
}

Transport::SharedMemoryUse ShmTransport::sharedMemory() const {
  const Segment& own = segs_[rank_];
  struct stat st {};
  const size_t bytes = fstat(own.fd, &st) == 0 ? static_cast<size_t>(st.st_blocks) * 512 : 0;
  SharedMemoryUse use{ringBytes_, bytes > own.headerBytes ? (bytes - own.headerBytes) / ringBytes_ : 0, bytes};
  for (int p = 0; p < size_; ++p) use.singleCopyPeers += own.control(p)->singleCopy.load(std::memory_order_relaxed);
  use.singleCopyMessages = singleCopyMessages_;
  use.singleCopyBytes = singleCopyReceived_;
  return use;
}

void ShmTransport::probeSingleCopy(const log::Logger& log) {
  int readable = 0;
  std::string refused;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    std::string why;
    const bool ok = canReadMemoryOf(*segs_[p].header(), &why);
    segs_[rank_].control(p)->singleCopy.store(ok ? 1 : 0, std::memory_order_release);
    readable += ok;
    if (!ok && refused.empty()) refused = "; not from rank " + std::to_string(g(p)) + " (" + why + ")";
  }
  log.info("shm: single copy from ", readable, " of ", size_ - 1, " peers for messages of ", singleCopyBytes_,
           " bytes or more", refused, readable < size_ - 1 ? ": the others go through the rings" : "");
}

// Whether message `r` to `peer` goes by single copy: large enough (operands larger), and the peer said at
// bootstrap that it can read our memory (looked up once; the bootstrap is over by our first send).
bool ShmTransport::sendsSingleCopy(int peer, const Request& r) {
  const size_t from = r.operand ? std::max(singleCopyBytes_, kOperandSingleCopyBytes) : singleCopyBytes_;
  if (!singleCopyBytes_ || r.bytes < from || peer == rank_) return false;
  if (peerReadsUs_[peer] < 0)
    peerReadsUs_[peer] = static_cast<int8_t>(segs_[peer].control(rank_)->singleCopy.load(std::memory_order_acquire));
  return peerReadsUs_[peer] > 0;
}

// Completes the single-copy sends to `peer` that it has read. True on progress.
bool ShmTransport::completeAcknowledged(int peer) {
  auto& q = unacked_[peer];
  if (q.empty()) return false;
  const uint64_t acked = segs_[peer].control(rank_)->acked.load(std::memory_order_acquire);
  bool done = false;
  while (!q.empty() && q.front().ack <= acked) {
    owner_.erase(q.front().id);
    q.pop_front();
    done = true;
  }
  return done;
}

bool ShmTransport::readSingleCopy(int peer, Request& r) {
  const size_t n = std::min(r.bytes - r.copied, r.consume ? kConsumePiece : kSingleCopyPiece);
  char* dst = r.data + r.copied;
  if (r.consume) {
    if (bounce_.empty()) bounce_.resize(kConsumePiece / sizeof(uint64_t));
    dst = reinterpret_cast<char*>(bounce_.data());
  }
  for (size_t got = 0; got < n;) {
    iovec local{dst + got, n - got}, remote{reinterpret_cast<void*>(r.source.address + r.copied + got), n - got};
    const ssize_t k = process_vm_readv(static_cast<pid_t>(r.source.pid), &local, 1, &remote, 1, 0);
    if (k <= 0) {
      const int err = k < 0 ? errno : EFAULT;
      checkPeerAlive(peer);  // a peer that gave up or died says so first
      throw Error("rank " + std::to_string(g(rank_)) + " shm: cannot read the " + std::to_string(r.bytes) +
                  "-byte message from rank " + std::to_string(g(peer)) + " in its memory (process_vm_readv: " +
                  std::strerror(err) + "); set ZCOLL_SHM_SINGLE_COPY_BYTES=0 to send through the rings");
    }
    got += static_cast<size_t>(k);
  }
  if (r.consume) r.consume(r.copied, dst, n);
  r.copied += n;
  if (r.copied < r.bytes) return false;
  // A sender that gave up may have freed the buffer while we read it: its abort flag, set before
  // it frees anything, tells us whether the bytes are its message.
  checkPeerNotAborted(peer, " while its message was read");
  ++singleCopyMessages_;
  singleCopyReceived_ += r.bytes;
  RingControl* ctl = segs_[rank_].control(peer);
  ctl->acked.store(ctl->acked.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  return true;
}

void ShmTransport::checkPeer(int peer) const {
  ZCOLL_CHECK(peer >= 0 && peer < size_, "rank ", g(rank_), " shm: peer ", peer, " is not in a group of ", size_);
}

RequestId ShmTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  checkPeer(peer);
  const RequestId id = nextId_++;
  sendq_[peer].push_back({id, true, tag, const_cast<char*>(static_cast<const char*>(data)), bytes});
  owner_[id] = peer;
  return id;
}

RequestId ShmTransport::isendOperand(int peer, uint64_t tag, const void* data, size_t bytes) {
  const RequestId id = isend(peer, tag, data, bytes);
  sendq_[peer].back().operand = true;
  return id;
}

RequestId ShmTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  checkPeer(peer);
  const RequestId id = nextId_++;
  recvq_[peer].push_back({id, false, tag, static_cast<char*>(data), bytes});
  owner_[id] = peer;
  return id;
}

RequestId ShmTransport::irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) {
  const RequestId id = irecv(peer, tag, nullptr, bytes);
  recvq_[peer].back().consume = std::move(consume);
  return id;
}

// Copies n bytes (a memcpy, or with `crc` one that also carries *crc on over them).
void copy(char* dst, const char* src, size_t n, uint32_t* crc) {
  if (crc) *crc = crc32cCopy(dst, src, n, *crc);
  else if (n) std::memcpy(dst, src, n);
}

// Copies n bytes into / out of a ring at stream position pos, wrapping at the end.
void ringWrite(char* ring, size_t cap, uint64_t pos, const char* src, size_t n, uint32_t* crc = nullptr) {
  const size_t at = pos & (cap - 1), first = std::min(n, cap - at);
  copy(ring + at, src, first, crc);
  copy(ring, src + first, n - first, crc);
}
void ringRead(const char* ring, size_t cap, uint64_t pos, char* dst, size_t n, uint32_t* crc = nullptr) {
  const size_t at = pos & (cap - 1), first = std::min(n, cap - at);
  copy(dst, ring + at, first, crc);
  copy(dst + first, ring, n - first, crc);
}

// Moves as much of peer's send queue as fits into peer's ring[rank_]. Returns true on progress.
bool ShmTransport::progressSend(int peer) {
  bool moved = completeAcknowledged(peer);
  auto& q = sendq_[peer];
  if (q.empty()) return moved;
  if (!ringAllocated_[peer]) allocateRing(peer);
  RingControl* ctl = segs_[peer].control(rank_);
  char* ring = segs_[peer].data(rank_);
  uint64_t head = ctl->head.load(std::memory_order_relaxed);
  const uint64_t tail = ctl->tail.load(std::memory_order_acquire);
  while (!q.empty()) {
    Request& r = q.front();
    const size_t space = ringBytes_ - static_cast<size_t>(head - tail);
    if (r.done == 0 && sendsSingleCopy(peer, r)) {  // header and descriptor go in together
      if (space < kHeaderBytes + kDescriptorBytes) break;
      const MessageHeader h{kSingleCopyMagic, r.tag, r.bytes};
      const SingleCopyDescriptor d{segs_[rank_].header()->pid, reinterpret_cast<uint64_t>(r.data)};
      ringWrite(ring, ringBytes_, head, reinterpret_cast<const char*>(&h), sizeof h);
      ringWrite(ring, ringBytes_, head + sizeof h, reinterpret_cast<const char*>(&d), sizeof d);
      head += sizeof h + sizeof d;
      r.ack = ++singleCopySent_[peer];
      unacked_[peer].push_back(std::move(r));
      q.pop_front();
      moved = true;
      continue;
    }
    if (r.done < kHeaderBytes) {  // headers go in whole, so the reader sees them whole
      if (space < kHeaderBytes) break;
      const MessageHeader h{checksum_ ? kChecksummedMagic : kMessageMagic, r.tag, r.bytes};
      ringWrite(ring, ringBytes_, head, reinterpret_cast<const char*>(&h), sizeof h);
      head += sizeof h;
      r.done = sizeof h;
      moved = true;
      continue;
    }
    const size_t body = footprint(r.bytes), total = body + (checksum_ ? kTrailerBytes : 0);
    if (r.done < body) {
      const size_t n = std::min(space, body - r.done);
      if (n > 0) {
        const size_t at = r.done - kHeaderBytes, payload = at < r.bytes ? std::min(n, r.bytes - at) : 0;
        // The padding is left as it is; with checksums the copy computes the CRC on its way.
        ringWrite(ring, ringBytes_, head, r.data + at, payload, checksum_ ? &r.crc : nullptr);
        head += n;
        r.done += n;
        moved = true;
      }
    }
    if (r.done >= body && r.done < total) {  // the trailer goes in whole
      if (ringBytes_ - static_cast<size_t>(head - tail) < kTrailerBytes) break;
      const uint64_t trailer = r.crc;
      ringWrite(ring, ringBytes_, head, reinterpret_cast<const char*>(&trailer), kTrailerBytes);
      head += kTrailerBytes;
      r.done += kTrailerBytes;
      moved = true;
    }
    if (r.done < total) break;
    owner_.erase(r.id);
    q.pop_front();
  }
  if (moved) {
    ctl->head.store(head, std::memory_order_release);
    wake(peer);
  }
  return moved;
}

// Hands `n` ring bytes to a receive's consumer. With checksums, in pieces small enough that the
// CRC reads them while the consumer has just left them in cache.
void ShmTransport::consumeFromRing(Request& r, size_t at, const char* src, size_t n) {
  if (!checksum_) return r.consume(at, src, n);
  for (size_t off = 0; off < n; off += kChecksumPiece) {
    const size_t k = std::min(kChecksumPiece, n - off);
    r.consume(at + off, src + off, k);
    r.crc = crc32cExtend(r.crc, src + off, k);
  }
}

// Moves what peer has written into our ring[peer] into the posted receives. True on progress.
bool ShmTransport::progressRecv(int peer) {
  auto& q = recvq_[peer];
  if (q.empty()) return false;
  RingControl* ctl = segs_[rank_].control(peer);
  const char* ring = segs_[rank_].data(peer);
  uint64_t tail = ctl->tail.load(std::memory_order_relaxed);
  const uint64_t head = ctl->head.load(std::memory_order_acquire);
  if (!ringPrefaulted_[peer] && head != 0) {  // the sender has allocated it: map it in at once
    prefault(const_cast<char*>(ring), ringBytes_, false);
    ringPrefaulted_[peer] = true;
  }
  bool moved = false;
  while (!q.empty()) {
    Request& r = q.front();
    const size_t avail = static_cast<size_t>(head - tail);
    if (r.source.pid) {  // a single-copy message: read on from the sender's memory
      if (!readSingleCopy(peer, r)) {
        moved = true;
        break;  // the rest in the next pass, after our other requests have had theirs
      }
      owner_.erase(r.id);
      q.pop_front();
      moved = true;
      continue;
    }
    if (r.done < kHeaderBytes) {
      if (avail < kHeaderBytes) break;
      MessageHeader h;
      ringRead(ring, ringBytes_, tail, reinterpret_cast<char*>(&h), sizeof h);
      ZCOLL_CHECK(h.magic == kMessageMagic || h.magic == kChecksummedMagic || h.magic == kSingleCopyMagic, "rank ",
                  g(rank_), " shm: corrupt message header from rank ", g(peer));
      ZCOLL_CHECK((h.magic == kChecksummedMagic) == checksum_, "rank ", g(rank_), " shm: rank ", g(peer), " sends ",
                  checksum_ ? "no checksums" : "checksums", " but this rank ", checksum_ ? "expects" : "does not",
                  " (set ZCOLL_CHECKSUM / Options(checksum=...) alike on every rank)");
      if (r.bytes > 0 && received_++ == flipAt_) {  // test-only: a bit flipped in transit
        const size_t at = (tail + sizeof h) & (ringBytes_ - 1);
        const_cast<char*>(ring)[at] ^= 0x10;
      }
      if (h.tag != r.tag || h.bytes != r.bytes)
        throw Error(mismatchMessage("shm", g(rank_), g(peer), r.tag, r.bytes, h.tag, h.bytes));
      tail += sizeof h;
      r.done = sizeof h;
      moved = true;
      if (h.magic == kSingleCopyMagic) {  // written together with its header
        ringRead(ring, ringBytes_, tail, reinterpret_cast<char*>(&r.source), sizeof r.source);
        tail += sizeof r.source;
        ZCOLL_CHECK(r.source.pid != 0, "rank ", g(rank_), " shm: corrupt single-copy descriptor from rank ", g(peer));
      }
      continue;
    }
    const size_t body = footprint(r.bytes), total = body + (checksum_ ? kTrailerBytes : 0);
    if (r.done < body) {
      const size_t n = std::min(avail, body - r.done);
      if (n > 0) {
        const size_t at = r.done - kHeaderBytes, payload = at < r.bytes ? std::min(n, r.bytes - at) : 0;
        if (!r.consume) {
          ringRead(ring, ringBytes_, tail, r.data + at, payload, checksum_ ? &r.crc : nullptr);
        } else if (payload > 0) {  // in place, in at most two pieces (before and after the wrap)
          const size_t pos = tail & (ringBytes_ - 1), first = std::min(payload, ringBytes_ - pos);
          consumeFromRing(r, at, ring + pos, first);
          if (payload > first) consumeFromRing(r, at + first, ring, payload - first);
        }
        tail += n;
        r.done += n;
        moved = true;
      }
    }
    if (r.done >= body && r.done < total) {
      if (static_cast<size_t>(head - tail) < kTrailerBytes) break;
      uint64_t trailer = 0;
      ringRead(ring, ringBytes_, tail, reinterpret_cast<char*>(&trailer), kTrailerBytes);
      if (trailer != r.crc) throw Error(checksumMessage("shm", g(rank_), g(peer), r.tag, r.bytes, trailer, r.crc));
      tail += kTrailerBytes;
      r.done += kTrailerBytes;
      moved = true;
    }
    if (r.done < total) break;
    owner_.erase(r.id);
    q.pop_front();
  }
  // Released only now: a consumer has finished reading the bytes it was handed.
  if (moved) {
    ctl->tail.store(tail, std::memory_order_release);
    wake(peer);
  }
  return moved;
}

void ShmTransport::wake(int peer, bool force) {
  if (peer == rank_) return;
  Doorbell& d = segs_[peer].header()->doorbell;
  // Orders our head/tail store before the sleepers load (the sleeper does the mirror image:
  // announce, then look at the rings), so one of us always sees the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!force && d.sleepers.load(std::memory_order_relaxed) == 0) return;
  d.seq.fetch_add(1, std::memory_order_release);
  futexWakeAll(&d.seq);
}

void ShmTransport::sleepUntilRung(Deadline deadline) {
  Doorbell& d = segs_[rank_].header()->doorbell;
  const uint32_t seq = d.seq.load(std::memory_order_acquire);
  d.sleepers.fetch_add(1, std::memory_order_seq_cst);
  bool moved = false;  // a peer that published before seeing us announced did not ring: look again
  for (int p = 0; p < size_ && !moved; ++p) moved = progressSend(p) | progressRecv(p);
  if (!moved) {
    // Bounded, so liveness and the deadline are checked at least every 10 ms.
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    futexWait(&d.seq, seq, std::max(std::chrono::microseconds(1), std::min(left, std::chrono::microseconds(10000))));
  }
  d.sleepers.fetch_sub(1, std::memory_order_relaxed);
}

void ShmTransport::checkPeerNotAborted(int peer, const char* when) const {
  const SegmentHeader* h = segs_[peer].header();
  ZCOLL_CHECK(h->aborted.load(std::memory_order_acquire) == 0, "rank ", g(rank_), " shm: rank ", g(peer), " gave up",
              when, ": ", std::string(h->abortReason, strnlen(h->abortReason, kAbortReasonBytes)));
}

void ShmTransport::checkPeerAlive(int peer) const {
  checkPeerNotAborted(peer);
  if (liveness_ && liveness_->gone(g(peer)))
    throw Error("rank " + std::to_string(g(rank_)) + " shm: " + liveness_->whyGone(g(peer)) + "; " + pendingSummary());
}

std::string ShmTransport::pendingSummary() const {
  std::string s = "pending:";
  for (int p = 0; p < size_; ++p) {
    for (const auto& r : sendq_[p])
      s += " send " + std::to_string(r.bytes) + " B to rank " + std::to_string(g(p)) + ";";
    for (const auto& r : unacked_[p])
      s += " send " + std::to_string(r.bytes) + " B to rank " + std::to_string(g(p)) + " (for it to read);";
    for (const auto& r : recvq_[p])
      s += " recv " + std::to_string(r.bytes) + " B from rank " + std::to_string(g(p)) + ";";
  }
  return s;
}

void ShmTransport::wait(RequestId req, Deadline deadline) {
  auto it = owner_.find(req);
  if (it == owner_.end()) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", g(rank_), " shm: wait on unknown request ", req);
    return;  // already complete
  }
  const int peer = it->second;
  unsigned idle = 0;  // rounds without progress
  auto idleSince = Clock::now(), nextLivenessCheck = idleSince;
  while (true) {
    if (aborted_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(abortMutex_);
      ZCOLL_CHECK(false, "rank ", g(rank_), " shm: aborted: ", abortReason_);
    }
    bool moved = false;
    for (int p = 0; p < size_; ++p) moved |= progressSend(p) | progressRecv(p);
    if (!owner_.count(req)) return;
    if (moved) {
      idle = 0;
      continue;
    }
    if (idle++ % kRoundsPerClockRead) continue;  // spin: a neighbour on its own core answers in microseconds
    const auto now = Clock::now();
    if (idle == 1) idleSince = now;
    if (now - idleSince < spinFor_) continue;
    if (now >= deadline)
      throw TimeoutError("rank " + std::to_string(g(rank_)) + " shm: timed out waiting on rank " + std::to_string(g(peer)) +
                         "; " + pendingSummary());
    if (now >= nextLivenessCheck) {
      checkPendingPeersDrained();
      nextLivenessCheck = now + std::chrono::milliseconds(10);
    }
    if (now - idleSince < kYieldUntil) {
      sched_yield();  // a peer about to answer may need this core
    } else {
      sleepUntilRung(deadline);
      nextLivenessCheck = now;  // an abort rings every peer: read the flags after the next pass, not in 10 ms
    }
  }
}

bool ShmTransport::test(RequestId req) {
  if (!owner_.count(req)) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", g(rank_), " shm: test of unknown request ", req);
    return true;  // already complete
  }
  if (aborted_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(abortMutex_);
    ZCOLL_CHECK(false, "rank ", g(rank_), " shm: aborted: ", abortReason_);
  }
  bool moved = false;
  for (int p = 0; p < size_; ++p) moved |= progressSend(p) | progressRecv(p);
  if (!owner_.count(req)) return true;
  const auto now = Clock::now();
  if (!moved && now >= nextLivenessCheck_) {
    checkPendingPeersDrained();
    nextLivenessCheck_ = now + std::chrono::milliseconds(10);
  }
  return false;
}

// A peer writes its last messages (a point-to-point farewell) before it aborts or exits, but we
// may have read its ring before those bytes and its flag or liveness verdict after: drain what
// it wrote before calling it gone, and only when we still expect something of it.
void ShmTransport::checkPendingPeersDrained() {
  const auto pending = [&](int p) { return !sendq_[p].empty() || !unacked_[p].empty() || !recvq_[p].empty(); };
  for (int p = 0; p < size_; ++p) {
    if (p == rank_ || !pending(p)) continue;
    try {
      checkPeerAlive(p);
    } catch (const Error&) {
      progressRecv(p);
      if (pending(p)) throw;
    }
  }
}

}  // namespace

std::unique_ptr<Transport> makeShmTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options) {
  return std::make_unique<ShmTransport>(store, prefix, rank, size, options);
}

}  // namespace zcoll
