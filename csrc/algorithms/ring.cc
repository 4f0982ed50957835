#include "algorithms/ring.h"

#include <algorithm>
#include <vector>

#include "algorithms/partition.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll {

namespace {

constexpr uint8_t kOpAllReduce = 1;

size_t chunkElems(const CollectiveArgs& a) {
  const size_t item = dtypeSize(a.dtype), align = kCacheLineBytes / item;
  return std::max(align, a.chunkBytes / item / align * align);
}

char* at(void* base, size_t elem, DType t) { return static_cast<char*>(base) + elem * dtypeSize(t); }

int mod(int x, int p) { return (x % p + p) % p; }

// Calls fn(offset, elems, chunk index) for each chunk of the segment [begin, end).
template <typename Fn>
void forEachChunk(size_t begin, size_t end, size_t chunkElems, Fn fn) {
  for (size_t off = begin, c = 0; off < end; off += chunkElems, ++c) fn(off, std::min(chunkElems, end - off), c);
}

}  // namespace

uint64_t makeTag(uint8_t opcode, uint64_t seq, uint32_t step, uint32_t chunk) {
  return (static_cast<uint64_t>(opcode) << 56) | ((seq & 0xFFFFFFu) << 32) | ((step & 0xFFFu) << 20) |
         (chunk & 0xFFFFFu);
}

void ringReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                       const CollectiveArgs& a, uint8_t opcode) {
  const int p = t.size(), r = t.rank(), next = (r + 1) % p, prev = (r + p - 1) % p;
  if (p == 1) return;
  const size_t ce = chunkElems(a), item = dtypeSize(a.dtype);
  size_t maxSeg = 0;
  for (int s = 0; s < p; ++s) maxSeg = std::max(maxSeg, segEnd[s] - segBegin[s]);
  std::vector<char> incoming(maxSeg * item);
  for (int k = 0; k < p - 1; ++k) {
    const int sendSeg = mod(r - k - 1, p), recvSeg = mod(r - k - 2, p);
    const bool last = k == p - 2;  // we are the owner of recvSeg: AVG divides here
    const size_t recvBase = segBegin[recvSeg];
    std::vector<RequestId> sends, recvs;
    forEachChunk(segBegin[sendSeg], segEnd[sendSeg], ce, [&](size_t off, size_t n, size_t c) {
      sends.push_back(t.isend(next, makeTag(opcode, a.seq, k, c), at(data, off, a.dtype), n * item));
    });
    forEachChunk(recvBase, segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      recvs.push_back(t.irecv(prev, makeTag(opcode, a.seq, k, c), incoming.data() + (off - recvBase) * item, n * item));
    });
    forEachChunk(recvBase, segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      t.wait(recvs[c], a.deadline);  // chunk c is in; chunk c+1 keeps moving while we reduce
      const void* srcs[2] = {incoming.data() + (off - recvBase) * item, at(data, off, a.dtype)};
      kernels::cpu::reduceSources(a.dtype, a.op, srcs, 2, at(data, off, a.dtype), n,
                                  last && a.op == RedOp::kAvg ? p : 0);
    });
    for (RequestId s : sends) t.wait(s, a.deadline);
  }
}

void ringAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                   const CollectiveArgs& a, uint8_t opcode) {
  const int p = t.size(), r = t.rank(), next = (r + 1) % p, prev = (r + p - 1) % p;
  if (p == 1) return;
  const size_t ce = chunkElems(a), item = dtypeSize(a.dtype);
  for (int k = 0; k < p - 1; ++k) {
    const int sendSeg = mod(r - k, p), recvSeg = mod(r - k - 1, p);
    const uint32_t step = 0x800 | k;  // all-gather steps never share a tag with reduce-scatter's
    std::vector<RequestId> reqs;
    forEachChunk(segBegin[sendSeg], segEnd[sendSeg], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.isend(next, makeTag(opcode, a.seq, step, c), at(data, off, a.dtype), n * item));
    });
    forEachChunk(segBegin[recvSeg], segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.irecv(prev, makeTag(opcode, a.seq, step, c), at(data, off, a.dtype), n * item));
    });
    for (RequestId q : reqs) t.wait(q, a.deadline);
  }
}

void ringAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a) {
  const int p = t.size();
  const auto segs = partition(count, p, kCacheLineBytes / dtypeSize(a.dtype));
  std::vector<size_t> b(p), e(p);
  for (int s = 0; s < p; ++s) b[s] = segs[s].begin, e[s] = segs[s].end;
  ringReduceScatter(t, data, b.data(), e.data(), a, kOpAllReduce);
  ringAllGather(t, data, b.data(), e.data(), a, kOpAllReduce);
}

}  // namespace zcoll
