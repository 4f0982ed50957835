// UCX transport.
//
// One UCP worker per transport (so per group), on a UCP context the process shares; an endpoint
// to every peer it connects to, made from the peer's worker address, which each rank publishes
// under <prefix>/ucx/addr/<rank>. Every rank then sends each peer a hello carrying the group's
// secret (transport/handshake.h) and waits for theirs: that wires the endpoints up, so a peer
// UCX cannot reach fails the group's creation, naming it, instead of its first collective.
//
// Messages are UCX tagged messages. The UCX tag names the sender and the message's position in
// its pair's stream (the n-th message from rank s to this rank), and a receive posts exactly
// that tag: messages between a pair are matched in order, as over tcp, whatever order UCX
// delivers them in. zcoll's own tag and size travel in a frame header, and the receiver checks
// them against what it posted, as every transport does: ranks that run different collectives
// get the same mismatch error as over tcp. A small payload travels in the header's message (an
// iov of header, payload and, with checksums, a CRC32C trailer: one message, one latency); a
// payload of kSplitBytes or more travels as a message of its own, contiguous, right after its
// header's, because UCX moves only contiguous buffers by zero-copy rendezvous (and over several
// rails): an iov payload is copied through bounce buffers at about 70% of the speed
// (ucx_perftest -D iov, tcp: 2.5 vs 3.5 GB/s at 64 MiB).
//
// Progress: isend/irecv post to UCX at once; wait() runs the worker until the request completes,
// spinning briefly and then sleeping on the worker's event fd (ucp_worker_arm), woken every
// kLivenessCheck to ask the group's liveness about the peers it waits on.
//
// abort() wakes the thread in wait(), which tells every peer why (an abort notice, received out
// of turn), so a peer waiting on this rank fails at once with that cause, as over tcp and shm.
//
// Failures: the group's liveness (transport/liveness.h) tells a dead, vanished or departed peer
// as it does for every transport, and the requests of that peer fail naming it. Endpoints use
// no UCX error handling (UCP_ERR_HANDLING_MODE_NONE): asking UCX for it ("peer" mode) restricts
// it to protocols that can report a peer's failure, which over tcp means fragmented copies on
// one rail instead of zero-copy rendezvous (measured on loopback: 2.1 vs 8.1 GB/s at 1 MiB).
// A request UCX fails anyway (its status) still fails naming the peer.
#include "transport/ucx/ucx_transport.h"

#if ZCOLL_WITH_UCX

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "transport/handshake.h"
#include "transport/liveness.h"
#include "transport/tag.h"
#include "transport/tcp/socket.h"
#include "transport/topology.h"
#include "transport/ucx/ucx_library.h"
#include "util/crc32c.h"

namespace zcoll {
namespace {

constexpr uint64_t kHelloMagic = 0x7a636f6c6c756378ULL;        // "zcollucx"
constexpr uint64_t kFrameMagic = 0x7a63756672616d65ULL;        // "zcuframe"
constexpr uint64_t kChecksummedFrame = 0x7a63756672616d63ULL;  // "zcuframc": a CRC32C trailer follows
constexpr size_t kTrailerBytes = 8;
constexpr auto kLivenessCheck = std::chrono::milliseconds(50);
constexpr auto kCauseGrace = std::chrono::milliseconds(200);
// Progress passes that find nothing before wait() sleeps on the event fd: a message that is a
// few microseconds away is met without the system calls of arming and waking.
constexpr int kSpins = 200;
constexpr size_t kSplitBytes = 64 << 10;
// Receives of a frame end in a scratch area this large, so a frame never arrives truncated (UCX
// would drop it): a sender whose message differs is reported from its own header. No frame is
// longer than a header, a payload below kSplitBytes and a trailer.
constexpr size_t kSpillBytes = kSplitBytes + 64;

// The UCX tag of a message: bit 63 marks the bootstrap's hellos and bit 62 abort notices
// (below); then the sender's rank (22 bits) and the message's number in the sender's stream to
// this rank (40 bits; wrapping is harmless, a pair never has 2^40 messages outstanding).
constexpr int kSeqBits = 40, kRankBits = 22;
constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};
ucp_tag_t messageTag(int src, uint64_t n) { return (static_cast<uint64_t>(src) << kSeqBits) | (n & kSeqMask); }
ucp_tag_t helloTag(int src) { return (uint64_t{1} << 63) | (static_cast<uint64_t>(src) << kSeqBits); }
// Bit 62: an abort notice (its text), the one message a rank sends any peer out of turn.
constexpr ucp_tag_t kNoticeBit = uint64_t{1} << 62;
constexpr ucp_tag_t kControlMask = (uint64_t{3} << 62);
ucp_tag_t noticeTag(int src) { return kNoticeBit | (static_cast<uint64_t>(src) << kSeqBits); }
constexpr size_t kMaxNotice = 2048;
// How long what a peer sent before it gave up or died may take to complete here, once we know:
// the news (an abort notice on its own tag, the liveness channel) can overtake its last messages,
// and a send of ours that it received may not have reported completion yet. Only what is still
// pending with the peer after this fails.
constexpr auto kLossGrace = std::chrono::milliseconds(100);

struct FrameHeader {
  uint64_t magic, tag, bytes;
};
constexpr size_t kHeaderBytes = sizeof(FrameHeader);

struct Hello {
  uint64_t magic, group;
  Secret secret;
  int32_t rank, size;
};

class UcxTransport;
struct Op;

// One UCX message of an op (its frame, or its payload when split).
struct Part {
  Op* op = nullptr;
  void* request = nullptr;  // UCX's, freed once the op is settled (or the transport goes)
  bool completed = false;   // UCX called back
  ucs_status_t status = UCS_INPROGRESS;
  size_t length = 0;        // receives: the bytes that arrived
  ucp_tag_t tag = 0;        // receives: the UCX tag that arrived
};

// One request: a message posted to UCX as one or two parts (or, to ourselves, paired in memory).
struct Op {
  UcxTransport* owner;
  RequestId id;
  int peer;
  bool sending;
  uint64_t tag;
  char* data;
  size_t bytes;
  FrameHeader header{};     // sends: the header sent; receives: as it arrived
  uint64_t trailer = 0;     // the payload's CRC32C (sends: computed; receives: as it arrived)
  size_t trailerBytes = 0;  // kTrailerBytes with checksums
  ucp_dt_iov_t iov[4]{};
  size_t iovCount = 0;
  Part parts[2];
  int partCount = 1, partsDone = 0;
  bool completed = false;  // every part called back
  Consumer consume;        // irecvConsume: gets `staging` once the message is verified
  std::unique_ptr<char[]> staging;
  bool split() const { return partCount == 2; }
  // The frame message's expected length: the payload rides in it unless split.
  size_t frameBytes() const { return kHeaderBytes + (split() ? 0 : bytes) + trailerBytes; }
};

// The endpoint to one peer.
struct Peer {
  int rank;
  ucp_ep_h ep = nullptr;
  uint64_t sent = 0, received = 0;  // messages posted each way (their UCX tags)
  int pending = 0;                   // requests to or from it not yet complete
};

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

// The process's UCX, or an error that names the rank.
const ucx::Api& loadFor(int rank, const std::string& library) {
  try {
    return ucx::load(library);
  } catch (const Error& e) {
    throw Error("rank " + std::to_string(rank) + " " + e.what());
  }
}

class UcxTransport : public Transport {
 public:
  UcxTransport(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& options);
  ~UcxTransport() override;

