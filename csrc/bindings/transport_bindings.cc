// Python surface of the torch-free transports, for tests: ranks in separate processes drive
// isend/irecv/wait directly, bootstrapped through any store with set/get (e.g. torch's).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/compressed.h"
#include "algorithms/hierarchical.h"
#include "algorithms/tuner.h"
#include "bindings/names.h"
#include "kernels/cpu/emulated_codec_device.h"
#include "transport/liveness.h"
#include "transport/tcp/address.h"
#include "transport/topology.h"
#include "transport/transport.h"

namespace py = pybind11;

namespace {

// zcoll::Store over a Python object with set(key, bytes) and get(key) -> bytes.
class PyStore : public zcoll::Store {
 public:
  explicit PyStore(py::object obj) : obj_(std::move(obj)) {}
  ~PyStore() override {
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  }
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    py::gil_scoped_acquire gil;
    obj_.attr("set")(key, py::bytes(reinterpret_cast<const char*>(value.data()), value.size()));
  }
  std::vector<uint8_t> get(const std::string& key) override {
    py::gil_scoped_acquire gil;
    std::string s = obj_.attr("get")(key).cast<std::string>();
    return {s.begin(), s.end()};
  }
  bool check(const std::string& key) override {
    py::gil_scoped_acquire gil;
    return obj_.attr("check")(std::vector<std::string>{key}).cast<bool>();
  }

 private:
  py::object obj_;
};

zcoll::Deadline deadlineIn(double seconds) {
  return zcoll::Clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

// A transport plus the arrays its pending requests point into (kept alive until waited for).
class PyTransport {
 public:
  PyTransport(const std::string& kind, py::object store, const std::string& prefix, int rank, int size,
              double timeoutSeconds, std::string socketIfname, std::string storeHost, size_t shmRingBytes,
              std::vector<int> hostOf, int socketFamily, double connectTimeout, bool liveness,
              double heartbeatInterval, double heartbeatTimeout, std::string net, std::string ucxLibrary,
              int64_t shmSingleCopyBytes)
      : store_(std::make_unique<PyStore>(std::move(store))), topology_(size, hostOf) {
    zcoll::TransportOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000));
    options.socketIfname = std::move(socketIfname);
    options.socketFamily = socketFamily;
    options.storeHost = std::move(storeHost);
    options.shmRingBytes = shmRingBytes;
    options.shmSingleCopyBytes = shmSingleCopyBytes;
    options.hostOf = std::move(hostOf);
    options.connectTimeout = std::chrono::milliseconds(static_cast<int64_t>(connectTimeout * 1000));
    options.heartbeatInterval = std::chrono::milliseconds(static_cast<int64_t>(heartbeatInterval * 1000));
    options.heartbeatTimeout = std::chrono::milliseconds(static_cast<int64_t>(heartbeatTimeout * 1000));
    options.net = std::move(net);
    options.ucxLibrary = std::move(ucxLibrary);
    py::gil_scoped_release release;
    if (liveness) {  // as the backend makes it: unix sockets where shm carries the peer, else tcp
      std::vector<bool> local(static_cast<size_t>(size));
      for (int p = 0; p < size; ++p) local[p] = kind == "shm" || (kind == "auto" && topology_.sameHost(rank, p));
      liveness_ = std::make_shared<zcoll::Liveness>(*store_, prefix + "/liveness", rank, size, options, std::move(local));
      options.liveness = liveness_;
    }
    transport_ = zcoll::makeTransport(kind, *store_, prefix, rank, size, options);
  }

  zcoll::RequestId isend(int peer, uint64_t tag, py::array data, bool operand) {
    const size_t bytes = static_cast<size_t>(data.nbytes());
    const auto id = operand ? transport_->isendOperand(peer, tag, data.data(), bytes)
                            : transport_->isend(peer, tag, data.data(), bytes);
    pending_[id] = std::move(data);
    return id;
  }

  zcoll::RequestId irecv(int peer, uint64_t tag, py::array data) {
    if (!data.writeable()) throw std::invalid_argument("irecv needs a writeable array");
    const auto id = transport_->irecv(peer, tag, data.mutable_data(), static_cast<size_t>(data.nbytes()));
    pending_[id] = std::move(data);
    return id;
  }

  void wait(zcoll::RequestId id, double timeoutSeconds) {
    const auto deadline = deadlineIn(timeoutSeconds);
    {
      py::gil_scoped_release release;
      transport_->wait(id, deadline);
    }
    pending_.erase(id);
  }

  // irecvConsume for tests: returns the payload and the (offset, bytes) pieces it came in.
  py::tuple recvPieces(int peer, uint64_t tag, size_t bytes, double timeoutSeconds) {
    std::vector<char> got(bytes);
    std::vector<std::pair<size_t, size_t>> pieces;
    {
      py::gil_scoped_release release;
      const auto id = transport_->irecvConsume(peer, tag, bytes, [&](size_t off, const void* src, size_t n) {
        std::memcpy(got.data() + off, src, n);
        pieces.emplace_back(off, n);
      });
      transport_->wait(id, deadlineIn(timeoutSeconds));
    }
    return py::make_tuple(py::bytes(got.data(), got.size()), pieces);
  }

  bool test(zcoll::RequestId id) {
    bool done;
    {
      py::gil_scoped_release release;
      done = transport_->test(id);
    }
    if (done) pending_.erase(id);
    return done;
  }

  zcoll::Transport& transport() { return *transport_; }
  const zcoll::Topology& topology() const { return topology_; }

 private:
  std::unique_ptr<PyStore> store_;
  zcoll::Topology topology_;
  std::shared_ptr<zcoll::Liveness> liveness_;  // outlives the transport that asks it
  std::unique_ptr<zcoll::Transport> transport_;
  std::map<zcoll::RequestId, py::array> pending_;
};

