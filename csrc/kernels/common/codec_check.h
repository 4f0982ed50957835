// Host-side argument checks shared by the CPU and CUDA codec entry points.
#pragma once

#include "kernels/common/codec_math.h"
#include "util/error.h"

namespace zcoll::kernels {

inline void checkCodecBlock(Codec codec, int block) {
  ZCOLL_CHECK(!isBlockwise(codec) || validBlock(block),
              "codec block size must be a multiple of 16 in [16, 65536], got ", block);
}

}  // namespace zcoll::kernels
