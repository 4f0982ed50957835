#include "kernels/cpu/cuda_grid_emulator.h"

#include <vector>

#include "kernels/common/codec_check.h"
#include "kernels/common/codec_grid.h"
#include "util/error.h"

namespace zcoll::kernels::cpu {

void emulateCudaEncode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
                       float residualScale, unsigned threadsPerBlock) {
  checkCodecBlock(p.codec, p.block);
  ZCOLL_CHECK(threadsPerBlock > 0, "threads per block must be positive");
  const EncodeArgs a{p.codec, p.block, p.key, p.base, x, n, out, residual, residualScale};
  const size_t blocks = gridBlocks(p.codec, n, p.block, threadsPerBlock);
  std::vector<BlockScratch> scratch(isBlockwise(p.codec) ? blocks : 0, BlockScratch{0, 0});
  const BlockScratch none{0, 0};
  if (isBlockwise(p.codec)) {  // launch 1 completes before launch 2 starts
    for (size_t b = 0; b < blocks; ++b)
      for (unsigned t = 0; t < threadsPerBlock; ++t) absmaxBody(b, t, threadsPerBlock, a, scratch[b]);
  }
  for (size_t b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threadsPerBlock; ++t)
      encodeBody(b, t, threadsPerBlock, a, scratch.empty() ? none : scratch[b]);
}

void emulateCudaDecode(Codec codec, int block, const uint8_t* in, size_t n, float* out,
                       unsigned threadsPerBlock) {
  checkCodecBlock(codec, block);
  ZCOLL_CHECK(threadsPerBlock > 0, "threads per block must be positive");
  const DecodeArgs a{codec, block, in, n, out};
  const size_t blocks = gridBlocks(codec, n, block, threadsPerBlock);
  for (size_t b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threadsPerBlock; ++t) decodeBody(b, t, threadsPerBlock, a);
}

}  // namespace zcoll::kernels::cpu