  const char* name() const override { return "ucx"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) override;
  void wait(RequestId req, Deadline deadline) override;
  bool test(RequestId req) override;
  void abort(const std::string& why) override;

  // UCX's callbacks (they run inside ucp_worker_progress, on the thread that progresses).
  void completed(Part* part, ucs_status_t status, size_t length, ucp_tag_t tag = 0) {
    part->completed = true;
    part->status = status;
    part->length = length;
    part->tag = tag;
    Op* op = part->op;
    if (++op->partsDone < op->partCount) {
      if (part == &op->parts[0] && !op->sending) framesArrived_.push_back(op);
      return;
    }
    op->completed = true;
    finished_.push_back(op);
  }

 private:
  void release();  // UCX's resources: the worker, its endpoints and requests
  void bootstrap(Store& store, const std::string& prefix, const TransportOptions& options);
  void connectEndpoint(int p, const std::vector<uint8_t>& address, const std::string& ctx);
  std::string who(int rank) const;
  bool connects(int peer) const;
  void checkPeer(int peer, const char* op) const;
  Op& newOp(int peer, bool sending, uint64_t tag, char* data, size_t bytes);
  void post(Op& op);
  ucp_request_param_t params(Part& part, bool sending, bool iov) const;
  void progressAll();
  void progressSelf();
  void checkFrame(const Op& op) const;
  void settle(Op& op);
  void retire(Op& op);
  void checkPeers();
  void markLost(int peer, std::string why);
  void sleepForEvents(Deadline until);
  [[noreturn]] void connectionLost(int peer, const std::string& why) const;
  std::string pendingWith(int peer) const;
  [[noreturn]] void timedOut(RequestId req, Clock::time_point start) const;
  void throwIfStopped();
  void postNoticeReceive();
  void tellPeersAborted(const std::string& why);
  void drain(std::vector<void*>& requests, Deadline until);
  std::string describe(const Op& op) const;