zcoll::Algorithm algorithmOf(const std::string& name) {
  zcoll::Algorithm algo;
  if (!zcoll::parseAlgorithm(name, &algo))
    throw std::invalid_argument("unknown algorithm '" + name + "' (ring, tree, oneshot, twoshot)");
  return algo;
}

// A writeable C-contiguous array whose items have the dtype's size: what schedules run on.
void* scheduleBuffer(py::array& data, const zcoll::CollectiveArgs& a, const char* what) {
  if (!data.writeable() || !(data.flags() & py::array::c_style) ||
      static_cast<size_t>(data.itemsize()) != zcoll::dtypeSize(a.dtype))
    throw std::invalid_argument(std::string(what) + " needs a writeable contiguous array of " +
                                zcoll::dtypeName(a.dtype) + " storage");
  return data.mutable_data();
}

zcoll::CollectiveArgs argsOf(zcoll::OpCode opcode, const std::string& dtype, const std::string& op, uint64_t seq,
                             size_t chunkBytes, double timeoutSeconds) {
  zcoll::CollectiveArgs a;
  a.opcode = opcode;
  a.dtype = zcoll::bindings::parseDType(dtype);
  a.op = zcoll::bindings::parseRedOp(op);
  a.seq = seq;
  a.chunkBytes = chunkBytes;
  a.deadline = deadlineIn(timeoutSeconds);
  return a;
}

// The schedules of csrc/algorithms on a transport, in place on contiguous arrays (PREMUL_SUM
// inputs must be scaled first, as the backend does).
void allReducePy(PyTransport& t, py::array data, const std::string& dtype, const std::string& op,
                 const std::string& algo, uint64_t seq, size_t chunkBytes, double timeoutSeconds) {
  const auto a = argsOf(zcoll::OpCode::kAllReduce, dtype, op, seq, chunkBytes, timeoutSeconds);
  const auto algorithm = algorithmOf(algo);
  void* ptr = scheduleBuffer(data, a, "all_reduce");
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  zcoll::allReduce(t.transport(), ptr, count, a, algorithm);
}

// The two-level schedules over the transport's hosts (host_of); `intra` is this rank's host's.
zcoll::TwoLevel twoLevelOf(const PyTransport& t, const std::string& intra, const std::string& inter) {
  if (!t.topology().twoLevel())
    throw std::invalid_argument("a hierarchical schedule needs ranks on several hosts, some sharing one (host_of)");
  return {algorithmOf(intra), algorithmOf(inter)};
}

void hierarchicalAllReducePy(PyTransport& t, py::array data, const std::string& dtype, const std::string& op,
                             const std::string& intra, const std::string& inter, uint64_t seq, size_t chunkBytes,
                             double timeoutSeconds) {
  const auto a = argsOf(zcoll::OpCode::kAllReduce, dtype, op, seq, chunkBytes, timeoutSeconds);
  const auto algos = twoLevelOf(t, intra, inter);
  void* ptr = scheduleBuffer(data, a, "hierarchical_all_reduce");
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  zcoll::hierarchicalAllReduce(t.transport(), t.topology(), ptr, count, a, algos);
}

// Per-rank slices of `counts` as begin/end arrays covering `total` elements.
void slicesOf(const std::vector<size_t>& counts, size_t ranks, size_t total, std::vector<size_t>& b,
              std::vector<size_t>& e, const char* what);

void hierarchicalCollectivePy(PyTransport& t, py::array data, const std::string& collective,
                              const std::vector<size_t>& counts, int root, const std::string& dtype,
                              const std::string& op, const std::string& intra, const std::string& inter, uint64_t seq,
                              size_t chunkBytes, double timeoutSeconds) {
  const zcoll::OpCode opcode = collective == "reduce_scatter" ? zcoll::OpCode::kReduceScatter
                               : collective == "all_gather"   ? zcoll::OpCode::kAllGather
                                                              : zcoll::OpCode::kReduce;
  if (collective != "reduce_scatter" && collective != "all_gather" && collective != "reduce")
    throw std::invalid_argument("hierarchical: unknown collective '" + collective + "' (reduce_scatter, all_gather, reduce)");
  const auto a = argsOf(opcode, dtype, op, seq, chunkBytes, timeoutSeconds);
  const auto algos = collective == "all_gather" ? zcoll::TwoLevel{} : twoLevelOf(t, intra, inter);
  void* ptr = scheduleBuffer(data, a, "hierarchical");
  const size_t n = static_cast<size_t>(data.size());
  std::vector<size_t> b, e;
  if (collective != "reduce") slicesOf(counts, static_cast<size_t>(t.transport().size()), n, b, e, "hierarchical");
  py::gil_scoped_release release;
  if (collective == "reduce_scatter")
    zcoll::hierarchicalReduceScatter(t.transport(), t.topology(), ptr, b.data(), e.data(), a, algos);
  else if (collective == "all_gather")
    zcoll::hierarchicalAllGather(t.transport(), t.topology(), ptr, b.data(), e.data(), a);
  else
    zcoll::hierarchicalReduce(t.transport(), t.topology(), ptr, n, root, a, algos);
}

