// Python surface of ProcessGroupZcoll: constructed by zcoll's backend creator (python/zcoll/
// backend.py), bound as a subclass of torch's Backend so pg._get_backend(device) exposes it.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/utils/pybind.h>

#include "backend/process_group_zcoll.h"

namespace py = pybind11;

void bindBackend(py::module_& m) {
  py::class_<zcoll::ProcessGroupZcoll, c10d::Backend, c10::intrusive_ptr<zcoll::ProcessGroupZcoll>>(
      m, "ProcessGroupZcoll", "zcoll's c10d backend (use torch.distributed, not this class).")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::chrono::milliseconds timeout, const std::string& transport, size_t chunkBytes,
                       size_t shmRingBytes, const std::string& socketIfname, const std::string& storeHost,
                       bool debug, const std::string& allreduceAlgo, const std::string& reduceAlgo,
                       const std::string& reduceScatterAlgo, const std::string& compression,
                       size_t compressMinBytes, int compressBlock, bool stageCpu) {
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
             return c10::make_intrusive<zcoll::ProcessGroupZcoll>(store, rank, size, timeout, std::move(c));
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"), py::arg("transport"),
           py::arg("chunk_bytes"), py::arg("shm_ring_bytes"), py::arg("socket_ifname"), py::arg("store_host"),
           py::arg("debug"), py::arg("allreduce_algo") = "", py::arg("reduce_algo") = "",
           py::arg("reduce_scatter_algo") = "", py::arg("compression") = "none",
           py::arg("compress_min_bytes") = size_t{65536}, py::arg("compress_block") = 256,
           py::arg("stage_cpu") = false, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("transport", [](zcoll::ProcessGroupZcoll& pg) { return std::string(pg.transportName()); })
      .def_property_readonly("chunk_bytes", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().chunkBytes; })
      .def_property_readonly("compression", [](zcoll::ProcessGroupZcoll& pg) { return pg.config().compression; })
      .def("allreduce_with_feedback", &zcoll::ProcessGroupZcoll::allreduceWithFeedback, py::arg("tensor"),
           py::arg("residual"), py::arg("average") = true, py::call_guard<py::gil_scoped_release>(),
           "Compressed all-reduce with error feedback; returns a Work (get_future() for DDP hooks).");
}
