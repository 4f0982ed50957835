// Turning torch arguments into zcoll's: dtype and reduce-op conversion and the checks every
// collective makes of its tensors (each raises a torch error naming the collective).
#pragma once

#include <torch/csrc/distributed/c10d/Types.hpp>

#include <ATen/ATen.h>

#include <vector>

#include "backend/errors.h"
#include "kernels/common/dtypes.h"

namespace zcoll {

DType toDType(at::ScalarType t, const char* op);
// PREMUL_SUM's factor goes to *premul.
RedOp toRedOp(const c10d::ReduceOp& op, double* premul);
// `op` is defined for `dtype` (ArgumentError naming the collective otherwise).
void checkReduceOp(DType dtype, RedOp op, const char* collective);
// Checks what every zcoll collective needs of a tensor and returns its dtype.
DType checkTensor(const at::Tensor& t, const char* op);
// Every tensor of `list` (the `role`s) has `like`'s size and dtype (`like` is the `likeRole`).
void checkMatches(const std::vector<at::Tensor>& list, const at::Tensor& like, const char* op, const char* role,
                  const char* likeRole);
// `output` holds `size` x `input` elements of input's dtype (all-gather into one tensor).
void checkGatherPair(const at::Tensor& output, const at::Tensor& input, int size, const char* op);

}  // namespace zcoll