  const int rank_, size_;
  const Topology topology_;
  const bool remoteOnly_;
  const std::shared_ptr<Liveness> liveness_;
  const bool checksum_;
  const int64_t flipAt_;
  int64_t receivedWithPayload_ = 0;
  const ucx::Api& api_;
  std::shared_ptr<ucx::Context> context_;
  ucp_worker_h worker_ = nullptr;
  int eventFd_ = -1;  // the worker's (UCX owns it)
  std::vector<Peer> peers_;
  std::unordered_map<RequestId, std::unique_ptr<Op>> ops_;
  std::vector<Op*> finished_;  // completed by UCX, not yet checked
  std::deque<Op*> selfSends_, selfRecvs_;
  std::unique_ptr<char[]> spill_{new char[kSpillBytes]};  // see kSpillBytes
  std::vector<Op*> framesArrived_;  // split receives whose frame came: checked at once
  RequestId nextId_ = 1;
  Clock::time_point nextLivenessCheck_{};
  std::string failure_;
  // Abort notices: the one posted receive (from any peer) and what we sent.
  Op noticeIn_{};
  char noticeBuf_[kMaxNotice];
  // Per peer: why it is lost ("rank 0 ucx: rank 2 gave up: ...", from its abort notice or the
  // liveness), and from when that fails what is still pending with it (kLossGrace).
  std::vector<std::string> lost_;
  std::vector<Deadline> lostFrom_;
  bool anyLost_ = false;
  std::string noticeOut_;             // our notice's text, alive until the sends complete
  std::vector<void*> noticeSends_;
  bool noticesSent_ = false;
  tcp::Fd wakeFd_;
  std::atomic<bool> aborted_{false};
  mutable std::mutex abortMu_;
  std::string abortWhy_;
};

void onSend(void* /*request*/, ucs_status_t status, void* user) {
  auto* part = static_cast<Part*>(user);
  part->op->owner->completed(part, status, 0);
}

void onRecv(void* /*request*/, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
  auto* part = static_cast<Part*>(user);
  const bool arrived = info && (status == UCS_OK || status == UCS_ERR_MESSAGE_TRUNCATED);
  part->op->owner->completed(part, status, arrived ? info->length : 0, arrived ? info->sender_tag : 0);
}

UcxTransport::UcxTransport(Store& store, const std::string& prefix, int rank, int size,
                           const TransportOptions& options)
    : rank_(rank), size_(size), topology_(size, options.hostOf, options.hostNames),
      remoteOnly_(options.remoteOnly), liveness_(options.liveness), checksum_(options.checksum),
      flipAt_(options.testFlipBitAt), api_(loadFor(rank, options.ucxLibrary)) {
  ZCOLL_CHECK(size < (1 << kRankBits), "rank ", rank, " ucx: groups of at most ", (1 << kRankBits) - 1,
              " ranks (", size, " asked)");
  peers_.resize(static_cast<size_t>(size));
  lost_.resize(static_cast<size_t>(size));
  lostFrom_.resize(static_cast<size_t>(size));
  for (int p = 0; p < size; ++p) peers_[p].rank = p;
  wakeFd_ = tcp::Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ZCOLL_CHECK(wakeFd_, "rank ", rank, " ucx: eventfd failed: ", tcp::errnoText(errno));
  context_ = ucx::Context::shared(api_);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // One thread at a time: the group's progress thread, or a hierarchical schedule's stage thread
  // while it has the network transport to itself (algorithms/hierarchical.cc).
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  ucs_status_t s = api_.worker_create(context_->get(), &wp, &worker_);
  ZCOLL_CHECK(s == UCS_OK, "rank ", rank, " ucx: ucp_worker_create failed: ", ucx::statusText(api_, s));
  s = api_.worker_get_efd(worker_, &eventFd_);
  ZCOLL_CHECK(s == UCS_OK, "rank ", rank, " ucx: ucp_worker_get_efd failed: ", ucx::statusText(api_, s));
  log::Logger{options.logLevel, rank_}.info("ucx: UCX ", api_.version, " from ", api_.path);
  if (size > 1) {
    try {
      bootstrap(store, prefix, options);
      postNoticeReceive();
    } catch (...) {
      release();  // no destructor runs for an object whose constructor threw
      throw;
    }
  }
}

UcxTransport::~UcxTransport() { release(); }

void UcxTransport::release() {
  if (!worker_) return;
  if (aborted_.load(std::memory_order_acquire) && !noticesSent_) {
    std::lock_guard<std::mutex> lock(abortMu_);
    tellPeersAborted(abortWhy_);
  }
  drain(noticeSends_, Clock::now() + std::chrono::milliseconds(200));
  if (noticeIn_.parts[0].request && !noticeIn_.completed) api_.request_cancel(worker_, noticeIn_.parts[0].request);
  // Outstanding receives are cancelled and endpoints closed by force (their sends are purged);
  // callbacks that this sets off still find their ops (freed with the transport, after the worker).
  for (auto& [id, op] : ops_)
    for (Part& part : op->parts)
      if (part.request && !part.completed && !op->sending) api_.request_cancel(worker_, part.request);
  std::vector<void*> closing;
  for (Peer& peer : peers_) {
    if (!peer.ep) continue;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = api_.ep_close_nbx(peer.ep, &param);
    if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
    peer.ep = nullptr;
  }
  drain(closing, Clock::now() + std::chrono::seconds(1));
  for (void* r : closing) api_.request_free(r);
  // Messages nobody will receive now (a peer's notice, sent as it tore down too): matched and
  // dropped, or UCX warns of each when the worker goes.
  for (int i = 0; i < 1024; ++i) {
    ucp_request_param_t param{};
    void* r = api_.tag_recv_nbx(worker_, spill_.get(), kSpillBytes, 0, 0, &param);
    if (r == nullptr) continue;  // matched one at once
    if (UCS_PTR_IS_ERR(r)) {
      if (UCS_PTR_STATUS(r) == UCS_ERR_MESSAGE_TRUNCATED) continue;  // matched (and dropped) too
      break;
    }
    const bool matched = api_.request_check_status(r) != UCS_INPROGRESS;
    if (!matched) api_.request_cancel(worker_, r);
    api_.request_free(r);
    if (!matched) break;
  }
  for (void* r : noticeSends_) api_.request_free(r);
  if (noticeIn_.parts[0].request) api_.request_free(noticeIn_.parts[0].request);
  for (auto& [id, op] : ops_)
    for (Part& part : op->parts)
      if (part.request) api_.request_free(part.request), part.request = nullptr;
  api_.worker_destroy(worker_);
  worker_ = nullptr;
}

std::string UcxTransport::who(int rank) const {
  return "rank " + std::to_string(rank) + (topology_.hosts() > 1 ? " (" + topology_.hostName(topology_.hostOf(rank)) + ")" : "");
}

bool UcxTransport::connects(int peer) const {
  return peer != rank_ && (!remoteOnly_ || !topology_.sameHost(rank_, peer));
}

void UcxTransport::connectEndpoint(int p, const std::vector<uint8_t>& address, const std::string& ctx) {
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;  // failures come from the liveness (see the top)
  const ucs_status_t s = api_.ep_create(worker_, &ep, &peers_[p].ep);
  ZCOLL_CHECK_AS(NetworkError, s == UCS_OK, ctx, "cannot make an endpoint to ", who(p), ": ",
                 ucx::statusText(api_, s), " (check UCX_TLS and UCX_NET_DEVICES on both hosts: docs/ucx.md)");
}

// Addresses through the store, endpoints, then a hello each way with every peer. A rank that
// fails publishes why (Rendezvous), so the others fail at once with that cause.
void UcxTransport::bootstrap(Store& store, const std::string& prefix, const TransportOptions& options) {
  const std::string ctx = who(rank_) + " ucx: ";
  const Deadline deadline = Clock::now() + options.timeout;
  Rendezvous rendezvous(store, options.failKey.empty() ? prefix + "/failed" : options.failKey, ctx,
                        options.liveness.get());
  try {
    Hello me{kHelloMagic, groupHash(prefix),
             options.secret ? *options.secret : groupSecret(store, prefix + "/secret", rank_, deadline, rendezvous),
             rank_, size_};
    ucp_address_t* address = nullptr;
    size_t addressBytes = 0;
    ucs_status_t s = api_.worker_get_address(worker_, &address, &addressBytes);
    ZCOLL_CHECK(s == UCS_OK, ctx, "ucp_worker_get_address failed: ", ucx::statusText(api_, s));
    const auto* a = reinterpret_cast<const uint8_t*>(address);
    const auto key = [&](int r) { return prefix + "/ucx/addr/" + std::to_string(r); };
    store.set(key(rank_), std::vector<uint8_t>(a, a + addressBytes));
    api_.worker_release_address(worker_, address);

    // Every peer's hello is awaited from the start; ours go out as each peer's address arrives.
    std::vector<Hello> theirs(static_cast<size_t>(size_));
    std::vector<RequestId> helloIn(static_cast<size_t>(size_), 0), helloOut(static_cast<size_t>(size_), 0);
    std::vector<Deadline> reachBy(static_cast<size_t>(size_), deadline);
    const auto postHello = [&](int p, bool sending) {
      Op& op = newOp(p, sending, 0, reinterpret_cast<char*>(sending ? &me : &theirs[p]), sizeof(Hello));
      ucp_request_param_t param = params(op.parts[0], sending, false);
      void* r = sending ? api_.tag_send_nbx(peers_[p].ep, op.data, sizeof(Hello), helloTag(rank_), &param)
                        : api_.tag_recv_nbx(worker_, op.data, sizeof(Hello), helloTag(p), kFullMask, &param);
      ZCOLL_CHECK_AS(NetworkError, !UCS_PTR_IS_ERR(r), ctx, "hello ", sending ? "to " : "from ", who(p),
                     " failed: ", ucx::statusText(api_, UCS_PTR_STATUS(r)));
      op.parts[0].request = r;
      return op.id;
    };
    for (int p = 0; p < size_; ++p)
      if (connects(p)) helloIn[p] = postHello(p, false);
    for (int p = 0; p < size_; ++p) {
      if (!connects(p)) continue;
      const auto value = rendezvous.await(key(p), deadline, who(p) + " to publish its UCX address (has it started?)");
      connectEndpoint(p, value, ctx);
      helloOut[p] = postHello(p, true);
      reachBy[p] = std::min(deadline, Clock::now() + options.connectTimeout);
    }
    // Until every hello has gone out and come in: UCX wires the endpoints up meanwhile.
    for (auto nextCheck = Clock::now();;) {
      while (api_.worker_progress(worker_)) {
      }
      for (Op* op : finished_) {
        const int p = op->peer;
        const Part& part = op->parts[0];
        if (part.status != UCS_OK)
          throw NetworkError(ctx + "cannot reach " + who(p) + " over UCX (" + (op->sending ? "hello to it" : "its hello") +
                             ": " + ucx::statusText(api_, part.status) +
                             "); check that UCX_TLS and UCX_NET_DEVICES name a transport and device both hosts "
                             "share (docs/ucx.md)");
        if (!op->sending) {
          const Hello& h = theirs[p];
          ZCOLL_CHECK_AS(NetworkError, part.length == sizeof(Hello) && h.magic == kHelloMagic && h.group == me.group &&
                                           h.rank == p && h.size == size_,
                         ctx, "the hello from ", who(p), " is not this group's (another job on the same UCX tags?)");
          ZCOLL_CHECK_AS(NetworkError, h.secret == me.secret, ctx, who(p),
                         "'s hello does not carry this group's secret: refused (docs/failures.md, trust)");
        }
        retire(*op);
      }
      finished_.clear();
      bool done = true;
      for (int p = 0; p < size_; ++p) {
        if (!connects(p)) continue;
        const bool in = !ops_.count(helloIn[p]), out = !ops_.count(helloOut[p]);
        done = done && in && out;
        if (!out && Clock::now() >= reachBy[p])
          throw NetworkError(ctx + "cannot reach " + who(p) + " over UCX: its endpoint did not connect within " +
                             std::to_string(options.connectTimeout.count() / 1000.0).substr(0, 4) +
                             " s (ZCOLL_CONNECT_TIMEOUT); check that UCX_TLS and UCX_NET_DEVICES name a transport and "
                             "device both hosts reach, and that no firewall blocks UCX's ports (docs/ucx.md)");
        if (!in && Clock::now() >= deadline)
          throw TimeoutError(ctx + "timed out waiting for the hello of " + who(p));
      }
      if (done) break;
      if (Clock::now() >= nextCheck) {
        rendezvous.checkFailed();
        nextCheck = Clock::now() + std::chrono::milliseconds(20);
      }
      sleepForEvents(std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    }
  } catch (const Error& e) {
    rendezvous.checkFailed();  // another rank failed first: report its cause
    rendezvous.fail(e.what());
    throw;
  }
}

void UcxTransport::checkPeer(int peer, const char* op) const {
  ZCOLL_CHECK(peer >= 0 && peer < size_, "rank ", rank_, " ucx: ", op, " rank ", peer, ", not in a group of ", size_);
  ZCOLL_CHECK(peer == rank_ || connects(peer), "rank ", rank_, " ucx: ", op, " rank ", peer,
              ", which is on this host: shared memory carries that (no UCX endpoint)");
}

Op& UcxTransport::newOp(int peer, bool sending, uint64_t tag, char* data, size_t bytes) {
  auto op = std::make_unique<Op>();
  op->owner = this;
  op->id = nextId_++;
  op->peer = peer;
  op->sending = sending;
  op->tag = tag;
  op->data = data;
  op->bytes = bytes;
  for (Part& part : op->parts) part.op = op.get();
  Op& ref = *op;
  ops_.emplace(ref.id, std::move(op));
  ++peers_[peer].pending;
  return ref;
}

ucp_request_param_t UcxTransport::params(Part& part, bool sending, bool iov) const {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
                       UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  if (sending) param.cb.send = onSend;
  else param.cb.recv = onRecv;
  param.user_data = &part;
  param.datatype = iov ? ucp_dt_make_iov() : ucp_dt_make_contig(1);
  param.memory_type = UCS_MEMORY_TYPE_HOST;  // zcoll hands UCX host memory only (device tensors are staged)
  return param;
}

// The frame (header, payload unless split, trailer) and then, when split, the payload: the next
// messages to or from the peer, in the pair's order.
void UcxTransport::post(Op& op) {
  op.trailerBytes = checksum_ ? kTrailerBytes : 0;
  op.partCount = op.bytes >= kSplitBytes ? 2 : 1;
  op.iov[op.iovCount++] = {&op.header, kHeaderBytes};
  if (op.bytes && !op.split()) op.iov[op.iovCount++] = {op.data, op.bytes};
  if (op.trailerBytes) op.iov[op.iovCount++] = {&op.trailer, kTrailerBytes};
  if (!op.sending) op.iov[op.iovCount++] = {spill_.get(), kSpillBytes};
  Peer& peer = peers_[op.peer];
  for (int i = 0; i < op.partCount; ++i) {
    const bool frame = i == 0;
    void* buffer = frame ? static_cast<void*>(op.iov) : op.data;
    const size_t count = frame ? op.iovCount : op.bytes;
    ucp_request_param_t param = params(op.parts[i], op.sending, frame);
    void* r = op.sending ? api_.tag_send_nbx(peer.ep, buffer, count, messageTag(rank_, peer.sent++), &param)
                         : api_.tag_recv_nbx(worker_, buffer, count, messageTag(op.peer, peer.received++), kFullMask,
                                             &param);
    if (UCS_PTR_IS_ERR(r)) {
      // The stream to this peer is out of step now: the transport is unusable (wait() records it).
      failure_ = "rank " + std::to_string(rank_) + " ucx: posting a " + (op.sending ? "send to " : "recv from ") +
                 who(peer.rank) + " failed: " + ucx::statusText(api_, UCS_PTR_STATUS(r));
      throw NetworkError(failure_);
    }
    op.parts[i].request = r;
  }
}

RequestId UcxTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  checkPeer(peer, "send to");
  throwIfStopped();
  Op& op = newOp(peer, true, tag, const_cast<char*>(static_cast<const char*>(data)), bytes);
  op.header = {checksum_ ? kChecksummedFrame : kFrameMagic, tag, bytes};
  if (peer == rank_) {
    selfSends_.push_back(&op);
    return op.id;
  }
  if (checksum_) op.trailer = crc32c(data, bytes);
  const RequestId id = op.id;
  post(op);
  return id;
}

RequestId UcxTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  checkPeer(peer, "recv from");
  throwIfStopped();
  Op& op = newOp(peer, false, tag, static_cast<char*>(data), bytes);
  if (peer == rank_) {
    selfRecvs_.push_back(&op);
    return op.id;
  }
  const RequestId id = op.id;
  post(op);
  return id;
}

