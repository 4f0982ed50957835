// The one reduction primitive every algorithm's order is built from (docs/arithmetic.md §3-4):
//   dst[i] = round_T( [acc = src[0][i]; acc = acc ⊕ src[1][i]; ...; acc = acc ⊕ src[k-1][i]] (/ divisor) )
// accumulating in A(T) (float32 for float16/bfloat16) and rounding once. A ring hop is
// {incoming, local}; a tree node is {own, child1, child2}; one-/two-shot is {x_0, ..., x_{p-1}}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common/dtypes.h"

namespace zcoll::kernels::cpu {

// Why `op` is not defined for `dtype` (bitwise on floats, AVG/PREMUL_SUM on bool), or "" when it
// is. PREMUL_SUM reduces like SUM here: scale inputs with premultiply() first.
std::string reduceOpProblem(DType dtype, RedOp op);
// Throws zcoll::Error naming reduceOpProblem's reason.
void checkReduceOp(DType dtype, RedOp op);

// `divisor` > 0 applies AVG's division by p before the rounding (floats: / float(p) in A(T);
// integers: C truncating division of the wrapped sum). dst may alias any source.
void reduceSources(DType dtype, RedOp op, const void* const* srcs, int nsrc, void* dst, size_t n,
                   int64_t divisor = 0);

// PREMUL_SUM's local step: dst = round_T(x * f), f in A(T); integer T needs an integral f (cast
// with wrap-around). dst may alias x.
void premultiply(DType dtype, const void* x, void* dst, size_t n, double factor);

// float32 / float16 / bfloat16 <-> float32, their A(T): exact in, one rounding (RNE) out; what
// the compressed schedules, which run in float32, do around them. dst may not alias x.
void toFloat32(DType dtype, const void* x, float* dst, size_t n);
void fromFloat32(DType dtype, const float* x, void* dst, size_t n);

}  // namespace zcoll::kernels::cpu
