// Bit-exact float32 <-> float16 / bfloat16 conversions of docs/arithmetic.md §2.
// Written on integer bits (no hardware conversion) so host, device and numpy agree on NaNs.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/common/hd.h"

namespace zcoll::kernels {

ZCOLL_HD uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

ZCOLL_HD float bitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN keeping sign and payload top.
ZCOLL_HD uint16_t floatToBf16(float f) {
  uint32_t b = floatBits(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

ZCOLL_HD float bf16ToFloat(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) b |= 0x00400000u;  // quiet bit on NaN
  return bitsToFloat(b);
}

// float32 -> float16 bits, IEEE round to nearest even with subnormals and overflow to inf.
ZCOLL_HD uint16_t floatToHalf(float f) {
  const uint32_t b = floatBits(f);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t ax = b & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((ax & 0x7FFFFFu) >> 13));
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {                                               // normal half: >= 2^-14
    uint32_t m = ax - (112u << 23);                                      // rebias 127 -> 15
    m += 0xFFFu + ((m >> 13) & 1u);                                      // RNE on the 13 dropped bits
    return static_cast<uint16_t>(sign | (m >> 13));
  }
  if (ax <= 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25: ties to even give 0
  // Subnormal half: value / 2^-24, rounded to nearest even.
  const uint32_t e = ax >> 23;
  const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14 .. 24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal: right
  return static_cast<uint16_t>(sign | q);
}

ZCOLL_HD float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1Fu) return bitsToFloat(sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u));
  if (exp != 0) return bitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bitsToFloat(sign);
  uint32_t e = 113u;  // subnormal: normalise the mantissa
  while (!(mant & 0x400u)) {
    mant <<= 1;
    --e;
  }
  return bitsToFloat(sign | (e << 23) | ((mant & 0x3FFu) << 13));
}

}  // namespace zcoll::kernels