RequestId UcxTransport::irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) {
  checkPeer(peer, "recv from");
  throwIfStopped();
  Op& op = newOp(peer, false, tag, nullptr, bytes);
  op.staging.reset(new char[bytes]);  // not value-initialised: UCX overwrites it
  op.data = op.staging.get();
  op.consume = std::move(consume);
  if (peer == rank_) {
    selfRecvs_.push_back(&op);
    return op.id;
  }
  const RequestId id = op.id;
  post(op);
  return id;
}

void UcxTransport::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(abortMu_);
    if (abortWhy_.empty()) abortWhy_ = why.empty() ? "aborted" : why;
  }
  aborted_.store(true, std::memory_order_release);
  // The worker belongs to the thread in wait(): only wake it. Peers learn of the abort from the
  // group's liveness (the backend says why there before it aborts).
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wakeFd_.get(), &one, sizeof one);
}

void UcxTransport::throwIfStopped() {
  if (aborted_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(abortMu_);
    if (!noticesSent_) tellPeersAborted(abortWhy_);
    ZCOLL_CHECK(!aborted_, "rank ", rank_, " ucx: aborted: ", abortWhy_);
  }
  ZCOLL_CHECK(failure_.empty(), "rank ", rank_, " ucx: unusable after an earlier error: ", failure_);
}

