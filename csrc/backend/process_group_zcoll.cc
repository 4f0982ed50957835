#include "backend/process_group_zcoll.h"

#include <ATen/ATen.h>
#include <c10/core/StreamGuard.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cctype>

#include "transport/handshake.h"

namespace zcoll {
namespace {

// zcoll::Store over the group's c10d store (already prefixed per group by torch).
class C10dStore : public Store {
 public:
  explicit C10dStore(c10::intrusive_ptr<c10d::Store> s) : s_(std::move(s)) {}
  void set(const std::string& key, const std::vector<uint8_t>& value) override { s_->set(key, value); }
  std::vector<uint8_t> get(const std::string& key) override { return s_->get(key); }
  bool check(const std::string& key) override { return s_->check({key}); }

 private:
  c10::intrusive_ptr<c10d::Store> s_;
};

}  // namespace

ZcollWork::ZcollWork(c10d::OpType type, uint64_t seq, std::vector<at::Tensor> outputs, std::function<void()> run,
                     std::optional<c10::Stream> deviceStream)
    : c10d::Work(-1, type),
      seq_(seq),
      outputs_(std::move(outputs)),
      run_(std::move(run)),
      deviceStream_(deviceStream),
      future_(c10::make_intrusive<c10::ivalue::Future>(
          c10::ListType::create(c10::TensorType::get()),
          deviceStream ? std::vector<c10::Device>{deviceStream->device()} : std::vector<c10::Device>{})) {}

bool ZcollWork::isCompleted() { return future_->completed(); }
bool ZcollWork::isSuccess() const { return future_->completed() && !future_->hasError(); }
std::exception_ptr ZcollWork::exception() const { return future_->hasError() ? future_->exception_ptr() : nullptr; }

// The group timeout bounds the collective itself; `timeout` (0: none) bounds only this wait, as in
// gloo: past it the caller gets a DistTimeoutError while the collective goes on.
bool ZcollWork::wait(std::chrono::milliseconds timeout) {
  if (timeout != kNoTimeout) {  // c10d's (declared at global scope by Work.hpp)
    std::unique_lock<std::mutex> lock(doneMutex_);
    if (!doneCv_.wait_for(lock, timeout, [&] { return done_; }))
      throw DistTimeoutError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                             c10::str("zcoll: Work.wait(timeout=", timeout.count(), " ms) timed out: ",
                                      c10d::opTypeToString(opType_), " #", seq_, " has not finished (it goes on)"));
  }
  future_->waitAndThrow();
  return true;
}

std::exception_ptr ZcollWork::run() {
  try {
    run_();
    return nullptr;
  } catch (...) {
    return asTorchError(std::current_exception());
  }
}

void ZcollWork::finish(const std::exception_ptr& error) {
  if (error) {
    future_->setError(error);
  } else {
    // A device future records its event on this thread's current stream: make that zcoll's
    // stream, whose work for this collective has finished (the host saw it), so waiters depend
    // on nothing else (the thread's default stream would also hold the caller's later compute).
    c10::OptionalStreamGuard guard(deviceStream_);
    if (deviceStream_) {
      // The storages it synchronises, named here: left to the future, an undefined tensor
      // among the outputs would turn the completion into an error.
      std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages;
      for (const at::Tensor& t : outputs_)
        if (t.defined() && t.has_storage()) storages.push_back(t.storage().getWeakStorageImpl());
      future_->markCompleted(c10::IValue(outputs_), std::move(storages));
    } else {
      future_->markCompleted(c10::IValue(outputs_));
    }
  }
  {
    std::lock_guard<std::mutex> lock(doneMutex_);
    done_ = true;
  }
  doneCv_.notify_all();
}

