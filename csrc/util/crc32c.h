// CRC32C (Castagnoli: polynomial 0x1EDC6F41, reflected 0x82F63B78; the iSCSI / ext4 / SCTP CRC),
// header-only. It is there for opt-in checksums on the wire: a sender runs it over a message
// piece by piece as it goes out, the receiver over what arrives, and they compare.
//
//   crc32c(data, bytes)             the CRC of one buffer (init ~0, final xor ~0: "123456789" gives
//                                   0xE3069283);
//   crc32cExtend(crc, data, bytes)  carries on a CRC over more bytes, so that
//                                   crc32cExtend(crc32c(a, n), b, m) == crc32c(a || b, n + m) for
//                                   pieces of any length (0 included) and any alignment;
//   crc32cCopy(dst, src, bytes, crc) memcpy and crc32cExtend in one pass over the data.
//
// Paths, picked once per process:
//   x86-64   the SSE4.2 crc32 instruction where the CPU has it (checked at run time, so nothing has
//            to be built with -msse4.2): three interleaved streams hide the instruction's latency
//            and are joined by multiplying by x^(8*len) mod P (a table lookup per join);
//   aarch64  the ARMv8 CRC32C instructions when built with them (__ARM_FEATURE_CRC32);
//   else     slicing-by-8 tables in portable C++.
// The detail:: functions below are for tests and benchmarks that pin one path.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZCOLL_CRC32C_X86 1
#include <nmmintrin.h>
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32) && !defined(__ARM_BIG_ENDIAN)
#define ZCOLL_CRC32C_ARM 1
#include <arm_acle.h>
#endif

namespace zcoll {
namespace detail {

// All functions below work on the raw CRC register (no initial or final inversion); with that
// register the CRC is linear: raw(s, D) == raw(0, D) ^ s * x^(8*|D|) mod P.
inline constexpr uint32_t kCrc32cPoly = 0x82F63B78u;  // reflected: bit 31 is x^0, bit 0 is x^31

// a * b mod P, both in the reflected representation.
constexpr uint32_t crc32cMulModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kCrc32cPoly : b >> 1;  // b *= x
  }
  return product;
}

// x^(8 * bytes) mod P: what a register is multiplied by when `bytes` zero bytes pass through it.
constexpr uint32_t crc32cZerosFactor(uint64_t bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 23;   // x^8, squared as the bits of `bytes` go by
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1) result = crc32cMulModP(result, power);
    power = crc32cMulModP(power, power);
  }
  return result;
}

// ---- software: slicing-by-8 ----

// table[k][b]: the raw CRC of byte b followed by k zero bytes.
using Crc32cSliceTables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Crc32cSliceTables crc32cMakeSliceTables() {
  Crc32cSliceTables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    t[0][b] = c;
  }
  for (size_t k = 1; k < 8; ++k)
    for (size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}

inline const Crc32cSliceTables& crc32cSliceTables() {
  static const Crc32cSliceTables tables = crc32cMakeSliceTables();
  return tables;
}

inline uint32_t crc32cSoftwareRaw(uint32_t crc, const unsigned char* p, size_t n) {
  const Crc32cSliceTables& t = crc32cSliceTables();
  for (; n != 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n)
    crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo, hi;  // the 8 bytes in message order, first byte lowest
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    if constexpr (std::endian::native == std::endian::big) {
      lo = __builtin_bswap32(lo);
      hi = __builtin_bswap32(hi);
    }
    lo ^= crc;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; n != 0; --n) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

inline uint32_t crc32cExtendSoftware(uint32_t crc, const void* data, size_t bytes) {
  return ~crc32cSoftwareRaw(~crc, static_cast<const unsigned char*>(data), bytes);
}

// ---- x86-64: SSE4.2 crc32, three streams ----
#if defined(ZCOLL_CRC32C_X86)

// Stream lengths of the 3-way passes: long ones for the bulk, short ones for what is left.
inline constexpr size_t kCrc32cLongBlock = 4096;
inline constexpr size_t kCrc32cShortBlock = 256;