// One receive, from any peer, of the notice a peer sends when it aborts.
void UcxTransport::postNoticeReceive() {
  if (noticeIn_.parts[0].request) api_.request_free(noticeIn_.parts[0].request);
  noticeIn_.owner = this;
  noticeIn_.parts[0] = Part{};
  noticeIn_.parts[0].op = &noticeIn_;
  noticeIn_.partsDone = 0;
  noticeIn_.completed = false;
  ucp_request_param_t param = params(noticeIn_.parts[0], false, false);
  void* r = api_.tag_recv_nbx(worker_, noticeBuf_, sizeof noticeBuf_, kNoticeBit, kControlMask, &param);
  ZCOLL_CHECK(!UCS_PTR_IS_ERR(r), "rank ", rank_, " ucx: posting the abort notice receive failed: ",
              ucx::statusText(api_, UCS_PTR_STATUS(r)));
  noticeIn_.parts[0].request = r;
}

// Sends every peer why this rank aborted (once; on the thread that owns the worker), and gives
// the sends a moment to leave.
void UcxTransport::tellPeersAborted(const std::string& why) {
  noticesSent_ = true;
  noticeOut_ = why.substr(0, kMaxNotice);
  for (const Peer& peer : peers_) {
    if (!peer.ep) continue;
    ucp_request_param_t param{};  // no callback: the requests are polled and freed here
    void* r = api_.tag_send_nbx(peer.ep, noticeOut_.data(), noticeOut_.size(), noticeTag(rank_), &param);
    if (r && !UCS_PTR_IS_ERR(r)) noticeSends_.push_back(r);
  }
  drain(noticeSends_, Clock::now() + std::chrono::milliseconds(100));
}

