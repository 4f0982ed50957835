// Bit-exact float32 <-> float16 / bfloat16 conversions of docs/arithmetic.md §2.
// Written on integer bits (no hardware conversion) so host, device and numpy agree on NaNs;
// the fp16 ones use one exact float32 add/subtract for subnormal halves.
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
// Branch-free (every case computed, the result picked by selects) so that a loop over it
// vectorises (codec_cpu.cc). NaN and the case split are integer math on the bits; the one float
// operation rounds a finite value exactly as IEEE RNE requires (see below).
ZCOLL_HD uint16_t floatToHalf(float f) {
  const uint32_t b = floatBits(f);
  const uint32_t ax = b & 0x7FFFFFFFu;
  const uint32_t nan = 0x7E00u | ((ax & 0x7FFFFFu) >> 13);
  // |f| >= 2^-14, a normal half: rebias 127 -> 15, RNE on the 13 dropped bits. From 65520
  // (0x477FF000) up, inf included, this reaches 0x7C00 or more: clamped, that is +-inf.
  const uint32_t m = ax - (112u << 23);
  const uint32_t r = (m + 0xFFFu + ((m >> 13) & 1u)) >> 13;
  const uint32_t normal = r < 0x7C00u ? r : 0x7C00u;
  // |f| < 2^-14, a subnormal half (a multiple of 2^-24): |f| + 0.5 lies in [0.5, 1), whose float32
  // spacing is 2^-24, so the (IEEE RNE) addition rounds |f| to the nearest multiple of 2^-24,
  // ties to even, and the low bits of the sum are that multiple: the half's bits (0x400 when it
  // carries into the smallest normal, which is right). Float32 subnormal inputs give 0, also
  // under flush-to-zero / denormals-are-zero; the sum is never subnormal.
  const uint32_t sub = floatBits(bitsToFloat(ax) + 0.5f) - 0x3F000000u;
  const uint32_t h = ax > 0x7F800000u ? nan : ax < 0x38800000u ? sub : normal;
  return static_cast<uint16_t>(((b >> 16) & 0x8000u) | h);
}

// float16 bits -> float32, exact; a NaN keeps sign and payload and gets the quiet bit.
// Branch-free like floatToHalf.
ZCOLL_HD float halfToFloat(uint16_t h) {
  const uint32_t o = static_cast<uint32_t>(h & 0x7FFFu) << 13;  // exponent and mantissa, float32 places
  const uint32_t normal = o + (112u << 23);                       // rebias 15 -> 127
  const uint32_t special = (o + (224u << 23)) | (o > 0x0F800000u ? 0x00400000u : 0u);  // inf; NaN: quiet
  // Subnormal m * 2^-24: (2^-14 + m * 2^-24) - 2^-14, both operands normal floats and the
  // difference exact (Sterbenz), in any rounding mode and under flush-to-zero.
  const uint32_t sub = floatBits(bitsToFloat(o + (113u << 23)) - bitsToFloat(113u << 23));
  const uint32_t bits = o >= 0x0F800000u ? special : o >= 0x00800000u ? normal : sub;
  return bitsToFloat((static_cast<uint32_t>(h & 0x8000u) << 16) | bits);
}

}  // namespace zcoll::kernels
