// Small helpers the schedules share (internal to csrc/algorithms).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/partition.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll::schedule {

inline size_t itemBytes(const CollectiveArgs& a) { return dtypeSize(a.dtype); }

// Elements per message: chunkBytes rounded down to whole cache lines (at least one).
inline size_t chunkElems(const CollectiveArgs& a) {
  const size_t item = itemBytes(a), align = kCacheLineBytes / item;
  return std::max(align, a.chunkBytes / item / align * align);
}

inline char* at(void* base, size_t elem, const CollectiveArgs& a) {
  return static_cast<char*>(base) + elem * itemBytes(a);
}

inline int mod(int x, int p) { return (x % p + p) % p; }

// Calls fn(offset, elems, chunk index) for each chunk of [begin, end).
template <typename Fn>
void forEachChunk(size_t begin, size_t end, size_t chunkElems, Fn fn) {
  for (size_t off = begin, c = 0; off < end; off += chunkElems, ++c) fn(off, std::min(chunkElems, end - off), c);
}

// An irecvConsume consumer that combines the arriving bytes with ours at `local`, straight out of
// the transport, rounding into `local`: in ⊕ local, or local ⊕ in when `localFirst` (the order
// is the arithmetic contract's, rank order). `divisor` as in reduceSources (AVG at the owner).
inline Consumer reduceInto(const CollectiveArgs& a, char* local, int64_t divisor, bool localFirst) {
  return [&a, local, divisor, localFirst](size_t o, const void* in, size_t bytes) {
    const void* srcs[2] = {localFirst ? local + o : in, localFirst ? in : local + o};
    kernels::cpu::reduceSources(a.dtype, a.op, srcs, 2, local + o, bytes / itemBytes(a), divisor);
  };
}

// The uncompressed all-reduce segments of `count` elements over `parts` (cache-line aligned).
inline std::vector<Segment> segmentsOf(size_t count, int parts, const CollectiveArgs& a) {
  return partition(count, static_cast<size_t>(parts), kCacheLineBytes / itemBytes(a));
}

// Scratch of `bytes` from the caller's workspace, or from `own` when there is none.
inline char* scratch(const CollectiveArgs& a, size_t bytes, std::vector<char>& own) {
  if (a.workspace) return a.workspace->get(bytes);
  own.resize(bytes);
  return own.data();
}

}  // namespace zcoll::schedule

namespace zcoll::schedule {

// The schedules behind collective.h's entry points (p > 1; see docs/arithmetic.md §4).
void ringReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a);
void ringAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   uint32_t firstStep);
// Both as one pipeline, the all-gather's steps numbered from allGatherFirstStep.
void ringAllReduce(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   uint32_t allGatherFirstStep);
// Two-shot halves: every rank sends segment s to its owner s, which reduces all p contributions
// in rank order; then every owner sends its segment to every rank.
void flatReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a);
void directAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                     uint32_t step);
void oneShotAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a);
void oneShotReduce(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a);
void treeAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a);
void treeReduce(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a);

}  // namespace zcoll::schedule
