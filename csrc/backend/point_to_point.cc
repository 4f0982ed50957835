// Point-to-point for ProcessGroupZcoll: send, recv and recvAnysource, on a transport and thread of
// their own (docs/architecture.md, point-to-point). They must not queue behind collectives (a
// user's isend + recv pair would wait on the collectives' lane), nor share the collectives'
// per-pair FIFO, whose order every rank agrees on while p2p tags arrive in any order.
//
// The caller's thread checks arguments and queues a submission. The p2p thread hands it to the
// matching engine (algorithms/point_to_point.h) and polls the engine: spinning while messages
// move, then yielding, then napping, and asleep on a condition variable once nothing has been
// pending for a while, so an idle group costs no CPU and 8 ranks on 2 cores still progress.
// A caller that waits on a Work drives the engine itself until that Work completes, while the
// p2p thread pauses: a blocking send or recv then takes no hand-off between threads, which on a
// rank bound to one core (the caller, the p2p thread and the collectives' thread taking turns)
// made sendrecv times swing 2x from run to run. The thread still progresses what nobody waits on.
#include <ATen/ATen.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "algorithms/point_to_point.h"
#include "backend/process_group_zcoll.h"
#include "backend/tensor_args.h"

namespace zcoll {
namespace {

constexpr unsigned kSpinPolls = 64, kYieldPolls = 256;
// After the last operation, keep draining for messages already on their way, then sleep: a
// message sent to a sleeping rank waits in the transport until that rank's next p2p call.
constexpr auto kLinger = std::chrono::milliseconds(100);
constexpr auto kFarewellTime = std::chrono::seconds(2);

// Naps grow from 50 us to 1 ms: short waits stay responsive, long ones cost ~nothing.
std::chrono::microseconds nap(unsigned idle) {
  const unsigned naps = idle - kSpinPolls - kYieldPolls;
  return std::chrono::microseconds(std::min(1000u, 50u * (1 + naps / 8)));
}

// The one tensor of a p2p call.
at::Tensor p2pTensor(const std::vector<at::Tensor>& tensors, const char* op) {
  ZCOLL_CHECK_ARG(tensors.size() == 1, "zcoll ", op, ": expects one tensor, got ", tensors.size());
  checkTensor(tensors[0], op);
  return tensors[0];
}

void checkPeer(int peer, int rank, int size, const char* op) {
  ZCOLL_CHECK_ARG(peer >= 0 && peer < size, "zcoll ", op, ": peer rank ", peer, " is not a rank of a group of ",
                  size);
  ZCOLL_CHECK_ARG(peer != rank, "zcoll ", op, ": peer rank ", peer, " is this rank (messages to self are not supported)");
}

// A receive of a CPU tensor lands in a contiguous host buffer: the tensor itself, or one
// written back into it when the receive completes. (A device tensor's lands in its staging's
// host copy: see recvInto.)
at::Tensor contiguousTarget(const at::Tensor& t) {
  return t.is_contiguous() ? t : at::empty_like(t, at::MemoryFormat::Contiguous);
}

// What a send transmits: the tensor itself when it is contiguous in host memory, else a copy,
// taken now (a device tensor's by a blocking copy, in its current stream's order).
at::Tensor sendBuffer(const at::Tensor& t) {
  return t.is_cpu() ? t.contiguous() : t.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

}  // namespace

class P2PLane;

// A p2p Work, completed by the p2p thread or by a caller waiting on it (P2PLane::drive);
// receives report their sender through sourceRank().
class P2PWork : public c10d::Work {
 public:
  P2PWork(c10d::OpType type, at::Tensor tensor, int source, std::weak_ptr<P2PLane> lane)
      : c10d::Work(-1, type), type_(type), tensor_(std::move(tensor)), source_(source), lane_(std::move(lane)),
        future_(c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {}
  bool isCompleted() override { return future_->completed(); }
  bool isSuccess() const override { return future_->completed() && !future_->hasError(); }
  std::exception_ptr exception() const override { return future_->hasError() ? future_->exception_ptr() : nullptr; }
  int sourceRank() const override {
    TORCH_CHECK(type_ != c10d::OpType::SEND, "zcoll: sourceRank() is defined for receives only");
    return source_.load();
  }
  std::vector<at::Tensor> result() override { return {tensor_}; }
  // The group timeout bounds every p2p op, so `timeout` is not needed.
  bool wait(std::chrono::milliseconds timeout) override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

  void complete(int source, std::exception_ptr error) {
    if (source >= 0) source_.store(source);  // before the future: a waiter then reads it
    if (error) future_->setError(asTorchError(error));
    else future_->markCompleted(c10::IValue(std::vector<at::Tensor>{tensor_}));
  }

 private:
  const c10d::OpType type_;
  at::Tensor tensor_;
  std::atomic<int> source_;
  std::weak_ptr<P2PLane> lane_;  // gone once the group has closed it and no wait holds it
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

// Set while this thread drives a lane's engine: a completion callback that waits on another p2p
// Work must not try to drive it again (the engine is not reentrant).
thread_local bool drivingLane = false;

class P2PLane : public std::enable_shared_from_this<P2PLane> {
 public:
  Transport::SharedMemoryUse sharedMemory() const { return transport_->sharedMemory(); }
  P2PLane(std::unique_ptr<Transport> transport, std::chrono::milliseconds timeout, size_t maxUnexpectedBytes)
      : transport_(std::move(transport)), engine_(*transport_, maxUnexpectedBytes), timeout_(timeout),
        thread_([this] { run(); }) {}
  ~P2PLane() { close(); }
  // Stops the thread (which says farewell, aborts the transport and fails what is pending);
  // later submissions throw. Idempotent.
  void close();
  // close() without the farewell: the transport fails every operation with `why` first.
  void abort(const std::string& why) {
    transport_->abort(why);
    close();
  }
  // `buffer` is contiguous: what is sent, or where a receive lands before `tensor` gets it. The
  // operation fails with a timeout at `deadline` (default: the group timeout from now).
  // With `staging` (a device tensor's receive), `buffer` is its host copy, copied back into
  // `tensor` on the lane's own stream when the message has arrived (device_staging.h).
  c10::intrusive_ptr<c10d::Work> submit(c10d::OpType type, int peer, int64_t tag, at::Tensor tensor, at::Tensor buffer,
                                        std::optional<Deadline> deadline = std::nullopt,
                                        std::shared_ptr<DeviceStaging> staging = nullptr);
  // Progresses the engine on the calling thread until `work` completes (or the lane closes);
  // the p2p thread pauses meanwhile.
  void drive(P2PWork& work);

 private:
  struct Submission {
    c10d::OpType type;
    int peer;
    int64_t tag;
    at::Tensor tensor, buffer;
    Deadline deadline;
    c10::intrusive_ptr<P2PWork> work;
    std::shared_ptr<DeviceStaging> staging;
  };
  void run();
  // Hands the queued submissions to the engine and polls it once; engineMu_ held. True when
  // anything started or moved.
  bool step();
  void start(std::unique_ptr<Submission> s);
  void complete(uint64_t id, const P2PStatus& status);

  std::unique_ptr<Transport> transport_;
  // The engine and what it runs belong to whoever holds engineMu_: the p2p thread, or a caller
  // in drive(). Lock order: engineMu_, then mu_.
  std::mutex engineMu_;
  PointToPoint engine_;  // constructed before the thread starts
  const std::chrono::milliseconds timeout_;
  std::unordered_map<uint64_t, std::unique_ptr<Submission>> active_;
  SideStreams sideStreams_;  // the lane's stream per device, for device receives' copies back
  uint64_t nextId_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  int drivers_ = 0;  // callers in drive() (under mu_): the p2p thread waits for none
  std::vector<std::unique_ptr<Submission>> incoming_;  // from callers to the engine
  // Done submissions are released by the next caller or the destructor, never by the p2p thread:
  // dropping the last reference to a Python-created tensor needs the GIL (as in the lane).
  std::vector<std::unique_ptr<Submission>> finished_;
  bool stop_ = false;
  std::once_flag closed_;
  std::thread thread_;
};

c10::intrusive_ptr<c10d::Work> P2PLane::submit(c10d::OpType type, int peer, int64_t tag, at::Tensor tensor,
                                               at::Tensor buffer, std::optional<Deadline> deadline,
                                               std::shared_ptr<DeviceStaging> staging) {
  auto work = c10::make_intrusive<P2PWork>(type, tensor, type == c10d::OpType::RECV ? peer : -1, weak_from_this());
  if (staging) staging->inputsQueued(sideStreams_.get(staging->device()));
  auto s = std::make_unique<Submission>(Submission{type, peer, tag, std::move(tensor), std::move(buffer),
                                                   deadline.value_or(Clock::now() + timeout_), work,
                                                   std::move(staging)});
  std::vector<std::unique_ptr<Submission>> done;  // released here, on the caller's thread
  {
    std::lock_guard<std::mutex> lock(mu_);
    TORCH_CHECK_WITH(DistBackendError, !stop_, "zcoll ", type == c10d::OpType::SEND ? "send" : "recv",
                     ": the process group has been shut down (destroy_process_group)");
    done.swap(finished_);
    incoming_.push_back(std::move(s));
  }
  cv_.notify_one();
  return work;
}

void P2PLane::run() {
  drivingLane = true;  // completion callbacks run here: a wait in one must not drive the engine
  unsigned idle = 0;
  bool busy = false;
  Clock::time_point lastActive{};  // no linger at start: a group that never uses p2p must cost its ranks no CPU
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (drivers_ > 0) {  // a caller drives the engine: stay out of its way
        cv_.wait(lock, [&] { return stop_ || drivers_ == 0; });
        idle = 0;
        lastActive = Clock::now();
      }
      const auto woken = [&] { return stop_ || !incoming_.empty() || drivers_ > 0; };
      if (!woken() && idle >= kSpinPolls + kYieldPolls) {
        if (!busy && Clock::now() - lastActive >= kLinger) {
          cv_.wait(lock, woken);  // nothing pending: sleep until a call or the group's end
          idle = 0;
        } else {
          cv_.wait_for(lock, nap(idle), woken);
        }
      }
      if (stop_) break;
      if (drivers_ > 0) continue;
    }
    bool moved;
    {
      std::lock_guard<std::mutex> engine(engineMu_);
      moved = step();
      busy = engine_.busy();
    }
    if (moved) {
      idle = 0;
      lastActive = Clock::now();
      continue;
    }
    if (++idle > kSpinPolls && idle <= kSpinPolls + kYieldPolls) sched_yield();  // let a peer on our core run
  }
  std::lock_guard<std::mutex> engine(engineMu_);
  engine_.close("process group destroyed with the operation pending",
                Clock::now() + std::min<Clock::duration>(timeout_, kFarewellTime));
}

bool P2PLane::step() {
  std::vector<std::unique_ptr<Submission>> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(incoming_);
  }
  const bool started = !batch.empty();
  for (auto& s : batch) start(std::move(s));
  return engine_.poll() || started;
}

void P2PLane::drive(P2PWork& work) {
  if (drivingLane) return;  // a completion callback of the engine this thread drives
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    ++drivers_;
  }
  cv_.notify_all();  // a napping thread notices at once and waits
  struct Leave {  // however drive() ends: the thread takes over again
    P2PLane& lane;
    ~Leave() {
      drivingLane = false;
      {
        std::lock_guard<std::mutex> lock(lane.mu_);
        --lane.drivers_;
      }
      lane.cv_.notify_all();
    }
  } leave{*this};
  std::lock_guard<std::mutex> engine(engineMu_);  // the thread finishes its pass first
  drivingLane = true;
  unsigned idle = 0;
  while (!work.isCompleted()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;  // close() fails what is pending once the thread has the engine
    }
    if (step()) {
      idle = 0;
      continue;
    }
    ++idle;  // as the thread: spin, then yield, then nap (8 ranks on 2 cores still progress)
    if (idle <= kSpinPolls) continue;
    if (idle <= kSpinPolls + kYieldPolls) sched_yield();
    else transport_->idle(nap(idle));  // on shm until the peer rings: a read of our message, its reply
  }
}

