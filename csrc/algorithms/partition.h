// Partitioning of a tensor into per-rank segments and of segments into chunks
// (docs/arithmetic.md §1). zcoll.reference.partition mirrors partition() exactly.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace zcoll {

struct Segment {
  size_t begin;
  size_t end;
  size_t size() const { return end - begin; }
};

// Splits [0, n) into `parts` segments on `align` boundaries; the first units % parts segments get
// one unit more; trailing segments may be empty.
inline std::vector<Segment> partition(size_t n, size_t parts, size_t align) {
  const size_t units = (n + align - 1) / align;
  const size_t q = units / parts, rem = units % parts;
  auto edge = [&](size_t i) { return std::min(n, align * (i * q + std::min(i, rem))); };
  std::vector<Segment> segs(parts);
  for (size_t i = 0; i < parts; ++i) segs[i] = {edge(i), edge(i + 1)};
  return segs;
}

// Bytes of one cache line, the alignment of uncompressed segments.
constexpr size_t kCacheLineBytes = 64;

}  // namespace zcoll
