// Python surface of ProcessGroupZcoll: constructed by zcoll's backend creator (python/zcoll/
// backend.py) from a BackendConfig (bound here too), bound as a subclass of torch's Backend so
// pg._get_backend(device) exposes it; and the log sink (util/log.h) as zcoll._C.log.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <stdexcept>
#include <string>

#include "backend/errors.h"
#include "backend/process_group_zcoll.h"
#include "util/error.h"
#include "util/log.h"

namespace py = pybind11;

// {ring_bytes, rings_allocated, bytes} of a transport's shm rings (transport_bindings.cc).
py::dict sharedMemoryDict(const zcoll::Transport::SharedMemoryUse& use);

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

zcoll::log::Level parseLevel(const std::string& name) {
  zcoll::log::Level level;
  if (!zcoll::log::parseLevel(name, &level))
    throw std::invalid_argument("zcoll log level '" + name + "': expected WARN, INFO or TRACE");
  return level;
}

// BackendConfig's durations as seconds (floats), as zcoll.Options holds them.
template <std::chrono::milliseconds zcoll::BackendConfig::*field>
double seconds(const zcoll::BackendConfig& c) {
  return std::chrono::duration<double>(c.*field).count();
}
template <std::chrono::milliseconds zcoll::BackendConfig::*field>
void setSeconds(zcoll::BackendConfig& c, double s) {
  if (!(s > 0)) throw std::invalid_argument("a duration must be a positive number of seconds, got " + std::to_string(s));
  c.*field = std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
}

}  // namespace

