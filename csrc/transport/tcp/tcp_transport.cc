// TCP transport.
//
// Full mesh: one connection per pair of ranks, carrying both directions. Rank i dials every
// lower rank and accepts every higher one, so each pair gets exactly one connection with no
// negotiation over who dials. Bootstrap through the store: listen on an ephemeral port, publish
// "host:port" under <prefix>/tcp/addr/<rank>, dial, and swap hellos carrying the group's secret
// (transport/handshake.h): strangers on the port are dropped, a misrouted dial fails at creation.
//
// Wire format of each direction: frames, a FrameHeader {magic, tag, bytes} then the payload.
// TCP keeps order, so messages between a pair are FIFO for free; the receiver checks each
// header against the irecv posted at the same position in its queue.
//
// Progress: isend/irecv only queue. wait() runs every queue (all peers, both directions) with
// non-blocking gather/scatter I/O, then sleeps in poll() on the sockets with pending work. Since
// any wait drains everything, a ring (send to next, recv from prev, wait) cannot deadlock with
// both ends' socket buffers full: each rank keeps reading while its own send is stuck.
#include "transport/tcp/tcp_transport.h"
#include "transport/handshake.h"
#include "transport/liveness.h"
#include "transport/tag.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include "transport/tcp/socket.h"
#include "transport/topology.h"
#include "util/crc32c.h"

namespace zcoll {
namespace {

constexpr uint64_t kHelloMagic = 0x7a636f6c6c746370ULL;  // "zcolltcp"
constexpr uint64_t kFrameMagic = 0x7a63746672616d65ULL;  // "zctframe"
constexpr uint64_t kChecksummedFrame = 0x7a63746672616d63ULL;  // "zctframc": a CRC32C trailer follows
constexpr size_t kTrailerBytes = 8;
constexpr int kMaxIov = 64;                               // iovecs per sendmsg/recvmsg (up to 3 per frame)
constexpr auto kLivenessCheck = std::chrono::milliseconds(50);
// How long a lost connection waits for the liveness channel to say why (the notice is sent
// before the hang-up, so it is already on its way).
constexpr auto kCauseGrace = std::chrono::milliseconds(200);


struct FrameHeader {
  uint64_t magic, tag, bytes;
};
constexpr size_t kHeaderBytes = sizeof(FrameHeader);

struct Request {
  RequestId id;
  uint64_t tag;
  char* data;
  size_t bytes;
  FrameHeader header;  // sends: the header to write; receives: the header as it arrives
  size_t done = 0;     // header + payload (+ trailer) bytes moved so far
  Consumer consume;    // irecvConsume: gets `staging` when the message is complete
  std::unique_ptr<char[]> staging;
  size_t trailerBytes = 0;  // kTrailerBytes with checksums
  uint64_t trailer = 0;     // sends: the payload's CRC32C; receives: the sender's, as it arrives
  uint32_t crc = 0;         // receives: CRC32C of the payload arrived so far
  size_t total() const { return kHeaderBytes + bytes + trailerBytes; }
};

struct Peer {
  tcp::Fd fd;  // none for ourselves: self messages are copied in memory
  std::deque<Request> sends, recvs;
};

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

// Appends to iov what r still has to move (rest of the header, of the payload, of the trailer).
int remainingParts(Request& r, iovec* iov, size_t& total) {
  int n = 0;
  if (r.done < kHeaderBytes) iov[n++] = {reinterpret_cast<char*>(&r.header) + r.done, kHeaderBytes - r.done};
  const size_t payloadDone = std::min(r.bytes, r.done > kHeaderBytes ? r.done - kHeaderBytes : 0);
  if (r.bytes > payloadDone) iov[n++] = {r.data + payloadDone, r.bytes - payloadDone};
  const size_t trailerDone = r.done > kHeaderBytes + r.bytes ? r.done - kHeaderBytes - r.bytes : 0;
  if (r.trailerBytes > trailerDone)
    iov[n++] = {reinterpret_cast<char*>(&r.trailer) + trailerDone, r.trailerBytes - trailerDone};
  for (int i = 0; i < n; ++i) total += iov[i].iov_len;
  return n;
}

class TcpTransport : public Transport {
 public:
  TcpTransport(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& options);

