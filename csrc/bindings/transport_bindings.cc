// Python surface of the torch-free transports, for tests: ranks in separate processes drive
// isend/irecv/wait directly, bootstrapped through any store with set/get (e.g. torch's).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/ring.h"
#include "bindings/names.h"
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
              double timeoutSeconds, std::string socketIfname, std::string storeHost, size_t shmRingBytes)
      : store_(std::make_unique<PyStore>(std::move(store))) {
    zcoll::TransportOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000));
    options.socketIfname = std::move(socketIfname);
    options.storeHost = std::move(storeHost);
    options.shmRingBytes = shmRingBytes;
    py::gil_scoped_release release;
    transport_ = zcoll::makeTransport(kind, *store_, prefix, rank, size, options);
  }

  zcoll::RequestId isend(int peer, uint64_t tag, py::array data) {
    const auto id = transport_->isend(peer, tag, data.data(), static_cast<size_t>(data.nbytes()));
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

 private:
  std::unique_ptr<PyStore> store_;
  std::unique_ptr<zcoll::Transport> transport_;
  std::map<zcoll::RequestId, py::array> pending_;
};

// The ring all-reduce of csrc/algorithms on a transport, in place on a contiguous array.
void ringAllReducePy(PyTransport& t, py::array data, const std::string& dtype, const std::string& op, uint64_t seq,
                     size_t chunkBytes, double timeoutSeconds) {
  zcoll::CollectiveArgs a;
  a.dtype = zcoll::bindings::parseDType(dtype);
  a.op = zcoll::bindings::parseRedOp(op);
  a.seq = seq;
  a.chunkBytes = chunkBytes;
  a.deadline = deadlineIn(timeoutSeconds);
  if (!data.writeable() || !(data.flags() & py::array::c_style) ||
      static_cast<size_t>(data.itemsize()) != zcoll::dtypeSize(a.dtype))
    throw std::invalid_argument("ring_all_reduce needs a writeable contiguous array of " + dtype + " storage");
  void* ptr = data.mutable_data();
  const size_t count = static_cast<size_t>(data.size());
  py::gil_scoped_release release;
  zcoll::ringAllReduce(t.transport(), ptr, count, a);
}

}  // namespace

void bindTransport(py::module_& m) {
  py::register_exception<zcoll::TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);
  py::class_<PyTransport>(m, "Transport", "A torch-free zcoll transport (tests and benchmarks).")
      .def(py::init<const std::string&, py::object, const std::string&, int, int, double, std::string,
                    std::string, size_t>(),
           py::arg("kind"), py::arg("store"), py::arg("prefix"), py::arg("rank"), py::arg("size"),
           py::arg("timeout") = 30.0, py::arg("socket_ifname") = "", py::arg("store_host") = "",
           py::arg("shm_ring_bytes") = size_t{4} << 20)
      .def_property_readonly("name", [](PyTransport& t) { return std::string(t.transport().name()); })
      .def_property_readonly("rank", [](PyTransport& t) { return t.transport().rank(); })
      .def_property_readonly("size", [](PyTransport& t) { return t.transport().size(); })
      .def("isend", &PyTransport::isend, py::arg("peer"), py::arg("tag"), py::arg("data"))
      .def("irecv", &PyTransport::irecv, py::arg("peer"), py::arg("tag"), py::arg("data"))
      .def("wait", &PyTransport::wait, py::arg("request"), py::arg("timeout") = 30.0)
      .def("test", &PyTransport::test, py::arg("request"),
           "One non-blocking progress pass; True when the request is complete.")
      .def("abort", [](PyTransport& t, const std::string& why) { t.transport().abort(why); })
      .def("ring_all_reduce", &ringAllReducePy, py::arg("data"), py::arg("dtype"), py::arg("op"),
           py::arg("seq") = 0, py::arg("chunk_bytes") = size_t{1} << 19, py::arg("timeout") = 30.0,
           "In-place ring all-reduce (docs/arithmetic.md §4) of a contiguous array.");
}