void reduceScatterPy(PyTransport& t, py::array data, const std::vector<size_t>& counts, const std::string& dtype,
                     const std::string& op, const std::string& algo, uint64_t seq, size_t chunkBytes,
                     double timeoutSeconds) {
  const auto a = argsOf(zcoll::OpCode::kReduceScatter, dtype, op, seq, chunkBytes, timeoutSeconds);
  const auto algorithm = algorithmOf(algo);
  void* ptr = scheduleBuffer(data, a, "reduce_scatter");
  const auto size = static_cast<size_t>(t.transport().size());
  std::vector<size_t> b(size), e(size);
  size_t total = 0;
  for (size_t r = 0; r < size && counts.size() == size; total += counts[r], ++r) b[r] = total, e[r] = total + counts[r];
  if (counts.size() != size || total != static_cast<size_t>(data.size()))
    throw std::invalid_argument("reduce_scatter: counts must give one slice per rank and add up to the array's size");
  py::gil_scoped_release release;
  zcoll::reduceScatter(t.transport(), ptr, b.data(), e.data(), a, algorithm);
}

void reducePy(PyTransport& t, py::array data, int root, const std::string& dtype, const std::string& op,
              const std::string& algo, uint64_t seq, size_t chunkBytes, double timeoutSeconds) {
  const auto a = argsOf(zcoll::OpCode::kReduce, dtype, op, seq, chunkBytes, timeoutSeconds);
  const auto algorithm = algorithmOf(algo);
  void* ptr = scheduleBuffer(data, a, "reduce");
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  zcoll::reduceToRoot(t.transport(), ptr, count, root, a, algorithm);
}

// The compressed schedules (docs/arithmetic.md §6) in place on float32 arrays.
zcoll::Compression compressionOf(const std::string& codec, int block, uint64_t seed, uint64_t step) {
  zcoll::Compression c;
  c.codec = zcoll::bindings::parseCodec(codec);
  c.block = block;
  c.seed = seed;
  c.step = step;
  return c;
}

// Slice r of `counts`, in order, as begin/end arrays; the counts must cover the array.
void slicesOf(const std::vector<size_t>& counts, size_t ranks, size_t total, std::vector<size_t>& b,
              std::vector<size_t>& e, const char* what) {
  b.assign(ranks, 0);
  e.assign(ranks, 0);
  size_t at = 0;
  for (size_t r = 0; r < ranks && counts.size() == ranks; at += counts[r], ++r) b[r] = at, e[r] = at + counts[r];
  if (counts.size() != ranks || at != total)
    throw std::invalid_argument(std::string(what) + ": counts must give one slice per rank and add up to the array's size");
}

using FloatArray = py::array_t<float, py::array::c_style>;

float* writeable(FloatArray& data, const char* what) {
  if (!data.writeable()) throw std::invalid_argument(std::string(what) + " needs a writeable array");
  return data.mutable_data();
}

// The optional error-feedback residual: None, or a writeable float32 array the size of `data`.
float* residualOf(py::object residual, const FloatArray& data, const char* what) {
  if (residual.is_none()) return nullptr;
  const auto fail = [&] {
    return std::invalid_argument(std::string(what) +
                                 ": residual must be a writeable contiguous float32 array the size of data");
  };
  if (!py::isinstance<FloatArray>(residual)) throw fail();  // a float32 C-contiguous array, not a converted copy
  auto arr = residual.cast<FloatArray>();
  if (!arr.writeable() || arr.size() != data.size() || !residual.is(arr))
    throw fail();
  return arr.mutable_data();
}

// The staged (device-side) schedules are two-shot only.
void checkStagedAlgorithm(zcoll::Algorithm algo, const char* what) {
  if (algo != zcoll::Algorithm::kTwoShot)
    throw std::invalid_argument(std::string(what) + ": on a device, only the twoshot schedule runs");
}