  const char* name() const override { return "tcp"; }
  // The address this rank advertised, and why it was chosen (ZCOLL_DEBUG).
  const std::string& advertised() const { return advertised_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) override;
  void wait(RequestId req, Deadline deadline) override;
  bool test(RequestId req) override;
  void abort(const std::string& why) override;

 private:
  void connectMesh(Store& store, const std::string& prefix, Deadline deadline, const TransportOptions& options);
  std::string who(int rank) const;
  bool connects(int peer) const;  // a connection to `peer` exists (or is to be made)
  void checkConnected(int peer, const char* op) const;
  RequestId enqueue(int peer, std::deque<Request>& q, uint64_t tag, char* data, size_t bytes);
  void progressAll();
  void checkPendingPeersGone();
  void pollAndProgress(Deadline deadline);
  void progressSend(int peer);
  void progressRecv(int peer);
  void progressSelf();
  void advance(int peer, std::deque<Request>& q, size_t n, bool receiving);
  void complete(std::deque<Request>& q);
  void checkFrame(int peer, const Request& r) const;
  [[noreturn]] void connectionLost(int peer, const char* op, const std::string& why) const;
  [[noreturn]] void timedOut(RequestId req, Clock::time_point start) const;
  void throwIfStopped() const;
  std::string direction(int peer, bool sending) const;
  std::string progressText(const Request& r) const;