// Progresses the worker until every request of `requests` (callback-less ones we poll) has
// completed, or `until`; frees and drops the completed ones.
void UcxTransport::drain(std::vector<void*>& requests, Deadline until) {
  while (!requests.empty()) {
    while (api_.worker_progress(worker_)) {
    }
    requests.erase(std::remove_if(requests.begin(), requests.end(),
                                  [&](void* r) {
                                    if (api_.request_check_status(r) == UCS_INPROGRESS) return false;
                                    api_.request_free(r);
                                    return true;
                                  }),
                   requests.end());
    if (Clock::now() >= until) break;
  }
}

void UcxTransport::wait(RequestId req, Deadline deadline) {
  throwIfStopped();
  if (!ops_.count(req)) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", rank_, " ucx: wait on unknown request ", req);
    return;  // completed earlier
  }
  const auto start = Clock::now();
  try {
    progressAll();
    for (int idle = 0; ops_.count(req); ++idle) {
      throwIfStopped();
      const auto now = Clock::now();
      if (now >= deadline) timedOut(req, start);
      if (idle >= kSpins) {
        // Wake to ask the liveness, and to fail what a peer that gave up leaves pending.
        const bool periodic = liveness_ || anyLost_;
        sleepForEvents(periodic ? std::min(deadline, now + kLivenessCheck) : deadline);
      }
      progressAll();
    }
  } catch (const TimeoutError&) {
    throw;  // nothing is lost: a later wait may still succeed
  } catch (const Error& e) {
    throwIfStopped();
    failure_ = e.what();
    throw;
  }
}