ProcessGroupZcoll::ProcessGroupZcoll(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                     std::chrono::milliseconds timeout, BackendConfig config)
    : c10d::Backend(rank, size), config_(std::move(config)), log_{config_.logLevel, rank}, timeout_(timeout),
      c10dStore_(config_.keySpace.empty() ? store
                                          : c10::intrusive_ptr<c10d::Store>(
                                                c10::make_intrusive<c10d::PrefixStore>(config_.keySpace, store))),
      store_(std::make_unique<C10dStore>(c10dStore_)), topology_(size, config_.hostOf, config_.hostNames) {
  TransportOptions topt;
  topt.timeout = timeout;
  topt.socketIfname = config_.socketIfname;
  topt.socketFamily = config_.socketFamily;
  topt.connectTimeout = config_.connectTimeout;
  topt.storeHost = config_.storeHost;
  topt.net = config_.net;
  topt.ucxLibrary = config_.ucxLibrary;
  topt.shmRingBytes = config_.shmRingBytes;
  topt.shmSingleCopyBytes = config_.shmSingleCopyBytes;
  topt.hostOf = config_.hostOf;
  topt.hostNames = config_.hostNames;
  topt.failKey = "zcoll/failed";  // the group's: both transports, and the check below
  topt.logLevel = config_.logLevel;
  topt.heartbeatInterval = config_.heartbeatInterval;
  topt.heartbeatTimeout = config_.heartbeatTimeout;
  topt.checksum = config_.checksum;
  topt.testFlipBitAt = config_.testFlipBitAt;
  topt.testFault = config_.testFault;
  const std::string* forced[3] = {&config_.allreduceAlgo, &config_.reduceAlgo, &config_.reduceScatterAlgo};
  for (auto c : {Collective::kAllReduce, Collective::kReduce, Collective::kReduceScatter}) {
    const std::string& name = *forced[static_cast<int>(c)];
    if (name.empty()) continue;
    Algorithm& algo = forced_[static_cast<int>(c)];
    ZCOLL_CHECK_ARG(parseAlgorithm(name, &algo) && supports(c, algo), "zcoll: ", collectiveName(c), " has no algorithm '",
                    name, "'");
    hasForced_[static_cast<int>(c)] = true;
  }
  if (config_.compression != "none") {
    const std::string& name = config_.compression;
    using kernels::Codec;
    ZCOLL_CHECK_ARG(name == "fp16" || name == "bf16" || name == "int8" || name == "int4", "zcoll: unknown compression '",
                    name, "' (none, fp16, bf16, int8, int4)");
    compression_.codec = name == "fp16" ? Codec::kFp16 : name == "bf16" ? Codec::kBf16 : name == "int8" ? Codec::kInt8 : Codec::kInt4;
    compression_.block = config_.compressBlock;
    ZCOLL_CHECK_ARG(!kernels::isBlockwise(compression_.codec) || kernels::validBlock(compression_.block),
                    "zcoll: compression block must be a multiple of 16 in [16, 65536], got ", compression_.block);
    compressing_ = true;
  }
  // A rank that fails to join publishes why; every other rank raises it rather than wait: in a
  // bootstrap (Rendezvous), or here, where each rank waits for all to be ready.
  Rendezvous rendezvous(*store_, topt.failKey, "rank " + std::to_string(rank) + ": ");
  try {
    // The secret first, then the liveness channels: from then on a rank that dies while the
    // group forms fails every wait of the others at once (Rendezvous asks the liveness).
    topt.secret = groupSecret(*store_, "zcoll/secret", rank, deadline(), rendezvous);
    std::vector<bool> local(static_cast<size_t>(size));  // peers the liveness reaches by unix socket
    for (int p = 0; p < size; ++p)
      local[p] = config_.transport == "shm" || (config_.transport == "auto" && topology_.sameHost(rank, p));
    liveness_ = std::make_shared<Liveness>(*store_, "zcoll", rank, size, topt, std::move(local));
    topt.liveness = liveness_;
    if (config_.testFault == "exit_in_bootstrap") _exit(3);
    transport_ = makeTransport(config_.transport, *store_, "zcoll", rank, size, topt);
    const std::string name = transport_->name();
    log_.info("group of ", size, " ranks on ", topology_.describe(), "; transport ", name,
              name.rfind("shm+", 0) == 0 ? " (shm within a host, " + name.substr(4) + " between hosts)" : "");
    startP2P(topt);  // before the thread: if it throws, nothing is left running
    store_->set("zcoll/ready/" + std::to_string(rank), {1});
    const Deadline ready = deadline();
    Rendezvous joined(*store_, topt.failKey, "rank " + std::to_string(rank) + ": ", liveness_.get());
    for (int r = 0; r < size; ++r)
      joined.await("zcoll/ready/" + std::to_string(r), ready, "rank " + std::to_string(r) + " to join");
    setUpCostModel();  // every rank is connected: the probe and the agreement may use the transport
  } catch (const std::exception& e) {
    const std::string cause = rendezvous.cause();
    const bool another = !cause.empty() && cause != errorMessage(e);  // another rank failed first
    // Published before the liveness says goodbye, so the peers report this cause, not our leaving.
    if (!another) rendezvous.fail(errorMessage(e));
    closeP2PLane(p2p_);
    transport_.reset();
    liveness_.reset();
    if (another) {  // report that cause
      try {
        rendezvous.checkFailed();
      } catch (...) {
        std::rethrow_exception(asTorchError(std::current_exception()));
      }
    }
    std::rethrow_exception(asTorchError(std::current_exception()));
  }
  thread_ = std::thread([this] { progressLoop(); });
}