  const int rank_, size_;
  const Topology topology_;
  const bool remoteOnly_;
  const std::shared_ptr<Liveness> liveness_;  // may be null
  const bool checksum_;    // CRC32C trailer on every frame (ZCOLL_CHECKSUM)
  const int64_t flipAt_;   // test-only: corrupt the payload of this received message
  int64_t received_ = 0;   // received messages with a payload so far
  std::string advertised_;
  std::vector<Peer> peers_;
  std::unordered_map<RequestId, int> pending_;  // queued request -> peer
  RequestId nextId_ = 1;
  std::string failure_;  // first lost connection / bad frame: the streams are unusable after it
  std::vector<pollfd> pollFds_;
  std::vector<int> pollPeers_;
  // abort() may come from another thread while wait() sleeps in poll(): the eventfd wakes it.
  tcp::Fd wakeFd_;
  std::atomic<bool> aborted_{false};
  mutable std::mutex abortMu_;
  std::string abortWhy_;
};

TcpTransport::TcpTransport(Store& store, const std::string& prefix, int rank, int size,
                           const TransportOptions& options)
    : rank_(rank), size_(size), topology_(size, options.hostOf, options.hostNames),
      remoteOnly_(options.remoteOnly), liveness_(options.liveness),
      checksum_(options.checksum), flipAt_(options.testFlipBitAt), peers_(size) {
  wakeFd_ = tcp::Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ZCOLL_CHECK(wakeFd_, "rank ", rank, " tcp: eventfd failed: ", tcp::errnoText(errno));
  if (size > 1) connectMesh(store, prefix, Clock::now() + options.timeout, options);
}

// "rank 3 (host-b)": a rank and, when known, its host, for messages.
std::string TcpTransport::who(int rank) const {
  return "rank " + std::to_string(rank) + (topology_.hosts() > 1 ? " (" + topology_.hostName(topology_.hostOf(rank)) + ")" : "");
}

bool TcpTransport::connects(int peer) const { return peer != rank_ && (!remoteOnly_ || !topology_.sameHost(rank_, peer)); }

// Nobody waits on anybody while dialing: a lower rank publishes its address only once it
// listens, so the kernel completes our connection before the peer calls accept and our hello
// waits in its buffer. Replies are read only after we have accepted all higher ranks.
//
// A rank that fails (an address that leads nowhere, a peer that does not speak zcoll) publishes
// why under the failure key (Rendezvous) before it throws; the others check that key at least
// every 100 ms wherever they wait, and fail with its text: every rank learns the cause in moments.
void TcpTransport::connectMesh(Store& store, const std::string& prefix, Deadline deadline,
                               const TransportOptions& options) {
  const std::string ctx = who(rank_) + " tcp: ";
  Rendezvous rendezvous(store, options.failKey.empty() ? prefix + "/failed" : options.failKey, ctx,
                        options.liveness.get());
  const tcp::Interrupt interrupt = [&] { rendezvous.checkFailed(); };
  try {
    const HelloSpec me{kHelloMagic, groupHash(prefix),
                       options.secret ? *options.secret : groupSecret(store, prefix + "/secret", rank_, deadline, rendezvous),
                       rank_, size_};
    bool remotePeers = options.hostOf.empty();  // unknown: any peer may be elsewhere
    for (int p = 0; p < size_; ++p) remotePeers = remotePeers || !topology_.sameHost(rank_, p);
    const tcp::AddressChoice choice = tcp::advertisedAddress(options, remotePeers, ctx);
    advertised_ = choice.address + " (" + choice.reason + ")";
    log::Logger{options.logLevel, rank_}.info("tcp: advertising ", advertised_);
    int port = 0;
    const tcp::Fd listener = tcp::listenOn(choice.address, port, ctx);
    const std::string listening = tcp::Endpoint{choice.address, port}.str();
    const auto key = [&](int r) { return prefix + "/tcp/addr/" + std::to_string(r); };
    store.set(key(rank_), std::vector<uint8_t>(listening.begin(), listening.end()));

    // Waiting for a peer to publish is waiting for it to start: the group timeout bounds it. An
    // address that does not answer is reported after options.connectTimeout (ZCOLL_CONNECT_TIMEOUT).
    const Deadline giveUp = std::min(deadline, Clock::now() + options.connectTimeout);
    std::vector<std::string> dialCtx(rank_);
    for (int p = 0; p < rank_; ++p) {
      if (!connects(p)) continue;
      const auto value = rendezvous.await(key(p), deadline, who(p) + " to publish its address (has it started?)");
      const tcp::Endpoint to = tcp::Endpoint::parse(std::string(value.begin(), value.end()), ctx);
      dialCtx[p] = ctx + "connecting to " + who(p) + " at " + to.str() + ": ";
      const std::string hint = who(p) + " advertised " + to.str() + "; if that is not an address of its host that " +
                               who(rank_) + "'s host can reach, set ZCOLL_SOCKET_IFNAME on " + who(p) +
                               "'s host to an interface this host can reach, and check that no firewall blocks "
                               "the port (docs/multi-host.md)";
      peers_[p].fd = tcp::connectTo(to, giveUp, dialCtx[p], hint, interrupt);
      sendHello(peers_[p].fd.get(), me, p, deadline, dialCtx[p], interrupt);
    }
    // Higher ranks arrive in any order, among strangers (dropped: transport/handshake.h).
    std::vector<bool> higher(size_, false);
    for (int p = rank_ + 1; p < size_; ++p) higher[p] = connects(p);
    auto accepted = acceptPeers({listener.get()}, me, higher, deadline, kHelloTimeout,
                                ctx + "accepting higher ranks on " + listening + ": ", interrupt);
    for (int p = rank_ + 1; p < size_; ++p)
      if (higher[p]) peers_[p].fd = std::move(accepted[p]);
    for (int p = 0; p < rank_; ++p)  // the reply proves we reached rank p of this group
      if (connects(p)) expectReply(peers_[p].fd.get(), me, p, deadline, dialCtx[p], interrupt);
  } catch (const Error& e) {
    rendezvous.checkFailed();  // another rank failed first (and hung up on us): report that cause
    rendezvous.fail(e.what());
    throw;
  }
}

RequestId TcpTransport::enqueue(int peer, std::deque<Request>& q, uint64_t tag, char* data, size_t bytes) {
  const RequestId id = nextId_++;
  const bool trailer = checksum_ && peer != rank_;  // messages to ourselves never touch a wire
  q.push_back({id, tag, data, bytes, FrameHeader{trailer ? kChecksummedFrame : kFrameMagic, tag, bytes}});
  q.back().trailerBytes = trailer ? kTrailerBytes : 0;
  pending_[id] = peer;
  return id;
}

void TcpTransport::checkConnected(int peer, const char* op) const {
  ZCOLL_CHECK(peer >= 0 && peer < size_, "rank ", rank_, " tcp: ", op, " rank ", peer, ", not in a group of ", size_);
  ZCOLL_CHECK(peer == rank_ || connects(peer), "rank ", rank_, " tcp: ", op, " rank ", peer,
              ", which is on this host: shared memory carries that (no tcp connection)");
}

RequestId TcpTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  checkConnected(peer, "send to");
  const RequestId id = enqueue(peer, peers_[peer].sends, tag, const_cast<char*>(static_cast<const char*>(data)), bytes);
  Request& r = peers_[peer].sends.back();
  if (r.trailerBytes) r.trailer = crc32c(data, bytes);
  return id;
}

RequestId TcpTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  checkConnected(peer, "recv from");
  return enqueue(peer, peers_[peer].recvs, tag, static_cast<char*>(data), bytes);
}

