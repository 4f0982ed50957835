#include "kernels/cpu/codec_cpu.h"

#include <bit>
#include <cstring>
#include <vector>

#include "kernels/common/codec_check.h"
#include "kernels/common/codec_grid.h"
#include "kernels/cpu/vector_clones.h"
#include "util/error.h"

namespace zcoll::kernels::cpu {
namespace {

// The blockwise codecs as plain loops over one codec block, so the compiler vectorises them:
// every element still goes through the per-element math of codec_math.h / hash.h (the same
// float32 operations in the same order; no contraction, no fast-math), so the result is the
// common bodies' bit for bit (tests/test_native_math.py compares every path with the
// reference). On x86-64 each loop is also built for AVX-512 and AVX2 (vector_clones.h).
// (CMakeLists.txt compiles this file with -fno-trapping-math, without which floorf and float
// selects block vectorisation; no value changes.)

// absmaxBody with one thread: the largest |x| as bits (non-negative floats order like their
// bits), and whether anything is inf/NaN (then the block's scale is NaN and absmax is unused).
ZCOLL_VECTOR_CLONES
BlockScratch absmaxLoop(const float* x, size_t n) {
  uint32_t m = 0, bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    bits &= 0x7FFFFFFFu;
    bad |= bits >= 0x7F800000u ? 1u : 0u;
    m = bits > m ? bits : m;
  }
  return {m, bad};
}

// uniform01(key, base + i) with the index's high word hoisted: the caller splits runs where it
// changes, so the loop is 32-bit integer math only (elementHash spelled out).
ZCOLL_VECTOR_CLONES
void quantizeRun(const float* x, size_t n, float inv, uint32_t key, uint64_t base, int qmax, int32_t* q) {
  const uint32_t high = mix32(key, static_cast<uint32_t>(base >> 32)), low = static_cast<uint32_t>(base);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t h = fmix32(fmix32((low + static_cast<uint32_t>(i)) ^ key) ^ high);
    q[i] = quantizeOne(x[i], inv, static_cast<float>(h >> 8) * (1.0f / 16777216.0f), qmax);
  }
}

void quantizeLoop(const float* x, size_t n, float inv, uint32_t key, uint64_t base, int qmax, int32_t* q) {
  for (size_t done = 0; done < n;) {
    const uint64_t index = base + done, toWrap = (uint64_t{1} << 32) - (index & 0xFFFFFFFFu);
    const size_t run = n - done < toWrap ? n - done : static_cast<size_t>(toWrap);
    quantizeRun(x + done, run, inv, key, index, qmax, q + done);
    done += run;
  }
}

// residualOne as selects (no early return), so it vectorises; same values.
ZCOLL_VECTOR_CLONES
void residualLoop(const float* x, const int32_t* q, size_t n, float scale, float residualScale, float* residual) {
  for (size_t i = 0; i < n; ++i) {
    const float d = dequantizeOne(q[i], scale), r = x[i] - d;
    const bool finite = isFiniteBits(x[i]) && isFiniteBits(d);
    residual[i] = finite ? (residualScale == 1.0f ? r : r * residualScale) : 0.0f;
  }
}

ZCOLL_VECTOR_CLONES
void packLoop(Codec codec, const int32_t* q, size_t n, uint8_t* codes) {
  if (codec == Codec::kInt4) {
    for (size_t k = 0; k < n / 2; ++k) codes[k] = packInt4(q[2 * k], q[2 * k + 1]);
    if (n % 2) codes[n / 2] = packInt4(q[n - 1], 0);
  } else {
    for (size_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(static_cast<int8_t>(q[i]));
  }
}

ZCOLL_VECTOR_CLONES
void dequantizeLoop(Codec codec, const uint8_t* codes, size_t n, float scale, float* out) {
  if (codec == Codec::kInt4) {
    for (size_t k = 0; k < n / 2; ++k) {
      out[2 * k] = dequantizeOne(unpackInt4(codes[k], 0), scale);
      out[2 * k + 1] = dequantizeOne(unpackInt4(codes[k], 1), scale);
    }
    if (n % 2) out[n - 1] = dequantizeOne(unpackInt4(codes[n / 2], 0), scale);
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = dequantizeOne(static_cast<int8_t>(codes[i]), scale);
  }
}

// bfloat16 casts as selects (floatToBf16 / bf16ToFloat spelled without early returns, same bits),
// so they vectorise too. fp16 uses the common floatToHalf / halfToFloat, which are branch-free.
ZCOLL_VECTOR_CLONES
void encodeBf16Loop(const float* x, size_t n, uint8_t* out, float* residual, float residualScale) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t b = floatBits(x[i]);
    const bool nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
    const uint16_t h = static_cast<uint16_t>(nan ? (b >> 16) | 0x0040u : (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
    out[2 * i] = static_cast<uint8_t>(h), out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    if (residual) {
      const float d = bitsToFloat((static_cast<uint32_t>(h) << 16) | (nan ? 0x00400000u : 0u)), r = x[i] - d;
      residual[i] = isFiniteBits(x[i]) && isFiniteBits(d) ? (residualScale == 1.0f ? r : r * residualScale) : 0.0f;
    }
  }
}

ZCOLL_VECTOR_CLONES
void decodeBf16Loop(const uint8_t* in, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t b = (static_cast<uint32_t>(in[2 * i]) | (static_cast<uint32_t>(in[2 * i + 1]) << 8)) << 16;
    out[i] = bitsToFloat((b & 0x7FFFFFFFu) > 0x7F800000u ? b | 0x00400000u : b);
  }
}

