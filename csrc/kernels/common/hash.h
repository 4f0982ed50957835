// Counter-based hash for stochastic rounding (docs/arithmetic.md §5.2): any rank, any device,
// any chunking computes the same u for (seed, step, rank, stage, element index).
#pragma once

#include <cstdint>

#include "kernels/common/hd.h"

namespace zcoll::kernels {

constexpr uint32_t kGatherStage = 0xFFFFFFFFu;

ZCOLL_HD uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

ZCOLL_HD uint32_t mix32(uint32_t h, uint32_t v) { return fmix32(h ^ fmix32(v + 0x9E3779B9u)); }

ZCOLL_HD uint32_t streamKey(uint64_t seed, uint64_t step, uint32_t rank, uint32_t stage) {
  uint32_t h = 0x2545F491u;
  h = mix32(h, static_cast<uint32_t>(seed));
  h = mix32(h, static_cast<uint32_t>(seed >> 32));
  h = mix32(h, static_cast<uint32_t>(step));
  h = mix32(h, static_cast<uint32_t>(step >> 32));
  h = mix32(h, rank);
  return mix32(h, stage);
}

ZCOLL_HD uint32_t elementHash(uint32_t key, uint64_t index) {
  return fmix32(fmix32(static_cast<uint32_t>(index) ^ key) ^
                mix32(key, static_cast<uint32_t>(index >> 32)));
}

// u in [0, 1): 24 hash bits, exact in float32.
ZCOLL_HD float uniform01(uint32_t key, uint64_t index) {
  return static_cast<float>(elementHash(key, index) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace zcoll::kernels