RequestId TcpTransport::irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) {
  checkConnected(peer, "recv from");
  const RequestId id = enqueue(peer, peers_[peer].recvs, tag, nullptr, bytes);
  Request& r = peers_[peer].recvs.back();  // deque: stays where it is while others are queued
  r.staging.reset(new char[bytes]);  // not value-initialised: no pass over memory about to be overwritten
  r.data = r.staging.get();
  r.consume = std::move(consume);
  return id;
}

void TcpTransport::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(abortMu_);
    if (abortWhy_.empty()) abortWhy_ = why.empty() ? "aborted" : why;  // the first cause is the useful one
  }
  aborted_.store(true, std::memory_order_release);
  // Tell the peers too: a shut-down connection reaches them at once as "connection lost", so a
  // rank that found a mismatch does not leave the others waiting for the group timeout.
  // shutdown() leaves the descriptors open, so a wait() in another thread never sees them reused.
  for (auto& peer : peers_)
    if (peer.fd.get() >= 0) ::shutdown(peer.fd.get(), SHUT_RDWR);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wakeFd_.get(), &one, sizeof one);  // full counter: already awake
}

void TcpTransport::throwIfStopped() const {
  if (aborted_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(abortMu_);
    ZCOLL_CHECK(!aborted_, "rank ", rank_, " tcp: aborted: ", abortWhy_);
  }
  ZCOLL_CHECK(failure_.empty(), "rank ", rank_, " tcp: unusable after an earlier error: ", failure_);
}

void TcpTransport::wait(RequestId req, Deadline deadline) {
  throwIfStopped();
  if (!pending_.count(req)) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", rank_, " tcp: wait on unknown request ", req);
    return;  // completed earlier
  }
  const auto start = Clock::now();
  try {
    progressAll();
    while (pending_.count(req)) {
      throwIfStopped();
      const auto now = Clock::now();
      if (now >= deadline) timedOut(req, start);
      // With liveness, wake every kLivenessCheck to ask it about the peers we wait on: a host
      // that vanished closes no connection.
      pollAndProgress(liveness_ ? std::min(deadline, now + kLivenessCheck) : deadline);
      checkPendingPeersGone();
    }
  } catch (const TimeoutError&) {
    throw;  // the streams are intact: a later wait may still succeed
  } catch (const Error& e) {
    throwIfStopped();  // our own abort() shut the sockets down: report the abort, not the EOF
    failure_ = e.what();
    throw;
  }
}

bool TcpTransport::test(RequestId req) {
  throwIfStopped();
  if (!pending_.count(req)) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", rank_, " tcp: test of unknown request ", req);
    return true;  // completed earlier
  }
  try {
    progressAll();
    checkPendingPeersGone();
  } catch (const Error& e) {
    throwIfStopped();  // as in wait(): report our own abort, not the EOF it caused
    failure_ = e.what();
    throw;
  }
  return !pending_.count(req);
}

// A peer the group's liveness reports gone fails what we still expect of it, once what it sent
// before it went is read.
void TcpTransport::checkPendingPeersGone() {
  if (!liveness_) return;
  for (int p = 0; p < size_; ++p) {
    Peer& peer = peers_[p];
    if (p == rank_ || (peer.sends.empty() && peer.recvs.empty()) || !liveness_->gone(p)) continue;
    try {
      progressRecv(p);
    } catch (const Error&) {
      // the connection is closed too: the liveness verdict below says more
    }
    if (peer.sends.empty() && peer.recvs.empty()) continue;
    std::string inflight;
    for (const auto* q : {&peer.sends, &peer.recvs})
      if (!q->empty()) inflight += "; pending " + direction(p, q == &peer.sends) + ": " + progressText(q->front());
    throw NetworkError("rank " + std::to_string(rank_) + " tcp: " + liveness_->whyGone(p) + inflight);
  }
}

// One non-blocking pass over every queue.
void TcpTransport::progressAll() {
  progressSelf();
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    progressRecv(p);  // first: draining the peer makes room for its sends to us
    progressSend(p);
  }
}

