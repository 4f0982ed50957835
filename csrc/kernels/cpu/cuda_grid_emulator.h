// Runs the CUDA codec kernel bodies (kernels/common/codec_grid.h) on the host over a whole
// emulated launch: every grid block and every thread, in launch order, with the launch shape
// the CUDA launcher uses. Tests compare it with zcoll.reference to prove the kernels' indexing,
// bounds and tails, which a GPU-less machine cannot run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/codec_cpu.h"

namespace zcoll::kernels::cpu {

void emulateCudaEncode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
                       float residualScale, unsigned threadsPerBlock);

void emulateCudaDecode(Codec codec, int block, const uint8_t* in, size_t n, float* out,
                       unsigned threadsPerBlock);

}  // namespace zcoll::kernels::cpu