bool P2PWork::wait(std::chrono::milliseconds /*timeout*/) {
  if (!future_->completed())
    if (auto lane = lane_.lock()) lane->drive(*this);
  future_->waitAndThrow();
  return true;
}

void P2PLane::start(std::unique_ptr<Submission> s) {
  const uint64_t id = nextId_++;
  const Submission& sub = *s;
  active_.emplace(id, std::move(s));
  auto done = [this, id](const P2PStatus& status) { complete(id, status); };  // may run before send() returns
  if (sub.type == c10d::OpType::SEND)
    engine_.send(sub.peer, sub.tag, sub.buffer.data_ptr(), sub.buffer.nbytes(), sub.deadline, done);
  else
    engine_.recv(sub.peer, sub.tag, sub.buffer.data_ptr(), sub.buffer.nbytes(), sub.deadline, done);
}

void P2PLane::complete(uint64_t id, const P2PStatus& status) {
  auto node = active_.extract(id);
  std::unique_ptr<Submission> sub = std::move(node.mapped());
  std::exception_ptr error = status.error;
  if (!error && sub->type != c10d::OpType::SEND && !sub->buffer.is_same(sub->tensor)) {
    try {
      at::NoGradGuard noGrad;  // a data write, as the contiguous path's; not an autograd op
      if (sub->staging) {
        // A device tensor: copied back on the lane's stream, after the caller's work up to the
        // call, and waited for by an event on that stream (so not for the caller's later work).
        sub->staging->beforeRun();
        sub->staging->afterRun();
      } else {
        sub->tensor.copy_(sub->buffer);  // the non-contiguous receive's write-back
      }
    } catch (const std::exception&) {
      error = std::current_exception();
    }
  }
  sub->work->complete(status.source, error);
  std::lock_guard<std::mutex> lock(mu_);
  finished_.push_back(std::move(sub));
}