void bindBackend(py::module_& m) {
  m.def("_set_error_types", [](py::object argument, py::object argumentType, py::object timeout) {
    errorTypes = {argument.release().ptr(), argumentType.release().ptr(), timeout.release().ptr()};
  }, "Called by zcoll.errors at import: the Python classes zcoll's C++ errors are raised as.");
  py::register_exception_translator(&translate);
  m.def("log", [](const std::string& level, const std::string& message, int rank) {
    zcoll::log::write(parseLevel(level), rank, message);
  }, py::arg("level"), py::arg("message"), py::arg("rank") = -1, py::call_guard<py::gil_scoped_release>(),
        "Writes one line through zcoll's log sink (stderr, with the host, pid and, when rank >= 0, the rank). "
        "Does not filter: the caller checks the level (zcoll/backend.py).");
  using zcoll::BackendConfig;
  py::class_<BackendConfig>(m, "BackendConfig",
                            "A zcoll group's configuration (csrc/backend/process_group_zcoll.h); durations in seconds.")
      .def(py::init<>())
      .def_readwrite("transport", &BackendConfig::transport)
      .def_readwrite("net", &BackendConfig::net)
      .def_readwrite("ucx_library", &BackendConfig::ucxLibrary)
      .def_readwrite("chunk_bytes", &BackendConfig::chunkBytes)
      .def_readwrite("cost_model", &BackendConfig::costModel)
      .def_readwrite("tuning", &BackendConfig::tuning)
      .def_readwrite("allreduce_algo", &BackendConfig::allreduceAlgo)
      .def_readwrite("reduce_algo", &BackendConfig::reduceAlgo)
      .def_readwrite("reduce_scatter_algo", &BackendConfig::reduceScatterAlgo)
      .def_readwrite("compression", &BackendConfig::compression)
      .def_readwrite("compress_min_bytes", &BackendConfig::compressMinBytes)
      .def_readwrite("compress_block", &BackendConfig::compressBlock)
      .def_readwrite("shm_ring_bytes", &BackendConfig::shmRingBytes)
      .def_readwrite("shm_single_copy_bytes", &BackendConfig::shmSingleCopyBytes)
      .def_readwrite("socket_ifname", &BackendConfig::socketIfname)
      .def_readwrite("socket_family", &BackendConfig::socketFamily)
      .def_property("connect_timeout", seconds<&BackendConfig::connectTimeout>,
                    setSeconds<&BackendConfig::connectTimeout>)
      .def_property("heartbeat_interval", seconds<&BackendConfig::heartbeatInterval>,
                    setSeconds<&BackendConfig::heartbeatInterval>)
      .def_property("heartbeat_timeout", seconds<&BackendConfig::heartbeatTimeout>,
                    setSeconds<&BackendConfig::heartbeatTimeout>)
      .def_readwrite("store_host", &BackendConfig::storeHost)
      .def_readwrite("host_of", &BackendConfig::hostOf)
      .def_readwrite("host_names", &BackendConfig::hostNames)
      .def_property("log_level", [](const BackendConfig& c) { return std::string(zcoll::log::levelName(c.logLevel)); },
                    [](BackendConfig& c, const std::string& level) { c.logLevel = parseLevel(level); },
                    "WARN, INFO or TRACE (ZCOLL_DEBUG)")
      .def_readwrite("stage_cpu", &BackendConfig::stageCpu)
      .def_readwrite("p2p_max_unexpected_bytes", &BackendConfig::p2pMaxUnexpectedBytes)
      .def_readwrite("checksum", &BackendConfig::checksum)
      .def_readwrite("test_flip_bit_at", &BackendConfig::testFlipBitAt)
      .def_readwrite("key_space", &BackendConfig::keySpace)
      .def_readwrite("test_fault", &BackendConfig::testFault)
      .def("__repr__", [](const BackendConfig& c) {
        return "BackendConfig(transport='" + c.transport + "', compression='" + c.compression + "', log_level='" +
               zcoll::log::levelName(c.logLevel) + "', ...)";
      });
  py::class_<zcoll::ProcessGroupZcoll, c10d::Backend, c10::intrusive_ptr<zcoll::ProcessGroupZcoll>>(
      m, "ProcessGroupZcoll", "zcoll's c10d backend (use torch.distributed, not this class).")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::chrono::milliseconds timeout, zcoll::BackendConfig config) {
             return c10::make_intrusive<zcoll::ProcessGroupZcoll>(store, rank, size, timeout, std::move(config));
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"), py::arg("config"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("config", [](zcoll::ProcessGroupZcoll& pg) { return pg.config(); },
                             "A copy of the group's BackendConfig.")
      .def_property_readonly("transport", [](zcoll::ProcessGroupZcoll& pg) { return std::string(pg.transportName()); })
      .def_property_readonly("shared_memory", [](zcoll::ProcessGroupZcoll& pg) {
             const auto lanes = pg.sharedMemory();
             py::dict d;
             d["collectives"] = sharedMemoryDict(lanes[0]);
             d["p2p"] = sharedMemoryDict(lanes[1]);
             d["bytes"] = lanes[0].bytes + lanes[1].bytes;
             return d;
           }, "This rank's shared memory: each lane's {ring_bytes, rings_allocated, bytes} and their total bytes.")
      .def_property_readonly("host_of", [](zcoll::ProcessGroupZcoll& pg) { return pg.topology().hostOfEachRank(); },
                             "Each rank's host, numbered in order of each host's lowest rank.")
      .def_property_readonly("topology", [](zcoll::ProcessGroupZcoll& pg) { return pg.topology().describe(); })
      .def_property_readonly("chunk_bytes", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().chunkBytes; })
      .def_property_readonly("cost_model", [](zcoll::ProcessGroupZcoll& pg) { return pg.costModel(); },
                             "A copy of the tuner's cost model, the same on every rank (measured, rank 0's or the "
                             "configured one).")
      .def_property_readonly("measurement", [](zcoll::ProcessGroupZcoll& pg) {
             py::dict d;
             d["shm"] = pg.measurement().shm;
             d["net"] = pg.measurement().net;
             d["seconds"] = pg.measurement().seconds;
             return d;
           }, "What ZCOLL_TUNING=measure measured: {shm, net: whether that link was, seconds: the probe's time}.")
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
