#include "kernels/cpu/codec_cpu.h"

#include "kernels/common/codec_check.h"
#include "kernels/common/codec_grid.h"
#include "util/error.h"

namespace zcoll::kernels::cpu {

// The CUDA bodies with one thread per grid block: both passes of a codec block run back to
// back while it is in cache. (Vectorised loops come with the fused primitives; they must equal
// this.)
void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
            float residualScale) {
  checkCodecBlock(p.codec, p.block);
  const EncodeArgs a{p.codec, p.block, p.key, p.base, x, n, out, residual, residualScale};
  const size_t blocks = gridBlocks(p.codec, n, p.block, 1);
  for (size_t b = 0; b < blocks; ++b) {
    BlockScratch s{0, 0};
    if (isBlockwise(p.codec)) absmaxBody(b, 0, 1, a, s);
    encodeBody(b, 0, 1, a, s);
  }
}

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out) {
  checkCodecBlock(codec, block);
  const DecodeArgs a{codec, block, in, n, out};
  const size_t blocks = gridBlocks(codec, n, block, 1);
  for (size_t b = 0; b < blocks; ++b) decodeBody(b, 0, 1, a);
}

}  // namespace zcoll::kernels::cpu