// Multiplying a register by x^(8*block) mod P, one table per byte of the register.
struct Crc32cShiftTable {
  std::array<std::array<uint32_t, 256>, 4> t;

  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

constexpr Crc32cShiftTable crc32cMakeShiftTable(size_t block) {
  Crc32cShiftTable s{};
  const uint32_t factor = crc32cZerosFactor(block);
  for (uint32_t k = 0; k < 4; ++k)
    for (uint32_t b = 0; b < 256; ++b) s.t[k][b] = crc32cMulModP(b << (8 * k), factor);
  return s;
}

struct Crc32cShiftTables {
  Crc32cShiftTable longBlock = crc32cMakeShiftTable(kCrc32cLongBlock);
  Crc32cShiftTable shortBlock = crc32cMakeShiftTable(kCrc32cShortBlock);
};

inline const Crc32cShiftTables& crc32cShiftTables() {
  static const Crc32cShiftTables tables;
  return tables;
}

__attribute__((target("sse4.2"))) inline uint64_t crc32cHardwareWord(uint64_t crc,
                                                                    const unsigned char* p) {
  uint64_t word;
  std::memcpy(&word, p, 8);
  return _mm_crc32_u64(crc, word);
}

// While at least 3 * block bytes are left: one pass over three adjacent blocks at once, the first
// continuing `crc`, the other two from 0, then crc = ((a * X) ^ b) * X ^ c with X = x^(8*block).
template <size_t kBlock>
__attribute__((target("sse4.2"))) inline uint32_t crc32cHardwareThreeWay(
    uint32_t crc, const unsigned char*& p, size_t& n, const Crc32cShiftTable& shift) {
  static_assert(kBlock % 32 == 0);
  while (n >= 3 * kBlock) {
    uint64_t a = crc, b = 0, c = 0;
    for (const unsigned char* end = p + kBlock; p != end; p += 32) {
      a = crc32cHardwareWord(a, p);
      b = crc32cHardwareWord(b, p + kBlock);
      c = crc32cHardwareWord(c, p + 2 * kBlock);
      a = crc32cHardwareWord(a, p + 8);
      b = crc32cHardwareWord(b, p + kBlock + 8);
      c = crc32cHardwareWord(c, p + 2 * kBlock + 8);
      a = crc32cHardwareWord(a, p + 16);
      b = crc32cHardwareWord(b, p + kBlock + 16);
      c = crc32cHardwareWord(c, p + 2 * kBlock + 16);
      a = crc32cHardwareWord(a, p + 24);
      b = crc32cHardwareWord(b, p + kBlock + 24);
      c = crc32cHardwareWord(c, p + 2 * kBlock + 24);
    }
    crc = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(c);
    p += 2 * kBlock;
    n -= 3 * kBlock;
  }
  return crc;
}

__attribute__((target("sse4.2"))) inline uint32_t crc32cHardwareRaw(uint32_t crc,
                                                                   const unsigned char* p,
                                                                   size_t n) {
  for (; n != 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n) crc = _mm_crc32_u8(crc, *p++);
  if (n >= 3 * kCrc32cShortBlock) {
    const Crc32cShiftTables& tables = crc32cShiftTables();
    crc = crc32cHardwareThreeWay<kCrc32cLongBlock>(crc, p, n, tables.longBlock);
    crc = crc32cHardwareThreeWay<kCrc32cShortBlock>(crc, p, n, tables.shortBlock);
  }
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) c = crc32cHardwareWord(c, p);
  crc = static_cast<uint32_t>(c);
  for (; n != 0; --n) crc = _mm_crc32_u8(crc, *p++);
  return crc;
}