// Sleeps until a socket with pending work is ready (or abort/deadline), then serves the ready ones.
void TcpTransport::pollAndProgress(Deadline deadline) {
  pollFds_.assign(1, pollfd{wakeFd_.get(), POLLIN, 0});
  pollPeers_.clear();
  for (int p = 0; p < size_; ++p) {
    const Peer& peer = peers_[p];
    const short events = static_cast<short>((peer.recvs.empty() ? 0 : POLLIN) | (peer.sends.empty() ? 0 : POLLOUT));
    if (p == rank_ || events == 0) continue;
    pollFds_.push_back({peer.fd.get(), events, 0});
    pollPeers_.push_back(p);
  }
  const int rc = ::poll(pollFds_.data(), pollFds_.size(), tcp::pollMillis(deadline));
  if (rc < 0) {
    ZCOLL_CHECK(errno == EINTR, "rank ", rank_, " tcp: poll failed: ", tcp::errnoText(errno));
    return;
  }
  for (size_t i = 1; i < pollFds_.size(); ++i) {
    const short ready = pollFds_[i].revents;
    // POLLHUP/POLLERR: let the next recv/send report what happened to the connection.
    if (ready & (POLLIN | POLLHUP | POLLERR)) progressRecv(pollPeers_[i - 1]);
    if (ready & (POLLOUT | POLLHUP | POLLERR)) progressSend(pollPeers_[i - 1]);
  }
}

// Writes as much of the peer's send queue as its socket takes, gathering the unsent parts of
// several frames into one sendmsg so many small messages cost few system calls.
void TcpTransport::progressSend(int peer) {
  Peer& p = peers_[peer];
  while (!p.sends.empty()) {
    iovec iov[kMaxIov];
    int n = 0;
    size_t want = 0;
    for (auto it = p.sends.begin(); it != p.sends.end() && n + 3 <= kMaxIov; ++it) n += remainingParts(*it, iov + n, want);
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n);
    const ssize_t k = ::sendmsg(p.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      connectionLost(peer, "send", tcp::errnoText(errno));
    }
    advance(peer, p.sends, static_cast<size_t>(k), false);
    if (static_cast<size_t>(k) < want) return;  // the socket buffer is full
  }
}

// Reads straight into the posted receive buffers, several frames per recvmsg. The scatter list
// ends at the last posted byte, so we never consume a frame nobody has asked for yet. A frame
// whose header does not match lands partly in the wrong buffer, but that error is fatal anyway.
void TcpTransport::progressRecv(int peer) {
  Peer& p = peers_[peer];
  while (!p.recvs.empty()) {
    iovec iov[kMaxIov];
    int n = 0;
    size_t want = 0;
    for (auto it = p.recvs.begin(); it != p.recvs.end() && n + 3 <= kMaxIov; ++it) n += remainingParts(*it, iov + n, want);
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n);
    const ssize_t k = ::recvmsg(p.fd.get(), &msg, MSG_DONTWAIT);
    if (k == 0) connectionLost(peer, "recv", "closed by the peer");
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      connectionLost(peer, "recv", tcp::errnoText(errno));
    }
    advance(peer, p.recvs, static_cast<size_t>(k), true);
    if (static_cast<size_t>(k) < want) return;  // drained what has arrived
  }
}

// Messages to ourselves: pair queued sends with posted receives in order and copy.
void TcpTransport::progressSelf() {
  Peer& self = peers_[rank_];
  while (!self.sends.empty() && !self.recvs.empty()) {
    Request& s = self.sends.front();
    Request& r = self.recvs.front();
    r.header = s.header;
    checkFrame(rank_, r);
    if (r.bytes > 0) std::memcpy(r.data, s.data, r.bytes);
    complete(self.sends);
    complete(self.recvs);
  }
}

