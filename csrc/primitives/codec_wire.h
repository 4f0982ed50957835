// How one compressed collective lays out its wire (docs/arithmetic.md §6): segments partitioned
// on the codec's alignment, chunks of whole blocks inside them, so encoding a segment chunk by
// chunk writes the same bytes as encoding it at once (arithmetic.md §1: results do not depend
// on chunking), and the codec steps every compressed schedule is made of.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "algorithms/compressed.h"
#include "kernels/cpu/codec_cpu.h"

namespace zcoll::primitives {

struct Wire {
  const Compression& c;
  size_t chunkElems;
  float* residual = nullptr;  // error feedback: new residuals at the positions we encode (global index)

  size_t bytes(size_t elems) const { return kernels::encodedBytes(c.codec, elems, c.block); }
  // Byte offset of the chunk that starts `elemOffset` elements into its segment.
  size_t offset(size_t elemOffset) const { return elemOffset / chunkElems * bytes(chunkElems); }
  // What E_{rank,stage} of values starting at global index `begin` needs besides the values.
  kernels::CodecParams params(int rank, uint32_t stage, size_t begin) const {
    kernels::CodecParams p;
    p.codec = c.codec;
    p.block = c.block;
    p.key = kernels::streamKey(c.seed, c.step, static_cast<uint32_t>(rank), stage);
    p.base = c.elementBase + begin;
    return p;
  }
  // E_{rank,stage}(x[begin, begin+n)) into out; `begin` is the global index (the hash's).
  // `scale`: the residual's factor (p for an AVG result, docs/arithmetic.md §6).
  void encode(const float* x, size_t begin, size_t n, int rank, uint32_t stage, uint8_t* out,
              float scale = 1.0f) const {
    encodeValues(x + begin, begin, n, rank, stage, out, scale);
  }
  // The same for values not stored at their global position (`v[0]` is element `begin`).
  void encodeValues(const float* v, size_t begin, size_t n, int rank, uint32_t stage, uint8_t* out,
                    float scale = 1.0f) const {
    kernels::cpu::encode(params(rank, stage, begin), v, n, out, residual ? residual + begin : nullptr, scale);
  }
  void decode(const uint8_t* in, size_t n, float* out) const { kernels::cpu::decode(c.codec, c.block, in, n, out); }

  // Elements per tile of the fused step: whole codec blocks, about 4096 floats (fits in L1/L2).
  size_t tileElems() const {
    const size_t unit = kernels::isBlockwise(c.codec) ? static_cast<size_t>(c.block) : 32;
    return std::max<size_t>(1, 4096 / unit) * unit;
  }

  // One ring hop on a chunk, tile by tile so each tile's values stay in cache across the three
  // steps: acc = D(in) + x[begin, begin+n) (AVG: / divisor), stored in x, then E(acc) into `out`
  // (null: no encode). `tile` has tileElems() floats.
  void decodeAddEncode(const uint8_t* in, float* x, size_t begin, size_t n, float divisor, int rank, uint32_t stage,
                       uint8_t* out, float residualScale, float* tile) const {
    const size_t step = tileElems();
    for (size_t at = 0; at < n; at += step) {
      const size_t m = std::min(step, n - at);
      decode(in + bytes(at), m, tile);  // `at` is whole blocks: byte offsets add up
      float* acc = x + begin + at;
      for (size_t i = 0; i < m; ++i) acc[i] = tile[i] + acc[i];
      if (divisor != 0.0f)
        for (size_t i = 0; i < m; ++i) acc[i] = acc[i] / divisor;
      if (out) encode(x, begin + at, m, rank, stage, out + bytes(at), residualScale);
    }
  }
};

}  // namespace zcoll::primitives