// crc32cHardwareThreeWay that also copies each word to `d` as it goes: one pass over the data
// where a copy followed by a checksum would read it twice.
template <size_t kBlock>
__attribute__((target("sse4.2"))) inline uint32_t crc32cHardwareThreeWayCopy(
    uint32_t crc, unsigned char*& d, const unsigned char*& p, size_t& n, const Crc32cShiftTable& shift) {
  static_assert(kBlock % 8 == 0);
  while (n >= 3 * kBlock) {
    uint64_t a = crc, b = 0, c = 0;
    for (const unsigned char* end = p + kBlock; p != end; p += 8, d += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, p, 8);
      std::memcpy(&wb, p + kBlock, 8);
      std::memcpy(&wc, p + 2 * kBlock, 8);
      std::memcpy(d, &wa, 8);
      std::memcpy(d + kBlock, &wb, 8);
      std::memcpy(d + 2 * kBlock, &wc, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    crc = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(c);
    p += 2 * kBlock;
    d += 2 * kBlock;
    n -= 3 * kBlock;
  }
  return crc;
}

__attribute__((target("sse4.2"))) inline uint32_t crc32cHardwareCopyRaw(uint32_t crc, unsigned char* d,
                                                                       const unsigned char* p, size_t n) {
  for (; n != 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n) {
    *d++ = *p;
    crc = _mm_crc32_u8(crc, *p++);
  }
  if (n >= 3 * kCrc32cShortBlock) {
    const Crc32cShiftTables& tables = crc32cShiftTables();
    crc = crc32cHardwareThreeWayCopy<kCrc32cLongBlock>(crc, d, p, n, tables.longBlock);
    crc = crc32cHardwareThreeWayCopy<kCrc32cShortBlock>(crc, d, p, n, tables.shortBlock);
  }
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8, d += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    std::memcpy(d, &w, 8);
    c = _mm_crc32_u64(c, w);
  }
  crc = static_cast<uint32_t>(c);
  for (; n != 0; --n) {
    *d++ = *p;
    crc = _mm_crc32_u8(crc, *p++);
  }
  return crc;
}

inline bool crc32cHardwareAvailable() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return available;
}

// Only where crc32cHardwareAvailable().
inline uint32_t crc32cExtendHardware(uint32_t crc, const void* data, size_t bytes) {
  return ~crc32cHardwareRaw(~crc, static_cast<const unsigned char*>(data), bytes);
}

// ---- aarch64: ARMv8 CRC32C instructions (present whenever the build targets them) ----
#elif defined(ZCOLL_CRC32C_ARM)

inline uint32_t crc32cHardwareRaw(uint32_t crc, const unsigned char* p, size_t n) {
  for (; n != 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n) crc = __crc32cb(crc, *p++);
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    crc = __crc32cd(crc, word);
  }
  for (; n != 0; --n) crc = __crc32cb(crc, *p++);
  return crc;
}

inline bool crc32cHardwareAvailable() { return true; }

inline uint32_t crc32cExtendHardware(uint32_t crc, const void* data, size_t bytes) {
  return ~crc32cHardwareRaw(~crc, static_cast<const unsigned char*>(data), bytes);
}

#else

inline bool crc32cHardwareAvailable() { return false; }

#endif

}  // namespace detail

// Carries the CRC32C `crc` of the bytes so far on over `bytes` more at `data` (which may be null
// when bytes == 0); start from 0.
inline uint32_t crc32cExtend(uint32_t crc, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(ZCOLL_CRC32C_X86)
  if (detail::crc32cHardwareAvailable()) return ~detail::crc32cHardwareRaw(~crc, p, bytes);
  return ~detail::crc32cSoftwareRaw(~crc, p, bytes);
#elif defined(ZCOLL_CRC32C_ARM)
  return ~detail::crc32cHardwareRaw(~crc, p, bytes);
#else
  return ~detail::crc32cSoftwareRaw(~crc, p, bytes);
#endif
}

// Copies `bytes` bytes from `src` to `dst` (not overlapping) and carries `crc` on over them, in
// one pass where the hardware path exists.
inline uint32_t crc32cCopy(void* dst, const void* src, size_t bytes, uint32_t crc) {
#if defined(ZCOLL_CRC32C_X86)
  if (detail::crc32cHardwareAvailable())
    return ~detail::crc32cHardwareCopyRaw(~crc, static_cast<unsigned char*>(dst),
                                          static_cast<const unsigned char*>(src), bytes);
#endif
  if (bytes) std::memcpy(dst, src, bytes);
  return crc32cExtend(crc, src, bytes);
}

// The CRC32C of `bytes` bytes at `data`.
inline uint32_t crc32c(const void* data, size_t bytes) { return crc32cExtend(0, data, bytes); }

}  // namespace zcoll
