#include "backend/tensor_args.h"

#include <torch/version.h>

#include "kernels/cpu/reduce_cpu.h"

// The factor of PREMUL_SUM: torch 2.13 renamed NCCLPreMulSumSupplement to PreMulSumSupplement.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
using PreMulSumFactor = c10d::PreMulSumSupplement;
#else
using PreMulSumFactor = c10d::NCCLPreMulSumSupplement;
#endif

namespace zcoll {

DType toDType(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kDouble: return DType::kFloat64;
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kChar: return DType::kInt8;
    case at::kShort: return DType::kInt16;
    case at::kInt: return DType::kInt32;
    case at::kLong: return DType::kInt64;
    case at::kByte: return DType::kUInt8;
    case at::kBool: return DType::kBool;
    default:
      ZCOLL_CHECK_ARG_TYPE(false, "zcoll ", op, ": unsupported dtype ", t,
                           " (supported: float64/32/16, bfloat16, int8/16/32/64, uint8, bool)");
  }
}

RedOp toRedOp(const c10d::ReduceOp& op, double* premul) {
  switch (op.op_) {
    case c10d::ReduceOp::SUM: return RedOp::kSum;
    case c10d::ReduceOp::AVG: return RedOp::kAvg;
    case c10d::ReduceOp::PRODUCT: return RedOp::kProduct;
    case c10d::ReduceOp::MIN: return RedOp::kMin;
    case c10d::ReduceOp::MAX: return RedOp::kMax;
    case c10d::ReduceOp::BAND: return RedOp::kBand;
    case c10d::ReduceOp::BOR: return RedOp::kBor;
    case c10d::ReduceOp::BXOR: return RedOp::kBxor;
    case c10d::ReduceOp::PREMUL_SUM: {
      auto* s = dynamic_cast<PreMulSumFactor*>(op.supplement_.get());
      ZCOLL_CHECK_ARG(s != nullptr, "zcoll allreduce: PREMUL_SUM without a factor");
      *premul = s->tensor_factor.defined() ? s->tensor_factor.to(at::kDouble).item<double>() : s->double_factor;
      return RedOp::kPremulSum;
    }
    default: ZCOLL_CHECK_ARG(false, "zcoll: unsupported reduce op ", static_cast<int>(op.op_));
  }
}

void checkReduceOp(DType dtype, RedOp op, const char* collective) {
  const std::string problem = kernels::cpu::reduceOpProblem(dtype, op);
  ZCOLL_CHECK_ARG(problem.empty(), "zcoll ", collective, ": ", problem);
}

DType checkTensor(const at::Tensor& t, const char* op) {
  ZCOLL_CHECK_ARG(t.defined(), "zcoll ", op, ": undefined tensor");
  ZCOLL_CHECK_ARG(t.layout() == at::kStrided, "zcoll ", op, ": only dense tensors are supported");
#if ZCOLL_WITH_CUDA
  ZCOLL_CHECK_ARG(t.is_cpu() || t.is_cuda(), "zcoll ", op, ": tensors must be on the CPU or a CUDA device, got ",
                  t.device());
#else
  // Registered for cuda too, so that a CUDA tensor gets this message rather than torch's "no
  // backend for device".
  ZCOLL_CHECK_ARG_TYPE(!t.is_cuda(), "zcoll ", op, ": this zcoll was built without CUDA (ZCOLL_CUDA=off or no nvcc), so it "
              "cannot take CUDA tensors; move the tensor to the CPU, or rebuild zcoll with CUDA");
  ZCOLL_CHECK_ARG(t.is_cpu(), "zcoll ", op, ": tensors must be on the CPU, got ", t.device());
#endif
  return toDType(t.scalar_type(), op);
}

void checkMatches(const std::vector<at::Tensor>& list, const at::Tensor& like, const char* op, const char* role,
                  const char* likeRole) {
  for (const auto& t : list) {
    checkTensor(t, op);
    ZCOLL_CHECK_ARG(t.numel() == like.numel() && t.scalar_type() == like.scalar_type(), "zcoll ", op, ": every ",
                    role, " must match the ", likeRole, "'s size and dtype");
  }
}

void checkGatherPair(const at::Tensor& output, const at::Tensor& input, int size, const char* op) {
  checkTensor(input, op);
  checkTensor(output, op);
  ZCOLL_CHECK_ARG(output.scalar_type() == input.scalar_type() && output.numel() == input.numel() * size, "zcoll ",
                  op, ": output must hold world_size x input elements of the input's dtype");
}

}  // namespace zcoll