// The tuner's model must be the same on every rank, or ranks would pick different schedules for
// the same collective. tuning (zcoll/backend.py decides it for the whole group): "defaults": the
// configured model as it is (the compiled defaults; no message); "agree": rank 0's model
// everywhere (a tuning file, which each rank read for itself); "measure": rank 0's measurement.
void ProcessGroupZcoll::setUpCostModel() {
  const std::string name = transport_->name();
  ranksPerHost_ = name == "shm" ? getSize() : static_cast<int>(topology_.mostRanksOnAHost());
  model_ = config_.costModel;
  const std::string problem = model_.invalid();
  ZCOLL_CHECK_ARG(problem.empty(), "zcoll: rank ", getRank(), ": cost model (", model_.source, "): ", problem);
  const std::string& tuning = config_.tuning;
  ZCOLL_CHECK_ARG(tuning == "defaults" || tuning == "agree" || tuning == "measure",
                  "zcoll: tuning must be 'defaults', 'agree' or 'measure', got '", tuning, "'");
  if (tuning == "measure") {
    model_ = measureCostModel(*transport_, topology_, model_, deadline(), &measurement_);
    log_.info("cost model measured in ", formatSeconds(measurement_.seconds), " (",
              measurement_.shm ? "shm" : "", measurement_.shm && measurement_.net ? " and " : "",
              measurement_.net ? "network" : "", measurement_.shm || measurement_.net ? " link" : "no link",
              "; rank 0's numbers): ", model_.describe());
    return;
  }
  if (tuning == "agree" && agreeCostModel(*transport_, model_, deadline())) {
    model_.source = "rank 0's";
    log_.warn("the cost model (", config_.costModel.source, ") differs from rank 0's; using rank 0's: ",
              model_.describe());
  }
  log_.info("cost model (", model_.source, "): ", model_.describe());
}

ProcessGroupZcoll::~ProcessGroupZcoll() {
  endCollectives();
  thread_.join();
  closeP2PLane(p2p_);  // farewell to the peers, stop the p2p thread, abort its transport
  liveness_->leave();
}

