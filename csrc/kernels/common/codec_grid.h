// Codec kernel bodies as functions of (grid block, thread, threads per block): the CUDA kernels
// are one-line wrappers around them, and the CPU runs the very same bodies (one thread per
// block for speed, or every thread of a real launch shape in the grid emulator the tests use).
//
// Blockwise codecs take two launches, one grid block per codec block:
//   1. absmaxBody: each thread folds a strided share of the block into the block's absmax
//      (atomicMax on the float's bits; non-negative floats order like their bits) and flags
//      non-finite values (atomicOr). Scratch must be zeroed first.
//   2. encodeBody: each thread encodes element pairs (an int4 byte never has two writers).
// Cast codecs take one launch over elements. decodeBody mirrors encodeBody.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/codec_math.h"

namespace zcoll::kernels {

// Threads per block of every codec launch (the CUDA launcher and the emulator's default).
constexpr unsigned kCodecThreadsPerBlock = 256;

struct EncodeArgs {
  Codec codec;
  int block;              // codec block size (blockwise codecs)
  uint32_t key;           // streamKey(seed, step, rank, stage)
  uint64_t base;          // global index of x[0], for the hash
  const float* x;
  size_t n;
  uint8_t* out;           // encodedBytes(codec, n, block) bytes
  float* residual;        // optional error-feedback output (nullptr: none)
  float residualScale;    // p for an AVG result, else 1
};

// Per codec block, written by absmaxBody and read by encodeBody; zeroed before absmaxBody.
struct BlockScratch {
  uint32_t absmaxBits;
  uint32_t nonfinite;
};

struct DecodeArgs {
  Codec codec;
  int block;
  const uint8_t* in;
  size_t n;
  float* out;
};

ZCOLL_HD void atomicMaxU32(uint32_t* p, uint32_t v) {
#if defined(__CUDA_ARCH__)
  atomicMax(p, v);
#else
  if (v > *p) *p = v;
#endif
}

ZCOLL_HD void atomicOrU32(uint32_t* p, uint32_t v) {
#if defined(__CUDA_ARCH__)
  atomicOr(p, v);
#else
  *p |= v;
#endif
}

// Grid blocks of a launch: codec blocks for blockwise codecs, element groups for casts.
ZCOLL_HD size_t gridBlocks(Codec c, size_t n, int block, unsigned threads) {
  return isBlockwise(c) ? (n + block - 1) / block : (n + threads - 1) / threads;
}

ZCOLL_HD void absmaxBody(size_t b, unsigned t, unsigned nt, const EncodeArgs& a, BlockScratch& s) {
  const size_t first = b * a.block;
  const size_t count = a.n - first < static_cast<size_t>(a.block) ? a.n - first : a.block;
  float m = 0.0f;
  uint32_t bad = 0;
  for (size_t i = t; i < count; i += nt) {
    const float x = a.x[first + i];
    if (!isFiniteBits(x)) {
      bad = 1;
    } else {
      const float ax = fabsf(x);
      m = ax > m ? ax : m;
    }
  }
  atomicMaxU32(&s.absmaxBits, floatBits(m));
  if (bad) atomicOrU32(&s.nonfinite, 1u);
}

ZCOLL_HD void storeU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v), p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16), p[3] = static_cast<uint8_t>(v >> 24);
}

