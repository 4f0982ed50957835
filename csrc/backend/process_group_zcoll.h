// ProcessGroupZcoll: zcoll as a torch.distributed backend (c10d::Backend).
//
// Three phases per collective, as in ProcessGroupGloo: the caller's thread checks arguments and
// builds a ZcollWork; the group's progress thread runs works in issue order on the transport;
// the caller waits on the Work or its Future (DDP comm hooks use the Future). Errors raised on
// the progress thread are set on the future and rethrown by wait().
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/compressed.h"
#include "algorithms/tuner.h"
#include "backend/device_staging.h"
#include "backend/errors.h"
#include "kernels/common/dtypes.h"
#include "transport/liveness.h"
#include "transport/topology.h"
#include "transport/transport.h"
#include "util/log.h"

namespace zcoll {

// Per-group configuration, bound to Python as zcoll._C.BackendConfig: zcoll/backend.py fills one
// from the resolved zcoll.Options (pg_options over ZCOLL_* env) and hands it to the constructor.
struct BackendConfig {
  std::string transport = "auto";  // "auto" (a transport per peer by host), "shm", "tcp" or "ucx"
  std::string net = "tcp";         // auto's transport between hosts: "tcp" or "ucx" (ZCOLL_NET)
  std::string ucxLibrary;          // libucp to load for ucx ("": the loader's search path)
  size_t chunkBytes = 0;           // 0: the tuner's choice per collective and size
  // The tuner's cost model (algorithms/cost_model.h): the defaults, or a tuning file's numbers
  // (ZCOLL_TUNING_FILE, read by zcoll/tuning.py), and what the group does with it at creation
  // (zcoll/backend.py decides for all ranks alike): "defaults": use it as given (every rank has
  // the same); "agree": every rank takes rank 0's; "measure" (ZCOLL_TUNING=measure): rank 0
  // measures alpha, beta and gamma of the group's links and every rank takes that.
  CostModel costModel = CostModel::defaults();
  std::string tuning = "defaults";
  // Forced algorithm per collective ("" = the tuner's), from ZCOLL_ALGO / Options.algo.
  std::string allreduceAlgo, reduceAlgo, reduceScatterAlgo;
  // Compressed all-reduce (ZCOLL_COMPRESS*): "none" or a codec; floating SUM/AVG/PREMUL_SUM
  // tensors of at least compressMinBytes only.
  std::string compression = "none";
  size_t compressMinBytes = 65536;
  int compressBlock = 256;
  size_t shmRingBytes = 0;  // 0: the group sizes its rings (transport/shm)
  int64_t shmSingleCopyBytes = kAutoShmSingleCopyBytes;  // 0: every shm message through the rings
  std::string socketIfname;
  int socketFamily = 0;  // AF_INET / AF_INET6 first; 0: as the store host
  std::chrono::milliseconds connectTimeout{std::chrono::seconds(20)};  // ZCOLL_CONNECT_TIMEOUT
  // Liveness heartbeats (ZCOLL_HEARTBEAT_INTERVAL / ZCOLL_HEARTBEAT_TIMEOUT, docs/failures.md).
  std::chrono::milliseconds heartbeatInterval{std::chrono::seconds(1)};
  std::chrono::milliseconds heartbeatTimeout{std::chrono::seconds(30)};
  std::string storeHost;
  // The host of each rank (numbered in order of each host's lowest rank) and the hosts' names,
  // from every rank's host identity (zcoll/backend.py).
  std::vector<int> hostOf;
  std::vector<std::string> hostNames;
  log::Level logLevel = log::Level::kWarn;  // ZCOLL_DEBUG (util/log.h)
  // Test-only (ZCOLL_TEST_DEVICE_PATH): CPU tensors take the device-tensor path (host staging,
  // the codec work on an emulated device), so GPU-less machines test it.
  bool stageCpu = false;
  // Point-to-point messages held before their receive is posted, in bytes, at most
  // (ZCOLL_P2P_MAX_UNEXPECTED_BYTES).
  size_t p2pMaxUnexpectedBytes = size_t{1} << 30;
  bool checksum = false;  // ZCOLL_CHECKSUM: CRC32C on every message (TransportOptions::checksum)
  int64_t testFlipBitAt = -1;  // test-only (ZCOLL_TEST_FLIP_BIT): TransportOptions::testFlipBitAt
  // Where this group's keys live in its store (a prefix; "": the store as given). torch reuses a
  // group's name, and so its store prefix, for a later group (after shrink_group, for one), so
  // zcoll/backend.py numbers the groups made under one prefix: no group reads another's keys.
  std::string keySpace;
  // Test-only (ZCOLL_TEST_FAULT): "exit_in_bootstrap" makes this rank _exit(3) once its liveness
  // channels are up, "exit_in_shm_bootstrap" once its shm segment is published, so tests see a
  // rank die while the group forms.
  std::string testFault;
};

// A collective's Work. With `deviceStream` (zcoll's stream of the collective's device, for device
// tensors) its future is a device future of that device: completing it records an event on that
// stream, after zcoll's (already finished) device work, and a waiter's current stream waits on
// it; then() callbacks run on pool streams, and their futures carry events of their own, as
// torch's device futures do (docs/architecture.md, "Device tensors").
class ZcollWork : public c10d::Work {
 public:
  ZcollWork(c10d::OpType type, uint64_t seq, std::vector<at::Tensor> outputs, std::function<void()> run,
            std::optional<c10::Stream> deviceStream = std::nullopt);
  bool isCompleted() override;
  bool isSuccess() const override;
  std::exception_ptr exception() const override;
  std::vector<at::Tensor> result() override { return outputs_; }
  bool wait(std::chrono::milliseconds timeout) override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }
  // The group's sequence number of this collective (0 for the first).
  uint64_t getSequencenumber() const override { return seq_; }