void compressedAllReducePy(PyTransport& t, FloatArray data, const std::string& codec, const std::string& op,
                           const std::string& algo, int block, uint64_t seed, uint64_t step, uint64_t seqNo,
                           size_t chunkBytes, double timeoutSeconds, py::object residual, bool emulatedDevice) {
  const auto a = argsOf(zcoll::OpCode::kAllReduce, "float32", op, seqNo, chunkBytes, timeoutSeconds);
  const auto c = compressionOf(codec, block, seed, step);
  const auto algorithm = algorithmOf(algo);
  float* ptr = writeable(data, "compressed_all_reduce");
  float* res = residualOf(residual, data, "compressed_all_reduce");
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  if (emulatedDevice) {
    checkStagedAlgorithm(algorithm, "compressed_all_reduce");
    zcoll::kernels::cpu::EmulatedCodecDevice dev;
    zcoll::stagedCompressedAllReduce(t.transport(), dev, ptr, count, a, c, res);
  } else {
    zcoll::compressedAllReduce(t.transport(), ptr, count, a, c, algorithm, res);
  }
}

void hierarchicalCompressedAllReducePy(PyTransport& t, FloatArray data, const std::string& codec,
                                       const std::string& op, const std::string& intra, const std::string& inter,
                                       int block, uint64_t seed, uint64_t step, uint64_t seqNo, size_t chunkBytes,
                                       double timeoutSeconds, py::object residual) {
  const auto a = argsOf(zcoll::OpCode::kAllReduce, "float32", op, seqNo, chunkBytes, timeoutSeconds);
  const auto c = compressionOf(codec, block, seed, step);
  const auto algos = twoLevelOf(t, intra, inter);
  float* ptr = writeable(data, "hierarchical_compressed_all_reduce");
  float* res = residualOf(residual, data, "hierarchical_compressed_all_reduce");
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  zcoll::hierarchicalCompressedAllReduce(t.transport(), t.topology(), ptr, count, a, c, algos, res);
}

void hierarchicalCompressedGatherScatterPy(PyTransport& t, FloatArray data, const std::string& collective,
                                           const std::vector<size_t>& counts, const std::string& codec,
                                           const std::string& op, const std::string& intra, const std::string& inter,
                                           int block, uint64_t seed, uint64_t step, uint64_t seqNo,
                                           size_t chunkBytes, double timeoutSeconds) {
  const bool rs = collective == "reduce_scatter";
  if (!rs && collective != "all_gather")
    throw std::invalid_argument("hierarchical_compressed: unknown collective '" + collective +
                                "' (reduce_scatter, all_gather)");
  const auto a = argsOf(rs ? zcoll::OpCode::kReduceScatter : zcoll::OpCode::kAllGather, "float32", op, seqNo,
                        chunkBytes, timeoutSeconds);
  const auto c = compressionOf(codec, block, seed, step);
  const auto algos = rs ? twoLevelOf(t, intra, inter) : zcoll::TwoLevel{};
  float* ptr = writeable(data, "hierarchical_compressed");
  std::vector<size_t> b, e;
  slicesOf(counts, static_cast<size_t>(t.transport().size()), static_cast<size_t>(data.size()), b, e,
           "hierarchical_compressed");
  py::gil_scoped_release release;
  if (rs) zcoll::hierarchicalCompressedReduceScatter(t.transport(), t.topology(), ptr, b.data(), e.data(), a, c, algos);
  else zcoll::hierarchicalCompressedAllGather(t.transport(), t.topology(), ptr, b.data(), e.data(), a, c);
}

void compressedReduceScatterPy(PyTransport& t, FloatArray data, const std::vector<size_t>& counts,
                               const std::string& codec, const std::string& op, const std::string& algo, int block,
                               uint64_t seed, uint64_t step, uint64_t seqNo, size_t chunkBytes, double timeoutSeconds,
                               py::object residual, bool emulatedDevice) {
  const auto a = argsOf(zcoll::OpCode::kReduceScatter, "float32", op, seqNo, chunkBytes, timeoutSeconds);
  const auto c = compressionOf(codec, block, seed, step);
  const auto algorithm = algorithmOf(algo);
  float* ptr = writeable(data, "compressed_reduce_scatter");
  float* res = residualOf(residual, data, "compressed_reduce_scatter");
  std::vector<size_t> b, e;
  slicesOf(counts, static_cast<size_t>(t.transport().size()), static_cast<size_t>(data.size()), b, e,
           "compressed_reduce_scatter");
  py::gil_scoped_release release;
  if (emulatedDevice) {
    checkStagedAlgorithm(algorithm, "compressed_reduce_scatter");
    zcoll::kernels::cpu::EmulatedCodecDevice dev;
    zcoll::stagedCompressedReduceScatter(t.transport(), dev, ptr, b.data(), e.data(), a, c, res);
  } else {
    zcoll::compressedReduceScatter(t.transport(), ptr, b.data(), e.data(), a, c, algorithm, res);
  }
}