// Credits n transferred bytes to the queue's front requests, completing those that are done.
void TcpTransport::advance(int peer, std::deque<Request>& q, size_t n, bool receiving) {
  while (n > 0) {
    Request& r = q.front();
    const size_t before = r.done;
    const size_t step = std::min(n, r.total() - r.done);
    r.done += step;
    n -= step;
    if (receiving && before < kHeaderBytes && r.done >= kHeaderBytes) checkFrame(peer, r);
    if (receiving && r.trailerBytes) {  // checksum the payload bytes that just arrived
      const size_t lo = std::max(before, kHeaderBytes), hi = std::min(r.done, kHeaderBytes + r.bytes);
      if (lo < hi) {
        if (lo == kHeaderBytes && received_++ == flipAt_) r.data[0] ^= 0x10;  // test-only: corrupted in transit
        r.crc = crc32cExtend(r.crc, r.data + (lo - kHeaderBytes), hi - lo);
      }
    }
    if (r.done < r.total()) break;
    if (receiving && r.trailerBytes && r.trailer != r.crc)
      throw Error(checksumMessage("tcp", rank_, peer, r.tag, r.bytes, r.trailer, r.crc));
    complete(q);
  }
}

void TcpTransport::complete(std::deque<Request>& q) {
  if (q.front().consume && q.front().bytes) q.front().consume(0, q.front().data, q.front().bytes);
  pending_.erase(q.front().id);
  q.pop_front();
}

void TcpTransport::checkFrame(int peer, const Request& r) const {
  const FrameHeader& h = r.header;
  ZCOLL_CHECK(h.magic == kFrameMagic || h.magic == kChecksummedFrame, "rank ", rank_, " tcp: corrupt frame from rank ",
              peer, " (magic ", hex(h.magic), ") where a message of ", r.bytes, " bytes with tag ", hex(r.tag),
              " was expected");
  ZCOLL_CHECK((h.magic == kChecksummedFrame) == (r.trailerBytes > 0), "rank ", rank_, " tcp: rank ", peer, " sends ",
              r.trailerBytes ? "no checksums" : "checksums", " but this rank ", r.trailerBytes ? "expects" : "does not",
              " (set ZCOLL_CHECKSUM / Options(checksum=...) alike on every rank)");
  if (h.tag != r.tag || h.bytes != r.bytes) throw Error(mismatchMessage("tcp", rank_, peer, r.tag, r.bytes, h.tag, h.bytes));
}

// "recv from rank 2", "send to rank 1": what a request is, for error messages.
std::string TcpTransport::direction(int peer, bool sending) const {
  return std::string(sending ? "send to" : "recv from") + " rank " + std::to_string(peer);
}

// "1048576 bytes, tag 0x..., 4096 moved": how far a request got, for error messages.
std::string TcpTransport::progressText(const Request& r) const {
  const size_t moved = r.done > kHeaderBytes ? r.done - kHeaderBytes : 0;
  return std::to_string(r.bytes) + " bytes, tag " + hex(r.tag) + ", " + std::to_string(moved) + " moved";
}

void TcpTransport::connectionLost(int peer, const char* op, const std::string& why) const {
  std::string inflight;
  for (const auto* q : {&peers_[peer].sends, &peers_[peer].recvs})
    if (!q->empty())
      inflight += "; pending " + direction(peer, q == &peers_[peer].sends) + ": " + progressText(q->front());
  // A peer that gave up (its own collective failed) says why on its liveness channel before it
  // hangs up, and one that died is seen there too: report the cause, not only the closure.
  if (liveness_) {
    const std::string cause = liveness_->whyGaveUp(peer, kCauseGrace);
    if (!cause.empty())
      ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " tcp: connection to rank ", peer, " closed: rank ", peer,
                     " gave up: ", cause, inflight);
    if (liveness_->gone(peer))
      ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " tcp: ", liveness_->whyGone(peer), inflight);
  }
  ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " tcp: connection to rank ", peer, " lost (", op, ": ", why, inflight, ")");
  __builtin_unreachable();
}

void TcpTransport::timedOut(RequestId req, Clock::time_point start) const {
  const int peer = pending_.at(req);
  std::string what, detail;
  for (const auto* q : {&peers_[peer].sends, &peers_[peer].recvs})
    for (const Request& r : *q)
      if (r.id == req) what = direction(peer, q == &peers_[peer].sends), detail = progressText(r);
  std::ostringstream os;
  os << "rank " << rank_ << " tcp: " << what << " timed out (waited " << std::setprecision(3)
     << std::chrono::duration<double>(Clock::now() - start).count() << " s; " << detail << "; "
     << pending_.size() << " requests pending in all)";
  throw TimeoutError(os.str());
}

}  // namespace

std::unique_ptr<Transport> makeTcpTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options) {
  return std::make_unique<TcpTransport>(store, prefix, rank, size, options);
}

}  // namespace zcoll
