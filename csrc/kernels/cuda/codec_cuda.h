// CUDA codecs: the kernels of kernels/common/codec_grid.h on device pointers, on a caller's
// stream. Every CUDA call is checked; errors throw zcoll::Error. Stream discipline: all work of
// one call is enqueued on `stream` in order (e.g. scratch memset, absmax, encode); only
// synchronize() waits (docs/architecture.md, "Device tensors").
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/codec_grid.h"
#include "kernels/common/codec_math.h"

namespace zcoll::kernels::cuda {

// Device scratch an encode needs (zeroed by encode itself).
size_t encodeScratchBytes(Codec codec, size_t n, int block);

// All pointers are device pointers; `stream` is a cudaStream_t (nullptr: the legacy stream).
void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
            float residualScale, void* scratch, void* stream);

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out, void* stream);

// decodeSumBody / addResidualBody over the elements (kernels/common/codec_grid.h).
void decodeSum(const DecodeSumArgs& a, void* stream);
void addResidual(float* x, float* residual, size_t n, void* stream);

// cudaMemcpyAsync on `stream`; the host side should be page-locked for the copy to be async.
void copyToHost(void* host, const void* device, size_t bytes, void* stream);
void copyToDevice(void* device, const void* host, size_t bytes, void* stream);
// The host waits for everything enqueued on `stream`.
void synchronize(void* stream);
// This thread's current device in zcoll's CUDA runtime (linked statically: it does not share
// torch's per-thread current device, so the launch code sets it before every use).
void setDevice(int index);

// Number of visible CUDA devices; 0 (not an error) when there is no driver or device.
int deviceCount();

}  // namespace zcoll::kernels::cuda