void compressedAllGatherPy(PyTransport& t, FloatArray data, const std::vector<size_t>& counts,
                           const std::string& codec, int block, uint64_t seed, uint64_t step, uint64_t seqNo,
                           size_t chunkBytes, double timeoutSeconds, bool emulatedDevice) {
  const auto a = argsOf(zcoll::OpCode::kAllGather, "float32", "sum", seqNo, chunkBytes, timeoutSeconds);
  const auto c = compressionOf(codec, block, seed, step);
  float* ptr = writeable(data, "compressed_all_gather");
  std::vector<size_t> b, e;
  slicesOf(counts, static_cast<size_t>(t.transport().size()), static_cast<size_t>(data.size()), b, e,
           "compressed_all_gather");
  py::gil_scoped_release release;
  if (emulatedDevice) {
    zcoll::kernels::cpu::EmulatedCodecDevice dev;
    zcoll::stagedCompressedAllGather(t.transport(), dev, ptr, b.data(), e.data(), a, c);
  } else {
    zcoll::compressedAllGather(t.transport(), ptr, b.data(), e.data(), a, c);
  }
}

}  // namespace

py::dict sharedMemoryDict(const zcoll::Transport::SharedMemoryUse& use) {
  py::dict d;
  d["ring_bytes"] = use.ringBytes;
  d["rings_allocated"] = use.ringsAllocated;
  d["bytes"] = use.bytes;
  d["single_copy_peers"] = use.singleCopyPeers;
  d["single_copy_messages"] = use.singleCopyMessages;
  d["single_copy_bytes"] = use.singleCopyBytes;
  return d;
}