void ProcessGroupZcoll::endCollectives() {
  bool pending;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    pending = running_ || !queue_.empty();
  }
  // A collective still running waits on peers that may never come: fail it (and the queued
  // ones) now rather than at the group timeout.
  if (pending) transport_->abort("zcoll: process group destroyed with collectives pending");
  cv_.notify_all();
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupZcoll::shrink(const std::vector<int64_t>& ranksToExclude, int shrinkFlags,
                                                            const c10::intrusive_ptr<c10d::Backend::Options>& optsOverride) {
  ZCOLL_CHECK_ARG(!optsOverride, "zcoll shrink: the shrunk group keeps this group's options (pass no pg_options)");
  std::vector<bool> excluded(static_cast<size_t>(getSize()), false);
  for (int64_t r : ranksToExclude) {
    ZCOLL_CHECK_ARG(r >= 0 && r < getSize(), "zcoll shrink: rank ", r, " is not a rank of a group of ", getSize());
    excluded[static_cast<size_t>(r)] = true;
  }
  ZCOLL_CHECK_ARG(!excluded[static_cast<size_t>(getRank())], "zcoll shrink: rank ", getRank(),
                  " is excluded and cannot join the shrunk group");
  if (shrinkFlags & 1) abort();
  // Survivors in rank order; hosts renumbered in order of each host's lowest surviving rank.
  BackendConfig c = config_;
  c.hostOf.clear();
  c.hostNames.clear();
  std::vector<int> newHost(static_cast<size_t>(topology_.hosts()), -1);
  int newRank = 0, survivors = 0;
  for (int r = 0; r < getSize(); ++r) {
    if (excluded[static_cast<size_t>(r)]) continue;
    if (r == getRank()) newRank = survivors;
    ++survivors;
    if (config_.hostOf.empty()) continue;
    int& h = newHost[static_cast<size_t>(config_.hostOf[r])];
    if (h < 0) {
      h = static_cast<int>(c.hostNames.size());
      c.hostNames.push_back(config_.hostNames[static_cast<size_t>(config_.hostOf[r])]);
    }
    c.hostOf.push_back(h);
  }
  c.keySpace.clear();  // this group's key space is unique, so is a prefix inside it
  auto store = c10::make_intrusive<c10d::PrefixStore>("zcoll/shrink/" + std::to_string(shrinks_++), c10dStore_);
  return c10::make_intrusive<ProcessGroupZcoll>(store, newRank, survivors, timeout_, std::move(c));
}

void ProcessGroupZcoll::runCollective(c10d::OpType type, uint64_t seq, const std::string& traceName,
                                      const std::function<void(uint64_t)>& run) {
  liveness_->entered(seq, c10d::opTypeToString(type));
  const bool trace = !traceName.empty();
  const auto start = trace ? Clock::now() : Clock::time_point{};
  const auto micros = [&] {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  };
  try {
    run(seq);
  } catch (const TimeoutError& e) {
    liveness_->finished(seq, true);
    // Ask every peer where it is (at most a second, and within the group timeout's order).
    const auto within = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), timeout_ / 2);
    if (trace) log_.trace(traceName, ": timed out after ", micros(), " us");
    throw TimeoutError(std::string(e.what()) + "; " + liveness_->survey(seq, within));
  } catch (...) {
    liveness_->finished(seq, true);
    if (trace) log_.trace(traceName, ": failed after ", micros(), " us");
    throw;
  }
  liveness_->finished(seq);
  if (trace) log_.trace(traceName, ": done in ", micros(), " us");
}

CollectiveArgs ProcessGroupZcoll::argsFor(OpCode opcode, DType dtype, RedOp op, uint64_t seq) const {
  CollectiveArgs a;
  a.opcode = opcode;
  a.dtype = dtype;
  a.op = op;
  a.seq = seq;
  a.chunkBytes = config_.chunkBytes ? config_.chunkBytes : size_t{1} << 19;
  a.deadline = deadline();
  a.workspace = &workspace_;
  return a;
}

// The two-level schedules run where the group spans hosts and some host has several ranks,
// unless ZCOLL_ALGO forces a flat algorithm; forcing "hierarchical" elsewhere gets the tuner's
// flat choice. Used by all-reduce, reduce and reduce-scatter; all-gather (twoLevelGather),
// broadcast and barrier go by the topology alone.
bool ProcessGroupZcoll::twoLevel(Collective c, bool forced, Algorithm forcedAlgo) const {
  // reduce-scatter (and all-gather) in two levels need equally many ranks on every host
  const bool fits = c != Collective::kReduceScatter || topology_.even();
  return topology_.twoLevel() && fits && (!forced || forcedAlgo == Algorithm::kHierarchical);
}