ZCOLL_HD uint32_t loadU32(const uint8_t* p) {
  return p[0] | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// `scratch` is this block's BlockScratch (unused by cast codecs).
ZCOLL_HD void encodeBody(size_t b, unsigned t, unsigned nt, const EncodeArgs& a,
                         const BlockScratch& scratch) {
  if (!isBlockwise(a.codec)) {  // one element per thread
    const size_t i = b * nt + t;
    if (i >= a.n) return;
    const uint16_t h = castEncode(a.codec, a.x[i]);
    a.out[2 * i] = static_cast<uint8_t>(h), a.out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    if (a.residual) a.residual[i] = residualOne(a.x[i], castDecode(a.codec, h), a.residualScale);
    return;
  }
  const size_t first = b * a.block;
  const size_t count = a.n - first < static_cast<size_t>(a.block) ? a.n - first : a.block;
  const int qmax = codecQmax(a.codec);
  const BlockScale s = blockScale(bitsToFloat(scratch.absmaxBits), scratch.nonfinite != 0, qmax);
  uint8_t* wire = a.out + b * blockBytes(a.codec, a.block);
  if (t == 0) storeU32(wire, floatBits(s.scale));
  uint8_t* codes = wire + 4;
  for (size_t k = t; 2 * k < count; k += nt) {  // element pair k = (2k, 2k+1)
    int q[2] = {0, 0};
    for (int j = 0; j < 2 && 2 * k + j < count; ++j) {
      const size_t i = first + 2 * k + j;
      if (s.live) q[j] = quantizeOne(a.x[i], s.inv, uniform01(a.key, a.base + i), qmax);
      if (a.residual) a.residual[i] = residualOne(a.x[i], dequantizeOne(q[j], s.scale), a.residualScale);
    }
    if (a.codec == Codec::kInt4) {
      codes[k] = packInt4(q[0], q[1]);
    } else {
      codes[2 * k] = static_cast<uint8_t>(static_cast<int8_t>(q[0]));
      if (2 * k + 1 < count) codes[2 * k + 1] = static_cast<uint8_t>(static_cast<int8_t>(q[1]));
    }
  }
}

ZCOLL_HD void decodeBody(size_t b, unsigned t, unsigned nt, const DecodeArgs& a) {
  if (!isBlockwise(a.codec)) {
    const size_t i = b * nt + t;
    if (i >= a.n) return;
    a.out[i] = castDecode(a.codec, static_cast<uint16_t>(a.in[2 * i] | (a.in[2 * i + 1] << 8)));
    return;
  }
  const size_t first = b * a.block;
  const size_t count = a.n - first < static_cast<size_t>(a.block) ? a.n - first : a.block;
  const uint8_t* wire = a.in + b * blockBytes(a.codec, a.block);
  const float scale = bitsToFloat(loadU32(wire));
  const uint8_t* codes = wire + 4;
  for (size_t k = t; 2 * k < count; k += nt) {
    for (int j = 0; j < 2 && 2 * k + j < count; ++j) {
      const int q = a.codec == Codec::kInt4 ? unpackInt4(codes[k], j)
                                            : static_cast<int8_t>(codes[2 * k + j]);
      a.out[first + 2 * k + j] = dequantizeOne(q, scale);
    }
  }
}

// Element i of a segment encoded from its first element (blocks of `block` elements).
ZCOLL_HD float decodeAt(Codec codec, int block, const uint8_t* in, size_t i) {
  if (!isBlockwise(codec)) return castDecode(codec, static_cast<uint16_t>(in[2 * i] | (in[2 * i + 1] << 8)));
  const size_t j = i % block;
  const uint8_t* wire = in + i / block * blockBytes(codec, block);  // only the last block is short
  const float scale = bitsToFloat(loadU32(wire));
  const int q = codec == Codec::kInt4 ? unpackInt4(wire[4 + j / 2], static_cast<int>(j & 1))
                                      : static_cast<int8_t>(wire[4 + j]);
  return dequantizeOne(q, scale);
}

// The two-shot owner's sum (docs/arithmetic.md §6) for data on a device: out[i] = v_0 + v_1 +
// ... + v_{nparts-1} in rank order, in float32, where v_self = own[i] (exact) and every other
// v_q is element i decoded from contribution q at parts + q * partBytes; then / divisor unless
// divisor is 0 (AVG). One element per thread; `out` may be `own`.
struct DecodeSumArgs {
  Codec codec;
  int block;
  const uint8_t* parts;
  size_t partBytes;
  int nparts;
  int self;
  const float* own;
  size_t n;
  float divisor;
  float* out;
};

ZCOLL_HD void decodeSumBody(size_t b, unsigned t, unsigned nt, const DecodeSumArgs& a) {
  const size_t i = b * nt + t;
  if (i >= a.n) return;
  float acc = 0.0f;
  for (int q = 0; q < a.nparts; ++q) {
    const float v = q == a.self ? a.own[i] : decodeAt(a.codec, a.block, a.parts + q * a.partBytes, i);
    acc = q == 0 ? v : acc + v;
  }
  if (a.divisor != 0.0f) acc = acc / a.divisor;
  a.out[i] = acc;
}

// Error feedback's first step on a device: x += residual, residual = 0 (one element per thread).
ZCOLL_HD void addResidualBody(size_t b, unsigned t, unsigned nt, float* x, float* residual, size_t n) {
  const size_t i = b * nt + t;
  if (i >= n) return;
  x[i] = x[i] + residual[i];
  residual[i] = 0.0f;
}

}  // namespace zcoll::kernels