  // Runs the collective (on the progress thread or inline) and returns its error, if any; the
  // future is completed separately, by finish(), once the group is ready for the next collective.
  std::exception_ptr run();
  void finish(const std::exception_ptr& error);

 private:
  const uint64_t seq_;
  std::vector<at::Tensor> outputs_;
  std::function<void()> run_;
  std::optional<c10::Stream> deviceStream_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
  std::mutex doneMutex_;  // wait(timeout)'s: finish() sets done_
  std::condition_variable doneCv_;
  bool done_ = false;
};

// Point-to-point runs beside the collectives on a transport and thread of its own
// (backend/point_to_point.cc); the group only owns it.
class P2PLane;
// Closes the lane (farewell, thread stopped, transport aborted), then drops the group's reference:
// a caller still waiting on one of its Works holds another until its wait returns.
void closeP2PLane(std::shared_ptr<P2PLane>& lane);

class ProcessGroupZcoll : public c10d::Backend {
 public:
  ProcessGroupZcoll(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                    std::chrono::milliseconds timeout, BackendConfig config);
  ~ProcessGroupZcoll() override;

  const std::string getBackendName() const override { return "zcoll"; }
  const BackendConfig& config() const { return config_; }
  const log::Logger& logger() const { return log_; }
  const char* transportName() const { return transport_->name(); }
  // This rank's shm rings: the collectives' transport, then the point-to-point lane's.
  std::array<Transport::SharedMemoryUse, 2> sharedMemory() const;
  const Topology& topology() const { return topology_; }
  // The cost model the tuner uses (the same on every rank) and, if it was measured, how.
  const CostModel& costModel() const { return model_; }
  const Measurement& measurement() const { return measurement_; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                     const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(std::vector<at::Tensor>& outputs,
                                                                 std::vector<at::Tensor>& inputs,
                                                                 const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                     std::vector<at::Tensor>& inputs,
                                                     const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(std::vector<at::Tensor>& outputs,
                                                                 std::vector<at::Tensor>& inputs,
                                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& outputSplitSizes,
                                               std::vector<int64_t>& inputSplitSizes,
                                               const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;
  // gloo's semantics: rank 0 raises naming the ranks that did not arrive within opts.timeout (the
  // first of them, or all with waitAllRanks); the ranks that did arrive raise too, at once.
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks = false) override;
  // Every rank starts at 0 and counts the same collectives (point-to-point not included): the
  // number of collectives issued so far, as TORCH_DISTRIBUTED_DEBUG=DETAIL's checks compare it.
  void setSequenceNumberForGroup() override {}
  uint64_t getSequenceNumberForGroup() override { return nextSeq_.load(); }

  // zcoll's own: a compressed all-reduce (SUM, or AVG when `average`) with error feedback, whose
  // float32 `residual` (t.numel() elements) carries the rank's state from call to call.
  c10::intrusive_ptr<c10d::Work> allreduceWithFeedback(const at::Tensor& t, const at::Tensor& residual, bool average);
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;
  // destroy_process_group(): ends point-to-point (farewell to the peers) even while something
  // still holds the group, and fails the collectives still pending; the collectives' thread
  // ends in the destructor.
  void shutdown() override;
  // torch's abort (_abort_process_group, shrink_group with SHRINK_ABORT): every pending and
  // later operation of this rank fails at once, the peers are told this rank left, nothing
  // waits on a peer. The group is unusable afterwards.
  void abort() override;
  // torch.distributed.shrink_group: the ranks not in `ranksToExclude` (group ranks) form a new
  // group, rank order kept, with this group's configuration, bootstrapped through this group's
  // store under a fresh prefix. Called by every survivor, never by an excluded rank. With
  // shrinkFlags & 1 (SHRINK_ABORT) this group is aborted first. No `override`: torch releases
  // before shrink_group's arrival lack these virtuals, and the Python binding calls them directly.
  bool supportsShrinking() const { return true; }
  c10::intrusive_ptr<c10d::Backend> shrink(const std::vector<int64_t>& ranksToExclude, int shrinkFlags = 0,
                                           const c10::intrusive_ptr<c10d::Backend::Options>& optsOverride = nullptr);

 private:
  // Runs `run` as the group's next collective: on the progress thread, or right here when the
  // caller will wait anyway (asyncOp false) and nothing is queued or running, which saves the
  // hand-off to another thread (tens of microseconds on a busy 2-core machine).
  // With `staging` (device tensors), `run` works on its host copies, between its beforeRun and
  // afterRun, and its device work goes on the group's stream for the device (sideStreams_).
  c10::intrusive_ptr<c10d::Work> enqueue(c10d::OpType type, std::vector<at::Tensor> outputs,
                                         std::function<void(uint64_t seq)> run, bool asyncOp,
                                         std::shared_ptr<DeviceStaging> staging = nullptr);
  void afterRun(const std::exception_ptr& error);
  // No collective is issued any more; one still pending fails at once (its peers may never come).
  void endCollectives();
  // Runs collective #seq's body, telling the liveness where this rank is; a timeout's error is
  // extended with where every rank is (hang forensics, Liveness::survey).
  // `traceName`: how TRACE lines name the collective and its outputs ("": TRACE is off).
  void runCollective(c10d::OpType type, uint64_t seq, const std::string& traceName,
                     const std::function<void(uint64_t)>& run);
  // Broadcast, reduce, gather and scatter: every rank must name the same root; a tiny
  // all-reduce of (root, -root) by MAX proves it before any data moves.
  void checkSameRoot(int root, OpCode opcode, uint64_t seq, const char* op);
  void progressLoop();
  // Bodies that run on the progress thread (one tensor each; coalesced calls loop over them).
  void allreduceNow(const at::Tensor& t, RedOp op, DType dtype, double premul, uint64_t seq);
  c10::intrusive_ptr<c10d::Work> sparseAllreduce(const at::Tensor& t, const c10d::AllreduceOptions& opts);
  // Whether `collective` (torch's name: all_reduce, reduce_scatter, all_gather_into_tensor) of
  // `bytes` of `dtype` runs compressed: with compression on, floating tensors of at least
  // compressMinBytes, reduced (`op` given) by SUM, AVG or PREMUL_SUM. ZCOLL_DEBUG=INFO logs each
  // reason a tensor stays exact once per group, and the first compressed call of each collective.
  bool compresses(const char* collective, DType dtype, size_t bytes, std::optional<RedOp> op);
  // For collectives that never compress (reduce, the list all_gather): says so once under
  // ZCOLL_DEBUG=INFO when compression is on and the tensor would be compressed by an all-reduce.
  void neverCompressed(const char* collective, DType dtype, std::optional<RedOp> op, const char* instead);
  // True the first time `key` is seen by this group (for logging a thing once).
  bool firstTime(const std::string& key);
  float* float32View(const at::Tensor& buf, DType dtype, size_t n);
  CollectiveArgs compressedArgs(OpCode opcode, DType dtype, RedOp op, uint64_t seq, Compression& c);
  // `buf` (contiguous, already premultiplied) through the compressed schedule, in float32.
  void compressedAllreduceNow(const at::Tensor& buf, RedOp op, DType dtype, uint64_t seq, float* residual = nullptr);
  // Device tensors (docs/architecture.md, "Device tensors"): nullptr for plain CPU tensors.
  std::shared_ptr<DeviceStaging> stagingFor(const std::vector<at::Tensor>& tensors, const char* op) const {
    return DeviceStaging::forTensors(tensors, config_.stageCpu, op);
  }
  // The same for a call that reads `ins` and writes `outs`, which a staging replaces by their
  // host copies (the body then uses those; the work still reports the caller's tensors).
  std::shared_ptr<DeviceStaging> stageCall(std::vector<at::Tensor>& ins, std::vector<at::Tensor>& outs,
                                           const char* op) const {
    std::vector<at::Tensor> all = ins;
    all.insert(all.end(), outs.begin(), outs.end());
    auto staging = stagingFor(all, op);
    if (staging) staging->replaceWithHostCopies(ins, outs);
    return staging;
  }
  // The codec device of `stream` (none: the emulated one of staged CPU tensors).
  kernels::CodecDevice& codecDeviceFor(const std::optional<c10::Stream>& stream);
  // The compressed collectives with their codec work on the device, on zcoll's stream (the
  // staging's workStream()): `input` is the float32 copy taken (in the caller's stream order)
  // when the collective was called; the result goes to `out`. They run inside the staging's
  // beforeRun and afterRun.
  void deviceAllreduceNow(const DeviceStaging& s, const at::Tensor& input, const at::Tensor& out, RedOp op,
                          DType dtype, uint64_t seq, const at::Tensor& residual);
  void deviceReduceScatterNow(const DeviceStaging& s, const at::Tensor& input, const at::Tensor& out, RedOp op,
                              DType dtype, uint64_t seq);
  // The all-gather's copy, `all`, is the whole float32 gather buffer with this rank's part.
  void deviceGatherNow(const DeviceStaging& s, const at::Tensor& all, const at::Tensor& out, DType dtype,
                       uint64_t seq);
  // What ZCOLL_DEBUG logs for a compressed collective on a device.
  std::string onDevice(const char* collective, const DeviceStaging& s) const;
  // A contiguous flat copy of `t` in scratch_ (valid until the next scratch use).
  at::Tensor scratchCopy(const at::Tensor& t);
  void reduceScatterNow(const at::Tensor& output, at::Tensor scratch, RedOp op, DType dtype, double premul,
                        uint64_t seq);
  void gatherInto(const at::Tensor& flatOutput, const at::Tensor& input, uint64_t seq, bool mayCompress = false);
  void gatherIntoList(const std::vector<at::Tensor>& outputs, const at::Tensor& input, uint64_t seq);
  void gatherIntoTensor(const at::Tensor& output, const at::Tensor& input, uint64_t seq);
  c10::intrusive_ptr<c10d::Work> reduceScatterFlat(c10d::OpType type, at::Tensor output,
                                                   const std::vector<at::Tensor>& inputs,
                                                   std::function<at::Tensor()> flatInput,
                                                   const c10d::ReduceOp& reduceOp, bool asyncOp);
  Deadline deadline() const { return Clock::now() + timeout_; }
  // The arguments of a schedule run now: algorithm and chunk from the config or the tuner
  // (logged under ZCOLL_DEBUG=INFO the first time each choice is made, under TRACE every time),
  // the group's workspace.
  CollectiveArgs argsFor(OpCode opcode, DType dtype, RedOp op, uint64_t seq) const;
  // kHierarchical (with `levels` filled) where the group spans hosts (twoLevel()).
  Algorithm choose(Collective c, size_t bytes, CollectiveArgs& a, TwoLevel* levels = nullptr);
  Algorithm chooseCompressed(Collective collective, size_t bytes, CollectiveArgs& a, TwoLevel* levels = nullptr);
  bool twoLevel(Collective c, bool forced, Algorithm forcedAlgo) const;
  // All-gathers (no tuner choice) run in two levels wherever reduce-scatters would.
  bool twoLevelGather() const { return topology_.twoLevel() && topology_.even(); }
  // `flat` / `two`: the tuner's predictions, logged next to the choice.
  void logChoice(const char* what, size_t bytes, Algorithm algo, bool forced, const CollectiveArgs& a,
                 const Predictions* flat = nullptr, const TwoLevelChoice* two = nullptr);
  // Agrees on (or measures) the cost model with the other ranks; part of the constructor.
  void setUpCostModel();
  void checkRoot(int64_t root, const char* op) const;
  // Posts one message per (peer, buffer) pair and waits for all of them.
  void exchange(const std::vector<at::Tensor>& sendTo, const std::vector<at::Tensor>& recvFrom, uint64_t tag);

  BackendConfig config_;
  log::Logger log_;  // config_.logLevel, this group's rank
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> c10dStore_;  // the group's (shrink builds the next group's from it)
  uint64_t shrinks_ = 0;                       // groups shrunk from this one so far
  std::unique_ptr<Store> store_;
  Topology topology_;
  CostModel model_;          // config_.costModel, agreed or measured (setUpCostModel)
  Measurement measurement_;  // what the probe measured (tuning "measure")
  int ranksPerHost_ = 1;     // ranks on the busiest host: how many share its cores
  // The last flat choices per collective, by size (direct-mapped): evaluating the model costs
  // ~0.3 us, a twentieth of a small inline all-reduce; training loops repeat their sizes. Used
  // by the executing collective only (see running_), so unlocked.
  struct CachedChoice {
    size_t bytes = ~size_t{0};
    Algorithm algorithm = Algorithm::kRing;
    size_t chunkBytes = 0;
  };
  static constexpr size_t kChoiceCacheWays = 16;
  std::array<CachedChoice, 3 * kChoiceCacheWays> choiceCache_{};
  // The group's peer liveness, shared by both lanes' transports (transport/liveness.h).
  std::shared_ptr<Liveness> liveness_;
  std::unique_ptr<Transport> transport_;
  std::atomic<uint64_t> nextSeq_{0};
  // monitoredBarrier's p2p tags: two per call, above every tag a user can pass (an int).
  static constexpr int64_t kMonitoredBarrierTags = int64_t{1} << 40;
  uint64_t monitoredBarriers_ = 0;
  Algorithm forced_[3];       // per Collective, valid where hasForced_
  bool hasForced_[3] = {false, false, false};
  std::mutex logMutex_;
  std::vector<std::string> logged_;  // what ZCOLL_DEBUG=INFO has reported once (firstTime)
  // Scratch of the schedules; only the one executing collective uses it (see running_).
  mutable Workspace workspace_;
  // The backend's own working copies (reduce's accumulator, reduce_scatter's input, the list
  // all-gather's flat output), kept from call to call: a fresh tensor of tens of MiB costs its
  // page faults on every call. Only the executing collective uses it.
  Workspace scratch_;
  bool compressing_ = false;
  Compression compression_;  // issue order; the progress thread runs works in this order

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<c10::intrusive_ptr<ZcollWork>> queue_;
  // Finished works are released by the caller's next enqueue or the destructor, never by the
  // progress thread: dropping the last reference to a Python-visible tensor needs the GIL,
  // which a Python thread may hold while it waits for this thread (destroy_process_group).
  std::vector<c10::intrusive_ptr<ZcollWork>> finished_;
  bool stop_ = false;
  bool running_ = false;  // a work is executing (progress thread or inline)
  std::string failure_;   // the first failed collective's error
  std::thread thread_;
  std::unique_ptr<kernels::CodecDevice> codecDevice_;  // of codecStream_ (none: emulated)
  std::optional<c10::Stream> codecStream_;
  SideStreams sideStreams_;  // zcoll's stream per device, for the collectives' device work
  std::shared_ptr<P2PLane> p2p_;  // started by startP2P (point_to_point.cc)
  // A receive on the p2p lane: into `t` directly or through a host buffer (a device tensor's
  // through its staging).
  c10::intrusive_ptr<c10d::Work> recvInto(c10d::OpType type, int peer, int tag, const at::Tensor& t);
  void startP2P(const TransportOptions& collectiveOptions);
};

}  // namespace zcoll