bool UcxTransport::test(RequestId req) {
  throwIfStopped();
  if (!ops_.count(req)) {
    ZCOLL_CHECK(req > 0 && req < nextId_, "rank ", rank_, " ucx: test of unknown request ", req);
    return true;
  }
  try {
    progressAll();
  } catch (const Error& e) {
    throwIfStopped();
    failure_ = e.what();
    throw;
  }
  return !ops_.count(req);
}

// Runs the worker until it has nothing more to do, checks what completed, and asks after the
// peers we wait on.
void UcxTransport::progressAll() {
  while (api_.worker_progress(worker_)) {
  }
  progressSelf();
  for (Op* op : framesArrived_)
    if (!op->completed) checkFrame(*op);
  framesArrived_.clear();
  // settle() may throw: what is left stays for the error path (the transport is unusable then)
  while (!finished_.empty()) {
    std::vector<Op*> done;
    done.swap(finished_);
    for (size_t i = 0; i < done.size(); ++i) {
      try {
        if (done[i] == &noticeIn_) {
          const Part& part = noticeIn_.parts[0];
          if (part.status != UCS_OK) continue;  // cancelled as the transport goes
          const int from = static_cast<int>((part.tag >> kSeqBits) & ((uint64_t{1} << kRankBits) - 1));
          if (from < size_)
            markLost(from, "rank " + std::to_string(rank_) + " ucx: " + who(from) + " gave up: " +
                               std::string(noticeBuf_, std::min(part.length, sizeof noticeBuf_)));
          postNoticeReceive();  // other peers may give up too
          continue;
        }
        settle(*done[i]);
      } catch (...) {
        finished_.insert(finished_.begin(), done.begin() + static_cast<std::ptrdiff_t>(i) + 1, done.end());
        throw;
      }
    }
  }
  if (anyLost_)  // a peer that is lost fails what we still expect of it
    for (const Peer& peer : peers_)
      if (peer.pending > 0 && !lost_[peer.rank].empty() && Clock::now() >= lostFrom_[peer.rank])
        throw NetworkError(lost_[peer.rank] + pendingWith(peer.rank));
  if (liveness_ && Clock::now() >= nextLivenessCheck_) {
    nextLivenessCheck_ = Clock::now() + kLivenessCheck;
    checkPeers();
  }
}

// Messages to ourselves: queued sends paired with posted receives in order, copied.
void UcxTransport::progressSelf() {
  while (!selfSends_.empty() && !selfRecvs_.empty()) {
    Op& s = *selfSends_.front();
    Op& r = *selfRecvs_.front();
    selfSends_.pop_front();
    selfRecvs_.pop_front();
    if (s.tag != r.tag || s.bytes != r.bytes)
      throw Error(mismatchMessage("ucx", rank_, rank_, r.tag, r.bytes, s.tag, s.bytes));
    if (r.bytes) std::memcpy(r.data, s.data, r.bytes);
    retire(s);
    if (r.consume && r.bytes) r.consume(0, r.data, r.bytes);
    retire(r);
  }
}

// Checks an op UCX completed: a failure names the peer; a receive must be the frame it posted.
// A received frame must be the one its receive posted: magic, checksum setting, tag and size.
// Checked as soon as it arrives, before a split payload that may never come (a sender whose
// message differs did not split it alike).
void UcxTransport::checkFrame(const Op& op) const {
  const int peer = op.peer;
  const Part& part = op.parts[0];
  if (part.status != UCS_OK) connectionLost(peer, "recv: " + ucx::statusText(api_, part.status));
  const FrameHeader& h = op.header;
  ZCOLL_CHECK(part.length >= kHeaderBytes && (h.magic == kFrameMagic || h.magic == kChecksummedFrame), "rank ", rank_,
              " ucx: corrupt frame from rank ", peer, " (", part.length, " bytes, magic ", hex(h.magic), ") where ",
              describe(op), " was expected");
  ZCOLL_CHECK((h.magic == kChecksummedFrame) == (op.trailerBytes > 0), "rank ", rank_, " ucx: rank ", peer, " sends ",
              op.trailerBytes ? "no checksums" : "checksums", " but this rank ", op.trailerBytes ? "expects" : "does not",
              " (set ZCOLL_CHECKSUM / Options(checksum=...) alike on every rank)");
  if (h.tag != op.tag || h.bytes != op.bytes || part.length != op.frameBytes())
    throw Error(mismatchMessage("ucx", rank_, peer, op.tag, op.bytes, h.tag, h.bytes));
}

void UcxTransport::settle(Op& op) {
  const int peer = op.peer;
  if (!op.sending) checkFrame(op);
  for (int i = 0; i < op.partCount; ++i) {
    const Part& part = op.parts[i];
    if (part.status != UCS_OK)
      connectionLost(peer, std::string(op.sending ? "send" : "recv") + ": " + ucx::statusText(api_, part.status));
  }
  if (!op.sending) {
    if (op.split() && op.parts[1].length != op.bytes)
      throw Error(mismatchMessage("ucx", rank_, peer, op.tag, op.bytes, op.tag, op.parts[1].length));
    if (op.bytes && receivedWithPayload_++ == flipAt_) op.data[0] ^= 0x10;  // test-only: corrupted in transit
    if (op.trailerBytes) {
      const uint32_t crc = crc32c(op.data, op.bytes);
      if (crc != op.trailer) throw Error(checksumMessage("ucx", rank_, peer, op.tag, op.bytes, op.trailer, crc));
    }
    if (op.consume && op.bytes) op.consume(0, op.data, op.bytes);
  }
  retire(op);
}