Algorithm ProcessGroupZcoll::choose(Collective c, size_t bytes, CollectiveArgs& a, TwoLevel* levels) {
  const int i = static_cast<int>(c);
  const bool forced = hasForced_[i] && forced_[i] != Algorithm::kHierarchical;
  if (twoLevel(c, hasForced_[i], forced_[i])) {
    const TwoLevelChoice tuned = tuneTwoLevel(model_, c, bytes, topology_, getRank());
    if (!config_.chunkBytes) a.chunkBytes = tuned.chunkBytes;
    *levels = tuned.algos;
    logChoice(collectiveName(c), bytes, Algorithm::kHierarchical, hasForced_[i], a, nullptr, &tuned);
    return Algorithm::kHierarchical;
  }
  // Without INFO logging (which reports predictions), a size seen before is the same choice.
  const bool logging = log_.enabled(log::Level::kInfo);
  CachedChoice& cached =
      choiceCache_[static_cast<size_t>(i) * kChoiceCacheWays + ((bytes * 0x9E3779B97F4A7C15ull) >> 60)];
  if (!logging && cached.bytes == bytes) {
    if (!config_.chunkBytes) a.chunkBytes = cached.chunkBytes;
    return cached.algorithm;
  }
  const TunerChoice tuned = tune(model_, c, bytes, getSize(), transport_->name(), ranksPerHost_);
  const Algorithm algo = forced ? forced_[i] : tuned.algorithm;
  if (!config_.chunkBytes) {  // a forced algorithm gets its own best chunk
    const Prediction* own = tuned.predictions.find(algo);
    a.chunkBytes = own ? own->chunkBytes : tuned.chunkBytes;
  }
  cached = {bytes, algo, a.chunkBytes};
  logChoice(collectiveName(c), bytes, algo, forced, a, &tuned.predictions);
  return algo;
}

// A forced all-reduce / reduce-scatter algorithm applies when it is ring, two-shot or
// hierarchical (Python refuses others for the all-reduce together with compression). Two
// levels: only the stage between hosts is compressed, with the schedule the tuner picks for the
// hosts.
Algorithm ProcessGroupZcoll::chooseCompressed(Collective collective, size_t bytes, CollectiveArgs& a,
                                              TwoLevel* levels) {
  const int i = static_cast<int>(collective);
  const std::string what = std::string(collectiveName(collective)) + "/" + config_.compression;
  if (levels && twoLevel(collective, hasForced_[i], forced_[i])) {
    const size_t most = topology_.mostRanksOnAHost();
    const size_t crossing = bytes / most;  // one rank's share crosses
    TwoLevelChoice tuned = tuneTwoLevel(model_, collective, bytes, topology_, getRank());
    tuned.inter = tuneCompressed(model_, compression_.codec, crossing, topology_.hosts(), "net", compression_.block,
                                 static_cast<int>(most));
    tuned.algos.inter = tuned.inter.algorithm;
    tuned.chunkBytes = std::min(tuned.inter.chunkBytes, tuned.intra.chunkBytes);
    if (!config_.chunkBytes) a.chunkBytes = tuned.chunkBytes;
    *levels = tuned.algos;
    logChoice(what.c_str(), bytes, Algorithm::kHierarchical, hasForced_[i], a, nullptr, &tuned);
    return Algorithm::kHierarchical;
  }
  const TunerChoice tuned =
      tuneCompressed(model_, compression_.codec, bytes, getSize(), transport_->name(), compression_.block, ranksPerHost_);
  const bool forced = hasForced_[i] && (forced_[i] == Algorithm::kRing || forced_[i] == Algorithm::kTwoShot);
  const Algorithm algo = forced ? forced_[i] : tuned.algorithm;
  Predictions all = tuned.predictions;
  if (forced && !all.find(algo)) {  // two-shot only under the error bound: predict the forced ring too
    all = predictCompressed(model_, compression_.codec, bytes, getSize(), transport_->name(), compression_.block,
                            ranksPerHost_, false);
    all.best = all.candidates[0].algorithm == tuned.algorithm ? 0 : 1;
  }
  if (!config_.chunkBytes) {
    const Prediction* own = all.find(algo);
    a.chunkBytes = own ? own->chunkBytes : tuned.chunkBytes;
  }
  logChoice(what.c_str(), bytes, algo, forced, a, &all);
  return algo;
}