namespace {

zcoll::Collective parseCollective(const std::string& name) {
  for (auto c : {zcoll::Collective::kAllReduce, zcoll::Collective::kReduce, zcoll::Collective::kReduceScatter})
    if (name == zcoll::collectiveName(c)) return c;
  throw std::invalid_argument("unknown collective '" + name + "' (allreduce, reduce, reduce_scatter)");
}

const zcoll::CostModel& modelOr(const zcoll::CostModel* m) { return m ? *m : zcoll::defaultCostModel(); }

// {"algorithm", "chunk_bytes", "seconds", "candidates": {algorithm: (chunk_bytes, seconds)}}
py::dict predictionsDict(const zcoll::Predictions& p) {
  py::dict out, candidates;
  for (int i = 0; i < p.count; ++i) {
    const auto& c = p.candidates[static_cast<size_t>(i)];
    candidates[py::str(zcoll::algorithmName(c.algorithm))] = py::make_tuple(c.chunkBytes, c.seconds);
  }
  out["algorithm"] = std::string(zcoll::algorithmName(p.choice().algorithm));
  out["chunk_bytes"] = p.choice().chunkBytes;
  out["seconds"] = p.choice().seconds;
  out["candidates"] = candidates;
  return out;
}

const char* const kCodecNames[] = {"fp16", "bf16", "int8", "int4"};

void bindTuner(py::module_& m) {
  using zcoll::CostModel;
  using zcoll::LinkCost;
  py::class_<LinkCost>(m, "LinkCost", "One transport kind's costs in the tuner's model (algorithms/cost_model.h).")
      .def(py::init<>())
      .def_readwrite("alpha", &LinkCost::alpha, "seconds per message")
      .def_readwrite("beta", &LinkCost::beta, "bytes/s one rank moves to a peer")
      .def_readwrite("gamma", &LinkCost::gamma, "bytes/s of reduction")
      .def_readwrite("sigma", &LinkCost::sigma, "latency of k concurrent messages: 1 + sigma (k-1) messages'")
      .def_readwrite("kappa", &LinkCost::kappa, "their bandwidth: beta / (1 + kappa (k-1))")
      .def_readwrite("switch", &LinkCost::switchCost, "seconds per message per extra rank sharing a core")
      .def_readwrite("overlap", &LinkCost::overlap, "how much chunking overlaps moving and reducing, 0..1")
      .def_readwrite("max_chunk", &LinkCost::maxChunk, "largest chunk (bytes) the tuner considers")
      .def("__repr__", [](const LinkCost& l) {
        return "LinkCost(alpha=" + std::to_string(l.alpha) + ", beta=" + std::to_string(l.beta) +
               ", gamma=" + std::to_string(l.gamma) + ", ...)";
      });
  py::class_<CostModel>(m, "CostModel",
                        "The tuner's cost model: per link kind (shm, net) alpha, beta, gamma and the contention "
                        "terms; cores per host; codec rates. CostModel() is the compiled-in defaults.")
      .def(py::init([] { return CostModel::defaults(); }))
      .def_readwrite("shm", &CostModel::shm)
      .def_readwrite("net", &CostModel::net)
      .def_readwrite("cores", &CostModel::cores)
      .def_readwrite("source", &CostModel::source)
      .def("codec", [](const CostModel& c, const std::string& name) {
             const auto& r = c.codecs[static_cast<size_t>(zcoll::bindings::parseCodec(name))];
             return py::make_tuple(r.encode, r.decode);
           }, py::arg("name"), "(encode, decode) bytes/s of float32 data.")
      .def("set_codec", [](CostModel& c, const std::string& name, double encode, double decode) {
             c.codecs[static_cast<size_t>(zcoll::bindings::parseCodec(name))] = {encode, decode};
           }, py::arg("name"), py::arg("encode"), py::arg("decode"))
      .def_property_readonly_static("codecs", [](py::object) {
             return std::vector<std::string>(std::begin(kCodecNames), std::end(kCodecNames));
           })
      .def("invalid", &CostModel::invalid, "'' when usable, else what is wrong (naming the field).")
      .def("describe", &CostModel::describe)
      .def("to_list", &CostModel::toVector, "The numbers in the order ranks exchange them.")
      .def("copy", [](const CostModel& c) { return c; })
      .def("__eq__", [](const CostModel& a, const CostModel& b) { return a.toVector() == b.toVector(); })
      .def("__repr__", [](const CostModel& c) { return "CostModel(" + c.source + ": " + c.describe() + ")"; });
  m.def("tune", [](const std::string& collective, size_t bytes, int ranks, const std::string& transport,
                   int ranksPerHost, const CostModel* model) {
    const auto choice = zcoll::tune(modelOr(model), parseCollective(collective), bytes, ranks, transport, ranksPerHost);
    return py::make_tuple(std::string(zcoll::algorithmName(choice.algorithm)), choice.chunkBytes);
  }, py::arg("collective"), py::arg("bytes"), py::arg("ranks"), py::arg("transport"), py::arg("ranks_per_host") = 0,
        py::arg("model") = nullptr,
        "The tuner's (algorithm, chunk bytes) for a collective the user did not configure; ranks_per_host: ranks on "
        "the busiest host (0: all); model: a CostModel (None: the defaults).");
  m.def("predict", [](const std::string& collective, size_t bytes, int ranks, const std::string& transport,
                      int ranksPerHost, const CostModel* model) {
    return predictionsDict(zcoll::predict(modelOr(model), parseCollective(collective), bytes, ranks, transport,
                                          ranksPerHost));
  }, py::arg("collective"), py::arg("bytes"), py::arg("ranks"), py::arg("transport"), py::arg("ranks_per_host") = 0,
        py::arg("model") = nullptr,
        "The model's predictions behind tune(): {algorithm, chunk_bytes, seconds, candidates: {algorithm: "
        "(chunk_bytes, seconds)}}.");
  m.def("tune_two_level", [](size_t bytes, const std::vector<int>& hostOf, int rank, const std::string& collective,
                             const CostModel* model) {
    const zcoll::Topology topo(static_cast<int>(hostOf.size()), hostOf);
    const auto choice = zcoll::tuneTwoLevel(modelOr(model), parseCollective(collective), bytes, topo, rank);
    return py::make_tuple(std::string(zcoll::algorithmName(choice.algos.intra)),
                          std::string(zcoll::algorithmName(choice.algos.inter)), choice.chunkBytes);
  }, py::arg("bytes"), py::arg("host_of"), py::arg("rank"), py::arg("collective") = "allreduce",
        py::arg("model") = nullptr,
        "The tuner's hierarchical collective for `rank`: (algorithm inside its host, between hosts, chunk bytes); "
        "host_of numbers hosts in order of their lowest rank.");
  m.def("predict_two_level", [](size_t bytes, const std::vector<int>& hostOf, int rank, const std::string& collective,
                                const CostModel* model) {
    const zcoll::Topology topo(static_cast<int>(hostOf.size()), hostOf);
    const auto choice = zcoll::tuneTwoLevel(modelOr(model), parseCollective(collective), bytes, topo, rank);
    py::dict d;
    d["intra"] = predictionsDict(choice.intra.predictions);
    d["inter"] = predictionsDict(choice.inter.predictions);
    d["all_gather_seconds"] = choice.allGatherSeconds;
    d["seconds"] = choice.seconds();
    d["chunk_bytes"] = choice.chunkBytes;
    return d;
  }, py::arg("bytes"), py::arg("host_of"), py::arg("rank"), py::arg("collective") = "allreduce",
        py::arg("model") = nullptr, "tune_two_level's predictions per level and in all.");
  m.def("tune_compressed", [](const std::string& codec, size_t bytes, int ranks, const std::string& transport,
                              int block, int ranksPerHost, const CostModel* model) {
    const auto choice = zcoll::tuneCompressed(modelOr(model), zcoll::bindings::parseCodec(codec), bytes, ranks,
                                              transport, block, ranksPerHost);
    return py::make_tuple(std::string(zcoll::algorithmName(choice.algorithm)), choice.chunkBytes);
  }, py::arg("codec"), py::arg("bytes"), py::arg("ranks"), py::arg("transport") = "shm", py::arg("block") = 256,
        py::arg("ranks_per_host") = 0, py::arg("model") = nullptr,
        "The tuner's (algorithm, chunk bytes) for a compressed all-reduce.");
  m.def("predict_compressed", [](const std::string& codec, size_t bytes, int ranks, const std::string& transport,
                                 int block, int ranksPerHost, const CostModel* model, bool errorBound) {
    return predictionsDict(zcoll::predictCompressed(modelOr(model), zcoll::bindings::parseCodec(codec), bytes, ranks,
                                                    transport, block, ranksPerHost, errorBound));
  }, py::arg("codec"), py::arg("bytes"), py::arg("ranks"), py::arg("transport") = "shm", py::arg("block") = 256,
        py::arg("ranks_per_host") = 0, py::arg("model") = nullptr, py::arg("error_bound") = true,
        "tune_compressed's predictions; error_bound=False: the ring is a candidate at any ranks and codec.");
}

}  // namespace

