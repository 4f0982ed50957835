// zcoll._C.ZcollGroup: the torch ProcessGroup that holds a zcoll group's backend (made by
// python/zcoll/group.py). torch's own ProcessGroup names a plugin's group after its backend type,
// "custom" (ProcessGroup::getBackendName), and DDP's logging data, pg.name() and error messages
// take the name from there; this subclass differs from torch's only in naming itself "zcoll".
#include <pybind11/pybind11.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/utils/pybind.h>

#include <string>

namespace py = pybind11;

namespace {

class ZcollGroup final : public c10d::ProcessGroup {
 public:
  using c10d::ProcessGroup::ProcessGroup;
  const std::string getBackendName() const override { return "zcoll"; }
};

}  // namespace

void bindGroup(py::module_& m) {
  py::class_<ZcollGroup, c10d::ProcessGroup, c10::intrusive_ptr<ZcollGroup>>(
      m, "ZcollGroup", "torch's ProcessGroup named \"zcoll\" (use torch.distributed, not this class).")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size) {
             return c10::make_intrusive<ZcollGroup>(store, rank, size);
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"));
}