// A 16-bit code in the little-endian wire: one 16-bit access on a little-endian host (two byte
// accesses vectorise badly: the fp16 loops ran at about half speed with them).
inline uint16_t loadU16(const uint8_t* p) {
  if constexpr (std::endian::native == std::endian::little) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
  } else {
    return static_cast<uint16_t>(p[0] | (p[1] << 8));
  }
}

inline void storeU16(uint8_t* p, uint16_t v) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof v);
  } else {
    p[0] = static_cast<uint8_t>(v), p[1] = static_cast<uint8_t>(v >> 8);
  }
}

ZCOLL_VECTOR_CLONES
void encodeFp16Loop(const float* x, size_t n, uint8_t* out, float* residual, float residualScale) {
  if (!residual) {  // two loops: GCC does not unswitch this one by itself (too big), nor vectorise it
    for (size_t i = 0; i < n; ++i) storeU16(out + 2 * i, floatToHalf(x[i]));
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = floatToHalf(x[i]);
    storeU16(out + 2 * i, h);
    const float d = halfToFloat(h), r = x[i] - d;  // residualOne as a select
    residual[i] = isFiniteBits(x[i]) && isFiniteBits(d) ? (residualScale == 1.0f ? r : r * residualScale) : 0.0f;
  }
}

ZCOLL_VECTOR_CLONES
void decodeFp16Loop(const uint8_t* in, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = halfToFloat(loadU16(in + 2 * i));
}

void encodeBlockwise(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
                     float residualScale) {
  const int qmax = codecQmax(p.codec);
  std::vector<int32_t> q(static_cast<size_t>(p.block));
  for (size_t first = 0; first < n; first += p.block) {
    const size_t count = n - first < static_cast<size_t>(p.block) ? n - first : p.block;
    const BlockScratch m = absmaxLoop(x + first, count);
    const BlockScale s = blockScale(bitsToFloat(m.absmaxBits), m.nonfinite != 0, qmax);
    uint8_t* wire = out + (first / p.block) * blockBytes(p.codec, p.block);
    storeU32(wire, floatBits(s.scale));
    if (s.live) quantizeLoop(x + first, count, s.inv, p.key, p.base + first, qmax, q.data());
    else std::fill(q.begin(), q.begin() + count, 0);  // a zero or non-finite block: every code 0
    packLoop(p.codec, q.data(), count, wire + 4);
    if (residual) residualLoop(x + first, q.data(), count, s.scale, residualScale, residual + first);
  }
}

}  // namespace

void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
            float residualScale) {
  checkCodecBlock(p.codec, p.block);
  if (isBlockwise(p.codec)) return encodeBlockwise(p, x, n, out, residual, residualScale);
  if (p.codec == Codec::kBf16) return encodeBf16Loop(x, n, out, residual, residualScale);
  return encodeFp16Loop(x, n, out, residual, residualScale);
}

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out) {
  checkCodecBlock(codec, block);
  if (codec == Codec::kBf16) return decodeBf16Loop(in, n, out);
  if (codec == Codec::kFp16) return decodeFp16Loop(in, n, out);
  for (size_t first = 0; first < n; first += block) {
    const size_t count = n - first < static_cast<size_t>(block) ? n - first : block;
    const uint8_t* wire = in + (first / block) * blockBytes(codec, block);
    dequantizeLoop(codec, wire + 4, count, bitsToFloat(loadU32(wire)), out + first);
  }
}

}  // namespace zcoll::kernels::cpu
