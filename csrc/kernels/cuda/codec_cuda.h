// CUDA codecs: the kernels of kernels/common/codec_grid.h on device pointers, on a caller's
// stream. Every CUDA call is checked; errors throw zcoll::Error. Stream discipline: all work of
// one call is enqueued on `stream` in order (scratch memset, absmax, encode); nothing syncs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/codec_math.h"

namespace zcoll::kernels::cuda {

// Device scratch an encode needs (zeroed by encode itself).
size_t encodeScratchBytes(Codec codec, size_t n, int block);

// All pointers are device pointers; `stream` is a cudaStream_t (nullptr: the legacy stream).
void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
            float residualScale, void* scratch, void* stream);

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out, void* stream);

// Number of visible CUDA devices; 0 (not an error) when there is no driver or device.
int deviceCount();

}  // namespace zcoll::kernels::cuda
