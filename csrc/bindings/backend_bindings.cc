// Python surface of ProcessGroupZcoll: constructed by zcoll's backend creator (python/zcoll/
// backend.py), bound as a subclass of torch's Backend so pg._get_backend(device) exposes it.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "backend/errors.h"
#include "backend/process_group_zcoll.h"
#include "util/error.h"

namespace py = pybind11;

namespace {

// The Python classes of zcoll's own errors, defined in zcoll/errors.py, which hands them over
// when it is imported (before any group exists). Never released: they live as long as Python.
struct ErrorTypes {
  PyObject* argument = nullptr;      // zcoll.ArgumentError(ValueError, RuntimeError)
  PyObject* argumentType = nullptr;  // zcoll.ArgumentTypeError(TypeError, RuntimeError)
  PyObject* timeout = nullptr;       // zcoll.DistTimeoutError(DistBackendError, TimeoutError)
} errorTypes;

// Raises `type` (when registered) with `message`; otherwise hands the exception on to the next
// translator (torch's, which knows the c10 base classes).
void raiseAs(PyObject* type, const char* message) {
  if (type == nullptr) throw;
  PyErr_SetString(type, message);
}

// Tried before torch's translator (pybind11 tries the most recently registered first), for
// exceptions that reach Python through pybind11: every torch.distributed call and Work.wait().
void translate(std::exception_ptr error) {
  try {
    if (error) std::rethrow_exception(error);
  } catch (const zcoll::ArgumentError& e) {
    raiseAs(errorTypes.argument, e.what_without_backtrace());
  } catch (const zcoll::ArgumentTypeError& e) {
    raiseAs(errorTypes.argumentType, e.what_without_backtrace());
  } catch (const zcoll::DistTimeoutError& e) {
    raiseAs(errorTypes.timeout, e.what_without_backtrace());
  } catch (const zcoll::TimeoutError& e) {  // the torch-free layers' (transport test bindings)
    raiseAs(errorTypes.timeout, e.what());
  }
}

}  // namespace

void bindBackend(py::module_& m) {
  m.def("_set_error_types", [](py::object argument, py::object argumentType, py::object timeout) {
    errorTypes = {argument.release().ptr(), argumentType.release().ptr(), timeout.release().ptr()};
  }, "Called by zcoll.errors at import: the Python classes zcoll's C++ errors are raised as.");
  py::register_exception_translator(&translate);
  py::class_<zcoll::ProcessGroupZcoll, c10d::Backend, c10::intrusive_ptr<zcoll::ProcessGroupZcoll>>(
      m, "ProcessGroupZcoll", "zcoll's c10d backend (use torch.distributed, not this class).")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::chrono::milliseconds timeout, const std::string& transport, size_t chunkBytes,
                       size_t shmRingBytes, const std::string& socketIfname, const std::string& storeHost,
                       bool debug, const std::string& allreduceAlgo, const std::string& reduceAlgo,
                       const std::string& reduceScatterAlgo, const std::string& compression,
                       size_t compressMinBytes, int compressBlock, bool stageCpu, std::vector<int> hostOf,
                       std::vector<std::string> hostNames, int socketFamily, double connectTimeout,
                       double heartbeatInterval, double heartbeatTimeout, bool checksum, size_t p2pMaxUnexpectedBytes,
                       const std::string& keySpace, const std::string& testFault, int64_t testFlipBitAt) {
             zcoll::BackendConfig c;
             c.transport = transport;
             c.chunkBytes = chunkBytes;
             c.shmRingBytes = shmRingBytes;
             c.socketIfname = socketIfname;
             c.storeHost = storeHost;
             c.debug = debug;
             c.allreduceAlgo = allreduceAlgo;
             c.reduceAlgo = reduceAlgo;
             c.reduceScatterAlgo = reduceScatterAlgo;
             c.compression = compression;
             c.compressMinBytes = compressMinBytes;
             c.compressBlock = compressBlock;
             c.stageCpu = stageCpu;
             c.hostOf = std::move(hostOf);
             c.hostNames = std::move(hostNames);
             c.socketFamily = socketFamily;
             c.connectTimeout = std::chrono::milliseconds(static_cast<int64_t>(connectTimeout * 1000));
             c.heartbeatInterval = std::chrono::milliseconds(static_cast<int64_t>(heartbeatInterval * 1000));
             c.heartbeatTimeout = std::chrono::milliseconds(static_cast<int64_t>(heartbeatTimeout * 1000));
             c.checksum = checksum;
             c.p2pMaxUnexpectedBytes = p2pMaxUnexpectedBytes;
             c.keySpace = keySpace;
             c.testFault = testFault;
             c.testFlipBitAt = testFlipBitAt;
             return c10::make_intrusive<zcoll::ProcessGroupZcoll>(store, rank, size, timeout, std::move(c));
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"), py::arg("transport"),
           py::arg("chunk_bytes"), py::arg("shm_ring_bytes"), py::arg("socket_ifname"), py::arg("store_host"),
           py::arg("debug"), py::arg("allreduce_algo") = "", py::arg("reduce_algo") = "",
           py::arg("reduce_scatter_algo") = "", py::arg("compression") = "none",
           py::arg("compress_min_bytes") = size_t{65536}, py::arg("compress_block") = 256,
           py::arg("stage_cpu") = false, py::arg("host_of") = std::vector<int>{},
           py::arg("host_names") = std::vector<std::string>{}, py::arg("socket_family") = 0,
           py::arg("connect_timeout") = 20.0, py::arg("heartbeat_interval") = 1.0,
           py::arg("heartbeat_timeout") = 30.0, py::arg("checksum") = false,
           py::arg("p2p_max_unexpected_bytes") = size_t{1} << 30, py::arg("key_space") = "",
           py::arg("test_fault") = "",
           py::arg("test_flip_bit_at") = -1,
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("transport", [](zcoll::ProcessGroupZcoll& pg) { return std::string(pg.transportName()); })
      .def_property_readonly("host_of", [](zcoll::ProcessGroupZcoll& pg) { return pg.topology().hostOfEachRank(); },
                             "Each rank's host, numbered in order of each host's lowest rank.")
      .def_property_readonly("topology", [](zcoll::ProcessGroupZcoll& pg) { return pg.topology().describe(); })
      .def_property_readonly("chunk_bytes", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().chunkBytes; })
      .def_property_readonly("compression", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().compression; })
      .def_property_readonly("checksum", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().checksum; })
      .def("shrink", [](zcoll::ProcessGroupZcoll& pg, const std::vector<int64_t>& ranksToExclude, int shrinkFlags,
                        const py::object& options) {
             if (!options.is_none())
               throw std::invalid_argument("zcoll shrink: the shrunk group keeps this group's options (pass no pg_options)");
             py::gil_scoped_release release;
             return pg.shrink(ranksToExclude, shrinkFlags);
           }, py::arg("ranks_to_exclude"), py::arg("shrink_flags") = 0, py::arg("opts_override") = py::none(),
           "torch.distributed.shrink_group's step: the new group of the ranks not excluded (docs/failures.md).")
      .def_property_readonly("supports_shrinking", &zcoll::ProcessGroupZcoll::supportsShrinking)
      .def("allreduce_with_feedback", &zcoll::ProcessGroupZcoll::allreduceWithFeedback, py::arg("tensor"),
           py::arg("residual"), py::arg("average") = true, py::call_guard<py::gil_scoped_release>(),
           "Compressed all-reduce with error feedback; returns a Work (get_future() for DDP hooks).");
}