// INFO: one line per distinct choice, not per call (training loops run the same sizes forever),
// with the model's predictions for the first size that made it. TRACE: every schedule run, with
// its sequence number, dtype and op.
void ProcessGroupZcoll::logChoice(const char* what, size_t bytes, Algorithm algo, bool forced, const CollectiveArgs& a,
                                  const Predictions* flat, const TwoLevelChoice* two) {
  if (!log_.enabled(log::Level::kInfo)) return;
  std::string how = algorithmName(algo);
  const TwoLevel* levels = two ? &two->algos : nullptr;
  if (levels)
    how += std::string(" over ") + topology_.describe() + ": " + algorithmName(levels->intra) + " within hosts, " +
           algorithmName(levels->inter) + " between them";
  const std::string choice = c10::str(how, " (", forced ? "ZCOLL_ALGO" : "tuner", "), chunk ", a.chunkBytes, " bytes (",
                                      config_.chunkBytes ? "ZCOLL_CHUNK_BYTES" : "tuner", ")");
  log_.trace(what, " #", a.seq, ": ", bytes, " bytes ", dtypeName(a.dtype), " ", redOpName(a.op), ": ", choice);
  if (!firstTime(std::string("choice:") + what + ": " + choice)) return;
  std::string predicted;
  if (flat) {
    predicted = "; predicted " + describePredictions(*flat, forced ? &algo : nullptr);
  } else if (two) {
    predicted = "; predicted " + formatSeconds(two->seconds()) + ": within hosts " +
                describePredictions(two->intra.predictions) + ", between hosts " +
                describePredictions(two->inter.predictions);
    if (two->allGatherSeconds > 0) predicted += ", all-gather within hosts " + formatSeconds(two->allGatherSeconds);
  }
  log_.info(what, " of ", bytes, " bytes over ", getSize(), " ranks (", transport_->name(), "): ", choice, predicted);
}

bool ProcessGroupZcoll::firstTime(const std::string& key) {
  std::lock_guard<std::mutex> lock(logMutex_);
  if (std::find(logged_.begin(), logged_.end(), key) != logged_.end()) return false;
  logged_.push_back(key);
  return true;
}

// After a failed collective the ranks are out of step: abort the transport so every later
// collective of the group fails at once with the first error.
void ProcessGroupZcoll::afterRun(const std::exception_ptr& error) {
  if (!error || !failure_.empty()) return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    failure_ = errorMessage(e);
  }
  liveness_->gaveUp(failure_);  // before the transports hang up on the peers
  transport_->abort("zcoll: an earlier collective failed: " + failure_);
}

void ProcessGroupZcoll::progressLoop() {
  while (true) {
    c10::intrusive_ptr<ZcollWork> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return (stop_ || !queue_.empty()) && !running_; });
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
      if (stop_) transport_->abort("zcoll: process group destroyed with collectives pending");
    }
    const std::exception_ptr error = work->run();
    afterRun(error);
    // The group is free before the caller learns its work is done: a caller that issues its next
    // synchronous collective at once must find it idle and run inline, not queue behind us.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
    }
    work->finish(error);
    std::lock_guard<std::mutex> lock(mutex_);
    finished_.push_back(std::move(work));  // our reference goes to the caller's thread to drop
  }
}

