// zcoll._C: the only file that knows Python. Today it exposes build facts and the test surface
// of the shared kernel math (docs/arithmetic.md), so tests prove it equals zcoll.reference.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "zcoll_build_config.h"
#include "kernels/common/codec_grid.h"
#include "kernels/common/codec_math.h"
#include "kernels/common/float_convert.h"
#include "kernels/common/hash.h"
#include "algorithms/partition.h"
#include "bindings/names.h"
#include "kernels/common/dtypes.h"
#include "kernels/cpu/codec_cpu.h"
#include "kernels/cpu/reduce_cpu.h"
#include "kernels/cpu/cuda_grid_emulator.h"
#if ZCOLL_WITH_CUDA
#include "kernels/cuda/codec_cuda.h"
#include "transport/ucx/ucx_transport.h"
#endif

namespace py = pybind11;
using namespace zcoll::kernels;
using zcoll::bindings::parseDType;
using zcoll::bindings::parseRedOp;

void bindTransport(py::module_& m);  // transport_bindings.cc
void bindBackend(py::module_& m);    // backend_bindings.cc
void bindGroup(py::module_& m);      // group_bindings.cc

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Checks that `a` is a contiguous array of the storage size of `dtype` and returns its element count.
size_t checkStorage(const py::array& a, zcoll::DType dtype, const char* what) {
  if (static_cast<size_t>(a.itemsize()) != zcoll::dtypeSize(dtype) || !(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(what) + ": expected a contiguous array of " +
                                zcoll::dtypeName(dtype) + " storage");
  return static_cast<size_t>(a.size());
}

py::array reduceSourcesPy(const std::string& dtypeName, const std::string& opName, const std::vector<py::array>& srcs,
                          int64_t divisor) {
  const zcoll::DType dtype = parseDType(dtypeName);
  const zcoll::RedOp op = parseRedOp(opName);
  if (srcs.empty()) throw std::invalid_argument("reduce_sources needs at least one source");
  const size_t n = checkStorage(srcs[0], dtype, "source 0");
  std::vector<const void*> ptrs;
  for (const auto& s : srcs) {
    if (checkStorage(s, dtype, "source") != n) throw std::invalid_argument("sources differ in size");
    ptrs.push_back(s.data());
  }
  py::array out(srcs[0].dtype(), static_cast<py::ssize_t>(n));
  cpu::reduceSources(dtype, op, ptrs.data(), static_cast<int>(ptrs.size()), out.mutable_data(), n, divisor);
  return out;
}

py::array premultiplyPy(const std::string& dtypeName, const py::array& x, double factor) {
  const zcoll::DType dtype = parseDType(dtypeName);
  const size_t n = checkStorage(x, dtype, "input");
  py::array out(x.dtype(), static_cast<py::ssize_t>(n));
  cpu::premultiply(dtype, x.data(), out.mutable_data(), n, factor);
  return out;
}

// Bad arguments from Python are ValueErrors, checked before any size is computed from them.
void checkBlockArg(Codec codec, int block) {
  if (isBlockwise(codec) && !validBlock(block))
    throw std::invalid_argument("block size must be a multiple of 16 in [16, 65536], got " + std::to_string(block));
}

// Applies `f` element-wise from one numpy array into a new one of another type.
template <typename In, typename Out, typename F>
py::array_t<Out> mapArray(const Array<In>& in, F f) {
  py::array_t<Out> out(in.size());
  const In* src = in.data();
  Out* dst = out.mutable_data();
  for (py::ssize_t i = 0; i < in.size(); ++i) dst[i] = f(src[i]);
  return out;
}

py::object codecEncode(const std::string& codecName, const Array<float>& x, int block, uint32_t key,
                       uint64_t base, bool withResidual, float residualScale, unsigned emulateThreads) {
  const CodecParams p{zcoll::bindings::parseCodec(codecName), block, key, base};
  const size_t n = static_cast<size_t>(x.size());
  checkBlockArg(p.codec, block);
  py::array_t<uint8_t> out(static_cast<py::ssize_t>(encodedBytes(p.codec, n, block)));
  py::array_t<float> residual(withResidual ? x.size() : 0);
  float* res = withResidual ? residual.mutable_data() : nullptr;
  if (emulateThreads)
    cpu::emulateCudaEncode(p, x.data(), n, out.mutable_data(), res, residualScale, emulateThreads);
  else
    cpu::encode(p, x.data(), n, out.mutable_data(), res, residualScale);
  if (withResidual) return py::make_tuple(out, residual);
  return std::move(out);
}

py::array_t<float> codecDecode(const std::string& codecName, const Array<uint8_t>& buf, size_t n,
                               int block, unsigned emulateThreads) {
  const Codec codec = zcoll::bindings::parseCodec(codecName);
  checkBlockArg(codec, block);
  if (static_cast<size_t>(buf.size()) != encodedBytes(codec, n, block))
    throw std::invalid_argument(codecName + ": " + std::to_string(buf.size()) + " bytes cannot hold " +
                                std::to_string(n) + " elements");
  py::array_t<float> out(static_cast<py::ssize_t>(n));
  if (emulateThreads)
    cpu::emulateCudaDecode(codec, block, buf.data(), n, out.mutable_data(), emulateThreads);
  else
    cpu::decode(codec, block, buf.data(), n, out.mutable_data());
  return out;
}

py::dict buildInfo() {
  py::dict d;
  d["torch_version"] = ZCOLL_TORCH_VERSION;
  d["compiler"] = ZCOLL_CXX_COMPILER;
  d["cxx_flags"] = ZCOLL_CXX_FLAGS;
  d["build_type"] = ZCOLL_BUILD_TYPE;
  d["fp_contract_off"] = std::strstr(ZCOLL_CXX_FLAGS, "-ffp-contract=off") != nullptr;
#if ZCOLL_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = ZCOLL_CUDA_VERSION;
  d["cuda_archs"] = py::str(ZCOLL_CUDA_ARCHS).attr("split")(";");
  d["cuda_flags"] = ZCOLL_CUDA_FLAGS;
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_archs"] = py::list();
  d["cuda_flags"] = "";
#endif
  d["cuda_threads_per_block"] = kCodecThreadsPerBlock;
  d["ucx"] = zcoll::ucxBuilt();  // the UCX transport (docs/ucx.md); its library loads at run time
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "zcoll native extension";
  m.def("build_info", &buildInfo, "How this extension was built.");
  m.def("ucx_version", &zcoll::ucxVersion, py::arg("library"),
        "Loads UCX from `library` (a libucp path or directory; \"\": the loader's search path) and returns "
        "its version; raises naming what to install when it cannot.");
  m.def("cuda_device_count", [] {
#if ZCOLL_WITH_CUDA
    return zcoll::kernels::cuda::deviceCount();
#else
    return 0;
#endif
  }, "CUDA devices visible to the compiled kernels (0 without CUDA or a driver).");

  // Test surface of kernels/common (docs/arithmetic.md §2, §5).
  m.def("float_to_half_bits", [](const Array<float>& x) { return mapArray<float, uint16_t>(x, floatToHalf); });
  m.def("half_bits_to_float", [](const Array<uint16_t>& h) { return mapArray<uint16_t, float>(h, halfToFloat); });
  m.def("float_to_bf16_bits", [](const Array<float>& x) { return mapArray<float, uint16_t>(x, floatToBf16); });
  m.def("bf16_bits_to_float", [](const Array<uint16_t>& h) { return mapArray<uint16_t, float>(h, bf16ToFloat); });
  m.def("stream_key", &streamKey, py::arg("seed"), py::arg("step"), py::arg("rank"), py::arg("stage"));
  m.def("element_hash", [](uint32_t key, const Array<uint64_t>& idx) {
    return mapArray<uint64_t, uint32_t>(idx, [key](uint64_t i) { return elementHash(key, i); });
  });
  m.def("uniform", [](uint32_t key, uint64_t base, size_t n) {
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    for (size_t i = 0; i < n; ++i) out.mutable_data()[i] = uniform01(key, base + i);
    return out;
  });
  m.def("encoded_bytes", [](const std::string& codecName, size_t n, int block) {
    const Codec codec = zcoll::bindings::parseCodec(codecName);
    checkBlockArg(codec, block);
    return encodedBytes(codec, n, block);
  }, py::arg("codec"), py::arg("n"), py::arg("block") = kDefaultBlock);
  m.def("codec_encode", &codecEncode, py::arg("codec"), py::arg("x"), py::kw_only(),
        py::arg("block") = kDefaultBlock, py::arg("key") = 0, py::arg("base") = 0,
        py::arg("with_residual") = false, py::arg("residual_scale") = 1.0f,
        py::arg("emulate_cuda_threads") = 0,
        "Encode float32 x; emulate_cuda_threads > 0 runs the CUDA kernel bodies on a host grid.");
  m.def("codec_decode", &codecDecode, py::arg("codec"), py::arg("buf"), py::arg("n"), py::kw_only(),
        py::arg("block") = kDefaultBlock, py::arg("emulate_cuda_threads") = 0);
  // Test surface of the reduction primitive and the partition (docs/arithmetic.md §1, §3-4).
  m.def("reduce_sources", &reduceSourcesPy, py::arg("dtype"), py::arg("op"), py::arg("srcs"),
        py::arg("divisor") = 0, "dst = round_T(src0 ⊕ src1 ⊕ ... (/ divisor)), accumulated in A(T).");
  m.def("premultiply", &premultiplyPy, py::arg("dtype"), py::arg("x"), py::arg("factor"));
  m.def("partition", [](size_t n, size_t parts, size_t align) {
    if (parts < 1 || align < 1) throw std::invalid_argument("partition needs parts >= 1 and align >= 1");
    std::vector<std::pair<size_t, size_t>> out;
    for (const auto& s : zcoll::partition(n, parts, align)) out.emplace_back(s.begin, s.end);
    return out;
  }, py::arg("n"), py::arg("parts"), py::arg("align"));
  m.attr("GATHER_STAGE") = kGatherStage;
  bindTransport(m);
  bindBackend(m);
  bindGroup(m);
  m.attr("DEFAULT_BLOCK") = kDefaultBlock;
}