void bindTransport(py::module_& m) {
  m.attr("DEFAULT_SHM_SINGLE_COPY_BYTES") = zcoll::kDefaultShmSingleCopyBytes;
  py::class_<PyTransport>(m, "Transport", "A torch-free zcoll transport (tests and benchmarks).")
      .def(py::init<const std::string&, py::object, const std::string&, int, int, double, std::string,
                    std::string, size_t, std::vector<int>, int, double, bool, double, double, std::string,
                    std::string, int64_t>(),
           py::arg("kind"), py::arg("store"), py::arg("prefix"), py::arg("rank"), py::arg("size"),
           py::arg("timeout") = 30.0, py::arg("socket_ifname") = "", py::arg("store_host") = "",
           py::arg("shm_ring_bytes") = size_t{0}, py::arg("host_of") = std::vector<int>{},
           py::arg("socket_family") = 0, py::arg("connect_timeout") = 20.0, py::arg("liveness") = true,
           py::arg("heartbeat_interval") = 1.0, py::arg("heartbeat_timeout") = 30.0, py::arg("net") = "tcp",
           py::arg("ucx_library") = "", py::arg("shm_single_copy_bytes") = zcoll::kAutoShmSingleCopyBytes,
           "kind: shm, tcp, ucx or auto (a transport per peer by host_of, each rank's host index, with `net` "
           "between hosts); shm_ring_bytes: 0 sizes the rings as a group does; liveness: watch the peers as the backend does (transport/liveness.h); "
           "ucx_library: the libucp to load (\"\": the loader's search path); shm_single_copy_bytes: messages "
           "this large or larger are read from the sender's memory (0: never; -1: the default where the ranks "
           "have a core each, else never).")
      .def("measure_cost_model", [](PyTransport& self, const zcoll::CostModel* base, double timeout, size_t probeBytes) {
             zcoll::Measurement found;
             zcoll::CostModel m;
             {
               py::gil_scoped_release release;
               m = zcoll::measureCostModel(self.transport(), self.topology(),
                                           base ? *base : zcoll::defaultCostModel(), deadlineIn(timeout), &found,
                                           probeBytes);
             }
             py::dict d;
             d["shm"] = found.shm;
             d["net"] = found.net;
             d["seconds"] = found.seconds;
             return py::make_tuple(m, d);
           }, py::arg("base") = nullptr, py::arg("timeout") = 30.0, py::arg("probe_bytes") = size_t{256 * 1024},
           "Collective: measure the group's links (algorithms/cost_model.h); returns (CostModel, "
           "{shm, net: measured?, seconds}), rank 0's numbers on every rank.")
      .def("agree_cost_model", [](PyTransport& self, zcoll::CostModel model, double timeout) {
             bool differed;
             {
               py::gil_scoped_release release;
               differed = zcoll::agreeCostModel(self.transport(), model, deadlineIn(timeout));
             }
             return py::make_tuple(model, differed);
           }, py::arg("model"), py::arg("timeout") = 30.0,
           "Collective: (rank 0's model, whether this rank's differed).")
      .def_property_readonly("name", [](PyTransport& t) { return std::string(t.transport().name()); })
      .def_property_readonly("rank", [](PyTransport& t) { return t.transport().rank(); })
      .def_property_readonly("size", [](PyTransport& t) { return t.transport().size(); })
      .def("shared_memory", [](PyTransport& t) { return sharedMemoryDict(t.transport().sharedMemory()); },
           "This rank's shm rings: {ring_bytes, rings_allocated, bytes}, and single copy: {single_copy_peers, "
           "single_copy_messages, single_copy_bytes} (zeros without shm).")
      .def("isend", &PyTransport::isend, py::arg("peer"), py::arg("tag"), py::arg("data"), py::arg("operand") = false,
           "operand: isendOperand (a message its receiver reduces as it arrives)")
      .def("irecv", &PyTransport::irecv, py::arg("peer"), py::arg("tag"), py::arg("data"))
      .def("wait", &PyTransport::wait, py::arg("request"), py::arg("timeout") = 30.0)
      .def("recv_pieces", &PyTransport::recvPieces, py::arg("peer"), py::arg("tag"), py::arg("bytes"),
           py::arg("timeout") = 30.0, "Receive through irecvConsume: (payload bytes, [(offset, bytes), ...]).")
      .def("test", &PyTransport::test, py::arg("request"),
           "One non-blocking progress pass; True when the request is complete.")
      .def("abort", [](PyTransport& t, const std::string& why) { t.transport().abort(why); })
      .def("all_reduce", &allReducePy, py::arg("data"), py::arg("dtype"), py::arg("op"), py::arg("algo"),
           py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "In-place all-reduce (docs/arithmetic.md §4) of a contiguous array with the named algorithm.")
      .def("hierarchical_all_reduce", &hierarchicalAllReducePy, py::arg("data"), py::arg("dtype"), py::arg("op"),
           py::arg("intra"), py::arg("inter"), py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19,
           py::arg("timeout") = 30.0,
           "In-place two-level all-reduce over the hosts of host_of: `intra` reduce-scatter inside this rank's "
           "host (ring or twoshot), `inter` all-reduce between hosts.")
      .def("hierarchical_compressed_all_reduce", &hierarchicalCompressedAllReducePy, py::arg("data"),
           py::arg("codec"), py::arg("op"), py::arg("intra"), py::arg("inter"), py::arg("block") = 256,
           py::arg("seed") = 0, py::arg("step") = 0, py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19,
           py::arg("timeout") = 30.0, py::arg("residual") = py::none(),
           "The same over float32 with the stage between hosts compressed (ring or twoshot).")
      .def("hierarchical", &hierarchicalCollectivePy, py::arg("data"), py::arg("collective"),
           py::arg("counts") = std::vector<size_t>{}, py::arg("root") = 0, py::arg("dtype") = "float32",
           py::arg("op") = "sum", py::arg("intra") = "ring", py::arg("inter") = "ring", py::arg("seq") = 0,
           py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "A two-level reduce_scatter (over `counts` slices), all_gather (in place) or reduce (to `root`) over "
           "the hosts of host_of; `intra` inside this rank's host, `inter` between hosts.")
      .def("hierarchical_compressed", &hierarchicalCompressedGatherScatterPy, py::arg("data"), py::arg("collective"),
           py::arg("counts"), py::arg("codec"), py::arg("op") = "sum", py::arg("intra") = "ring",
           py::arg("inter") = "ring", py::arg("block") = 256, py::arg("seed") = 0, py::arg("step") = 0,
           py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "The two-level reduce_scatter or all_gather over float32 with the stage between hosts compressed.")
      .def("reduce_scatter", &reduceScatterPy, py::arg("data"), py::arg("counts"), py::arg("dtype"), py::arg("op"),
           py::arg("algo"), py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "Reduce-scatter in place: rank r's slice (counts[r] elements, in order) gets its result.")
      .def("compressed_all_reduce", &compressedAllReducePy, py::arg("data"), py::arg("codec"), py::arg("op"),
           py::arg("algo"), py::arg("block") = 256, py::arg("seed") = 0, py::arg("step") = 0, py::arg("seq") = 0,
           py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0, py::arg("residual") = py::none(),
           py::arg("emulated_device") = false,
           "In-place compressed all-reduce of a float32 array (ring or twoshot); `residual`: error feedback; "
           "`emulated_device`: the device-side (staged) two-shot, its kernels run by the CUDA grid emulator.")
      .def("compressed_reduce_scatter", &compressedReduceScatterPy, py::arg("data"), py::arg("counts"),
           py::arg("codec"), py::arg("op"), py::arg("algo"), py::arg("block") = 256, py::arg("seed") = 0,
           py::arg("step") = 0, py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19,
           py::arg("timeout") = 30.0, py::arg("residual") = py::none(), py::arg("emulated_device") = false,
           "Compressed reduce-scatter: rank r's slice gets its float32 result; `residual`: error feedback; "
           "`emulated_device` as for compressed_all_reduce.")
      .def("compressed_all_gather", &compressedAllGatherPy, py::arg("data"), py::arg("counts"), py::arg("codec"),
           py::arg("block") = 256, py::arg("seed") = 0, py::arg("step") = 0, py::arg("seq") = 0,
           py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0, py::arg("emulated_device") = false,
           "Compressed all-gather in place: slice r (rank r's input) encoded once, decoded everywhere; "
           "`emulated_device` as for compressed_all_reduce.")
      .def("reduce", &reducePy, py::arg("data"), py::arg("root"), py::arg("dtype"), py::arg("op"), py::arg("algo"),
           py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "Reduce to root in place (other ranks' arrays become scratch).");
  m.def("interfaces", [] {
    std::vector<py::tuple> out;
    for (const auto& i : zcoll::tcp::interfaces()) out.push_back(py::make_tuple(i.name, i.address, i.loopback));
    return out;
  }, "This host's interface addresses that are up: [(name, address, loopback)].");
  m.def("choose_address", [](const std::vector<std::tuple<std::string, std::string, bool>>& ifs,
                             const std::string& socketIfname, const std::string& route, bool remotePeers,
                             int family) {
    std::vector<zcoll::tcp::Interface> list;
    for (const auto& [name, address, loopback] : ifs)
      list.push_back({name, address, address.find(':') != std::string::npos ? AF_INET6 : AF_INET, loopback});
    const auto c = zcoll::tcp::chooseAddress(list, socketIfname, route, remotePeers, family, "");
    return py::make_tuple(c.address, c.reason);
  }, py::arg("interfaces"), py::arg("socket_ifname") = "", py::arg("route") = "", py::arg("remote_peers") = true,
        py::arg("family") = 0,
        "The address the tcp transport advertises (docs/multi-host.md), from a list like interfaces()'s.");
  bindTuner(m);
}
