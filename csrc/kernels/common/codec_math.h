// Codec definitions and per-element / per-block math of docs/arithmetic.md §5, shared by the
// CPU loops, the CUDA kernels and the CPU grid emulator.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/common/float_convert.h"
#include "kernels/common/hash.h"
#include "kernels/common/hd.h"

namespace zcoll::kernels {

enum class Codec : int { kFp16 = 0, kBf16 = 1, kInt8 = 2, kInt4 = 3 };

constexpr int kDefaultBlock = 256;
constexpr int kMinBlock = 16;
constexpr int kMaxBlock = 65536;
constexpr uint32_t kNanScaleBits = 0x7FC00000u;

// What one encode needs besides its data.
struct CodecParams {
  Codec codec = Codec::kInt8;
  int block = kDefaultBlock;
  uint32_t key = 0;   // streamKey(seed, step, rank, stage)
  uint64_t base = 0;  // global index of the segment's first element
};

ZCOLL_HD bool isBlockwise(Codec c) { return c == Codec::kInt8 || c == Codec::kInt4; }
ZCOLL_HD int codecBits(Codec c) { return c == Codec::kInt8 ? 8 : c == Codec::kInt4 ? 4 : 16; }
ZCOLL_HD int codecQmax(Codec c) { return c == Codec::kInt8 ? 127 : c == Codec::kInt4 ? 7 : 0; }

ZCOLL_HD bool validBlock(int block) {
  return block >= kMinBlock && block <= kMaxBlock && block % 16 == 0;
}

// Bytes of codes for `count` elements (int4: two per byte, rounded up).
ZCOLL_HD size_t codeBytes(Codec c, size_t count) { return (count * codecBits(c) + 7) / 8; }

// Wire bytes of a whole block: float32 scale + codes.
ZCOLL_HD size_t blockBytes(Codec c, size_t count) { return 4 + codeBytes(c, count); }

// Wire size of an n-element segment whose blocks start at its first element.
ZCOLL_HD size_t encodedBytes(Codec c, size_t n, int block) {
  if (!isBlockwise(c)) return 2 * n;
  const size_t full = n / block, tail = n % block;
  return full * blockBytes(c, block) + (tail ? blockBytes(c, tail) : 0);
}

ZCOLL_HD bool isFiniteBits(float x) { return (floatBits(x) & 0x7F800000u) != 0x7F800000u; }

// What one block's absmax pass produces, and what encoding derives from it.
struct BlockScale {
  float scale;  // stored on the wire; NaN for a non-finite block, 0 for a zero/flushed block
  float inv;    // qmax / absmax, used to quantise
  bool live;    // false: every code is 0
};

ZCOLL_HD BlockScale blockScale(float absmax, bool nonfinite, int qmax) {
  if (nonfinite) return {bitsToFloat(kNanScaleBits), 0.0f, false};
  const float q = static_cast<float>(qmax);
  const float inv = q / absmax;  // absmax == 0 (or tiny) gives +inf: a zero block
  if (floatBits(inv) == 0x7F800000u) return {0.0f, 0.0f, false};
  return {absmax / q, inv, true};
}

// One element's code: clamp(floor(x*inv + u), -qmax, qmax), each op a rounded float32 op.
ZCOLL_HD int quantizeOne(float x, float inv, float u, int qmax) {
  float t = x * inv;
  t = t + u;
  float f = floorf(t);
  const float q = static_cast<float>(qmax);
  f = f > q ? q : (f < -q ? -q : f);
  return static_cast<int>(f);
}

ZCOLL_HD float dequantizeOne(int q, float scale) { return static_cast<float>(q) * scale; }

// Error-feedback residual (v - decoded) * scale, 0 where either side is not finite.
ZCOLL_HD float residualOne(float v, float decoded, float scale) {
  if (!isFiniteBits(v) || !isFiniteBits(decoded)) return 0.0f;
  float r = v - decoded;
  return scale == 1.0f ? r : r * scale;
}

ZCOLL_HD uint8_t packInt4(int lo, int hi) {
  return static_cast<uint8_t>((static_cast<unsigned>(lo) & 0xFu) | ((static_cast<unsigned>(hi) & 0xFu) << 4));
}

ZCOLL_HD int unpackInt4(uint8_t byte, int which) {
  const int nib = which ? (byte >> 4) : (byte & 0xF);
  return nib >= 8 ? nib - 16 : nib;
}

// Cast codecs: one element <-> its 16 wire bits.
ZCOLL_HD uint16_t castEncode(Codec c, float x) { return c == Codec::kFp16 ? floatToHalf(x) : floatToBf16(x); }
ZCOLL_HD float castDecode(Codec c, uint16_t h) { return c == Codec::kFp16 ? halfToFloat(h) : bf16ToFloat(h); }

}  // namespace zcoll::kernels