namespace {

// "broadcast #2 (1 tensor, 16 bytes Float, cpu)": a collective and its outputs, for its TRACE
// lines ("allreduce", lower case, as the choices' lines name it).
std::string traceNameOf(c10d::OpType type, uint64_t seq, const std::vector<at::Tensor>& outputs) {
  std::string name;
  for (char ch : c10d::opTypeToString(type)) name += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  name += " #" + std::to_string(seq);
  size_t bytes = 0, count = 0;
  const at::Tensor* first = nullptr;
  for (const auto& t : outputs) {
    if (!t.defined()) continue;
    bytes += t.numel() * t.element_size();
    ++count;
    if (!first) first = &t;
  }
  if (!first) return name;
  return c10::str(name, " (", count, count == 1 ? " tensor, " : " tensors, ", bytes, " bytes ",
                  c10::toString(first->scalar_type()), ", ", first->device(), ")");
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::enqueue(c10d::OpType type, std::vector<at::Tensor> outputs,
                                                          std::function<void(uint64_t seq)> run, bool asyncOp,
                                                          std::shared_ptr<DeviceStaging> staging) {
  const uint64_t seq = nextSeq_++;
  std::optional<c10::Stream> deviceStream;
  if (staging) {
    deviceStream = sideStreams_.get(staging->device());
    staging->inputsQueued(deviceStream);
    run = [run = std::move(run), staging](uint64_t s) {
      staging->beforeRun();
      try {
        run(s);
      } catch (...) {
        staging->drain();  // what it queued on the device may still use the tensors the work holds
        throw;
      }
      staging->afterRun();
    };
  }
  std::string traceName;  // the level is the group's for its lifetime: decided here, once
  if (log_.enabled(log::Level::kTrace)) traceName = traceNameOf(type, seq, outputs);
  auto work = c10::make_intrusive<ZcollWork>(
      type, seq, std::move(outputs),
      [this, run = std::move(run), seq, type, traceName = std::move(traceName)] {
        runCollective(type, seq, traceName, run);
      },
      deviceStream);
  std::vector<c10::intrusive_ptr<ZcollWork>> done;  // released here, on the caller's thread
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done.swap(finished_);
    if (!asyncOp && queue_.empty() && !running_) {
      running_ = true;
      lock.unlock();
      const std::exception_ptr error = work->run();
      afterRun(error);
      work->finish(error);
      lock.lock();
      running_ = false;
      // Wake the progress thread only if it has work waiting for us to finish: a needless wake
      // costs both a context switch and a core the peer rank may be spinning on.
      const bool queued = !queue_.empty();
      lock.unlock();
      if (queued) cv_.notify_all();
      return work;
    }
    queue_.push_back(work);
  }
  cv_.notify_all();
  return work;
}

void ProcessGroupZcoll::checkRoot(int64_t root, const char* op) const {
  ZCOLL_CHECK_ARG(root >= 0 && root < getSize(), "zcoll ", op, ": root ", root, " is not a rank of a group of ",
                  getSize());
}

// sendTo[p] / recvFrom[p]: contiguous buffers for rank p (undefined: nothing with p).
void ProcessGroupZcoll::exchange(const std::vector<at::Tensor>& sendTo, const std::vector<at::Tensor>& recvFrom,
                                 uint64_t tag) {
  const int me = getRank();
  const auto has = [](const std::vector<at::Tensor>& v, int p) { return p < static_cast<int>(v.size()) && v[p].defined(); };
  const bool toSelf = has(sendTo, me) && has(recvFrom, me);  // a copy, not a message through a ring
  if (toSelf)
    ZCOLL_CHECK(sendTo[me].nbytes() == recvFrom[me].nbytes(), "rank ", me, " sends ", sendTo[me].nbytes(),
                " bytes to itself but expects ", recvFrom[me].nbytes(), " (its own split sizes differ)");
  std::vector<RequestId> reqs;
  for (int p = 0; p < getSize(); ++p) {
    if (p == me && toSelf) continue;
    if (has(recvFrom, p)) reqs.push_back(transport_->irecv(p, tag, recvFrom[p].data_ptr(), recvFrom[p].nbytes()));
    if (has(sendTo, p)) reqs.push_back(transport_->isend(p, tag, sendTo[p].data_ptr(), sendTo[p].nbytes()));
  }
  if (toSelf) {
    // One pass of progress first, so our messages (on shm the descriptors peers read from) are
    // out before the copy to ourselves and the peers' part moves while we copy.
    if (!reqs.empty()) transport_->test(reqs.front());
    std::memmove(recvFrom[me].data_ptr(), sendTo[me].data_ptr(), sendTo[me].nbytes());
  }
  const Deadline d = deadline();
  for (RequestId r : reqs) transport_->wait(r, d);
}

}  // namespace zcoll