void UcxTransport::retire(Op& op) {
  for (Part& part : op.parts)
    if (part.request) api_.request_free(part.request);
  --peers_[op.peer].pending;
  ops_.erase(op.id);
}

// A peer we expect something of that the group's liveness says gave up or is gone is lost: what
// is still pending with it kLossGrace later fails, naming it.
void UcxTransport::checkPeers() {
  for (const Peer& peer : peers_) {
    if (peer.rank == rank_ || peer.pending == 0 || !lost_[peer.rank].empty()) continue;
    const std::string cause = liveness_->whyGaveUp(peer.rank, std::chrono::milliseconds(0));
    if (!cause.empty())
      markLost(peer.rank, "rank " + std::to_string(rank_) + " ucx: rank " + std::to_string(peer.rank) + " gave up: " + cause);
    else if (liveness_->gone(peer.rank))
      markLost(peer.rank, "rank " + std::to_string(rank_) + " ucx: " + liveness_->whyGone(peer.rank));
  }
}

void UcxTransport::markLost(int peer, std::string why) {
  if (!lost_[peer].empty()) return;  // the first news is the cause
  lost_[peer] = std::move(why);
  lostFrom_[peer] = Clock::now() + kLossGrace;
  anyLost_ = true;
}

// Sleeps until the worker has events, abort() is called or `until`.
void UcxTransport::sleepForEvents(Deadline until) {
  const ucs_status_t s = api_.worker_arm(worker_);
  if (s == UCS_ERR_BUSY) return;  // events arrived meanwhile: progress them
  ZCOLL_CHECK(s == UCS_OK, "rank ", rank_, " ucx: ucp_worker_arm failed: ", ucx::statusText(api_, s));
  pollfd fds[2] = {{eventFd_, POLLIN, 0}, {wakeFd_.get(), POLLIN, 0}};
  const int rc = ::poll(fds, 2, tcp::pollMillis(until));
  ZCOLL_CHECK(rc >= 0 || errno == EINTR, "rank ", rank_, " ucx: poll failed: ", tcp::errnoText(errno));
}

// "1048576 bytes with tag 0x..." of an op, for messages.
std::string UcxTransport::describe(const Op& op) const {
  return "a message of " + std::to_string(op.bytes) + " bytes with tag " + hex(op.tag) + " (" + describeTag(op.tag) + ")";
}

// "; pending recv from rank 2: a message of ..." (the first request still pending with `peer`).
std::string UcxTransport::pendingWith(int peer) const {
  for (const auto& [id, op] : ops_)
    if (op->peer == peer && !op->completed)
      return std::string("; pending ") + (op->sending ? "send to" : "recv from") + " rank " + std::to_string(peer) + ": " +
             describe(*op);
  return "";
}

void UcxTransport::connectionLost(int peer, const std::string& why) const {
  const std::string inflight = pendingWith(peer);
  if (liveness_) {
    const std::string cause = liveness_->whyGaveUp(peer, kCauseGrace);
    if (!cause.empty())
      ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " ucx: connection to rank ", peer, " failed: rank ", peer,
                     " gave up: ", cause, inflight);
    if (liveness_->gone(peer)) ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " ucx: ", liveness_->whyGone(peer), inflight);
  }
  ZCOLL_CHECK_AS(NetworkError, false, "rank ", rank_, " ucx: connection to ", who(peer), " lost (", why, inflight, ")");
  __builtin_unreachable();
}

void UcxTransport::timedOut(RequestId req, Clock::time_point start) const {
  const Op& op = *ops_.at(req);
  std::ostringstream os;
  os << "rank " << rank_ << " ucx: " << (op.sending ? "send to" : "recv from") << " rank " << op.peer
     << " timed out (waited " << std::setprecision(3) << std::chrono::duration<double>(Clock::now() - start).count()
     << " s; " << describe(op) << "; " << ops_.size() << " requests pending in all)";
  throw TimeoutError(os.str());
}

}  // namespace

bool ucxBuilt() { return true; }

std::string ucxVersion(const std::string& library) { return ucx::load(library).version; }

std::unique_ptr<Transport> makeUcxTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options) {
  return std::make_unique<UcxTransport>(store, prefix, rank, size, options);
}

}  // namespace zcoll

#else  // built without UCX's headers

namespace zcoll {
namespace {
[[noreturn]] void unavailable() {
  ZCOLL_CHECK(false, "ucx: this zcoll was built without the UCX transport (no UCX headers were found): install "
                     "the libucx wheel (pip install 'zcoll[ucx]') or a system UCX with its headers, then rebuild "
                     "zcoll (docs/ucx.md)");
  __builtin_unreachable();
}
}  // namespace

bool ucxBuilt() { return false; }
std::string ucxVersion(const std::string&) { unavailable(); }
std::unique_ptr<Transport> makeUcxTransport(Store&, const std::string&, int, int, const TransportOptions&) {
  unavailable();
}

}  // namespace zcoll

#endif
