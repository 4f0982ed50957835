// CPU codecs of docs/arithmetic.md §5: encode/decode one segment (blocks start at x[0]).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/codec_math.h"

namespace zcoll::kernels::cpu {

// x[0..n) -> out[0..encodedBytes(codec, n, block)). With `residual`, also writes the
// error-feedback residual (x - D(E(x))) * residualScale.
void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual = nullptr,
            float residualScale = 1.0f);

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out);

}  // namespace zcoll::kernels::cpu