void P2PLane::close() {
  std::call_once(closed_, [this] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();  // it said farewell, aborted the transport and failed what was pending
    for (auto& s : incoming_)
      s->work->complete(-1, std::make_exception_ptr(Error("zcoll: process group destroyed before the operation started")));
  });
}

void closeP2PLane(std::shared_ptr<P2PLane>& lane) {
  if (lane) lane->close();
  lane.reset();
}

void ProcessGroupZcoll::shutdown() {
  endCollectives();
  p2p_->close();
}

void ProcessGroupZcoll::abort() {
  const std::string why = "zcoll: rank " + std::to_string(getRank()) + " aborted the process group";
  transport_->abort(why);
  p2p_->abort(why);
  liveness_->leave();
}

std::array<Transport::SharedMemoryUse, 2> ProcessGroupZcoll::sharedMemory() const {
  return {transport_->sharedMemory(), p2p_->sharedMemory()};
}

void ProcessGroupZcoll::startP2P(const TransportOptions& collectiveOptions) {
  // Rings as large as the collectives': a quarter of that size cost large messages half their
  // speed (a 2-rank sendrecv of 1-64 MiB ran at 0.4-0.5x MPI's, now 0.9-1.1x), for little memory.
  TransportOptions options = collectiveOptions;
  options.testFlipBitAt = -1;  // test faults go to the collectives' transport
  // The collectives' transport has said what it chose; warnings still go out.
  options.logLevel = log::Level::kWarn;
  auto transport = makeTransport(config_.transport, *store_, "zcoll-p2p", getRank(), getSize(), options);
  p2p_ = std::make_shared<P2PLane>(std::move(transport), timeout_, config_.p2pMaxUnexpectedBytes);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::send(std::vector<at::Tensor>& tensors, int dstRank, int tag) {
  const at::Tensor t = p2pTensor(tensors, "send");
  checkPeer(dstRank, getRank(), getSize(), "send");
  return p2p_->submit(c10d::OpType::SEND, dstRank, tag, t, sendBuffer(t));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) {
  const at::Tensor t = p2pTensor(tensors, "recv");
  checkPeer(srcRank, getRank(), getSize(), "recv");
  return recvInto(c10d::OpType::RECV, srcRank, tag, t);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  const at::Tensor t = p2pTensor(tensors, "recv");
  return recvInto(c10d::OpType::RECVANYSOURCE, kAnySource, tag, t);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::recvInto(c10d::OpType type, int peer, int tag, const at::Tensor& t) {
  if (auto staging = DeviceStaging::forTensors({t}, false, "recv")) {
    const at::Tensor buffer = staging->host(t, /*read=*/false, /*write=*/true);
    return p2p_->submit(type, peer, tag, t, buffer, std::nullopt, std::move(staging));
  }
  return p2p_->submit(type, peer, tag, t, contiguousTarget(t));
}

}  // namespace zcoll

namespace zcoll {

// gloo's monitored barrier on the p2p lane: every other rank tells rank 0 it arrived; rank 0
// waits for them all until one deadline, then sends each a verdict (the ranks that failed to
// arrive, or none) and raises if there were any. So ranks that did arrive learn of the failure
// at once, rather than at their group timeout as under gloo. The messages carry tags above any
// int, which user tags cannot reach.
void ProcessGroupZcoll::monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) {
  const int p = getSize(), rank = getRank();
  if (p == 1) return;
  const std::chrono::milliseconds timeout = opts.timeout == c10d::kUnsetTimeout ? timeout_ : opts.timeout;
  ZCOLL_CHECK_ARG(timeout.count() >= 0, "zcoll monitored_barrier: negative timeout ", timeout.count(), " ms");
  const int64_t arriveTag = kMonitoredBarrierTags + 2 * static_cast<int64_t>(monitoredBarriers_++);
  const int64_t verdictTag = arriveTag + 1;
  at::Tensor token = at::zeros({1}, at::kInt);
  if (rank != 0) {
    at::Tensor failed = at::zeros({p}, at::kInt);  // failed[q] == 1: rank q did not pass
    auto sent = p2p_->submit(c10d::OpType::SEND, 0, arriveTag, token, token);
    auto verdict = p2p_->submit(c10d::OpType::RECV, 0, verdictTag, failed, failed);
    try {
      sent->wait();
      verdict->wait();
    } catch (const std::exception& e) {
      TORCH_CHECK_WITH(DistBackendError, false, "[Rank ", rank, "]: zcoll monitored_barrier: this rank reached the "
                       "barrier but could not hear rank 0's verdict; check rank 0's log for the faulty rank: ",
                       errorMessage(e));
    }
    std::vector<int> ranks;
    for (int q = 0; q < p; ++q)
      if (failed[q].item<int>()) ranks.push_back(q);
    TORCH_CHECK_WITH(DistBackendError, ranks.empty(), "[Rank ", rank, "]: zcoll monitored_barrier: rank 0 ",
                     "reports that ", ranks.size() == 1 ? "rank " : "ranks ", c10::Join(", ", ranks),
                     " failed to pass monitoredBarrier in ", timeout.count(), " ms");
    return;
  }
  const Deadline deadline = Clock::now() + timeout;
  std::vector<c10::intrusive_ptr<c10d::Work>> arrivals(p);
  std::vector<at::Tensor> tokens(p);
  for (int q = 1; q < p; ++q) {
    tokens[q] = at::zeros({1}, at::kInt);
    arrivals[q] = p2p_->submit(c10d::OpType::RECV, q, arriveTag, tokens[q], tokens[q], deadline);
  }
  at::Tensor failed = at::zeros({p}, at::kInt);
  std::vector<int> ranks;
  std::ostringstream why;  // what each failed rank's receive said
  bool timedOut = false;
  for (int q = 1; q < p; ++q) {
    try {
      arrivals[q]->wait();
    } catch (const std::exception& e) {
      timedOut = timedOut || dynamic_cast<const DistTimeoutError*>(&e) != nullptr;
      failed[q] = 1;
      ranks.push_back(q);
      why << "\n  rank " << q << ": " << errorMessage(e);
      if (!waitAllRanks) break;  // gloo's semantics: report the first rank that failed
    }
  }
  std::vector<c10::intrusive_ptr<c10d::Work>> verdicts;
  for (int q = 1; q < p; ++q) verdicts.push_back(p2p_->submit(c10d::OpType::SEND, q, verdictTag, failed, failed));
  for (auto& v : verdicts) {
    try {
      v->wait();
    } catch (const std::exception&) {  // a rank that is gone needs no verdict
    }
  }
  if (ranks.empty()) return;
  const std::string message = c10::str("[Rank 0]: zcoll monitored_barrier: ", ranks.size() == 1 ? "rank " : "ranks ",
                                       c10::Join(", ", ranks), " failed to pass monitoredBarrier in ", timeout.count(),
                                       " ms", timedOut ? " (timed out waiting for them)" : "", why.str());
  if (timedOut) throw DistTimeoutError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, message);
  throw c10::DistBackendError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, message);
}

}  // namespace zcoll
