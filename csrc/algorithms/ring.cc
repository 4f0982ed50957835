// Ring schedules (docs/arithmetic.md §4 "ring"): the ring is 0 -> 1 -> ... -> p-1 -> 0; in
// reduce-scatter step k rank r sends segment r-k-1 to r+1, which combines it with its own part,
// so segment s ends, fully reduced, at its owner s; the all-gather passes owners' segments on.
#include <algorithm>
#include <vector>

#include "algorithms/schedule.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll::schedule {

void ringReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                       const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank(), next = (r + 1) % p, prev = (r + p - 1) % p;
  const size_t ce = chunkElems(a), item = itemBytes(a);
  size_t maxSeg = 0;
  for (int s = 0; s < p; ++s) maxSeg = std::max(maxSeg, segEnd[s] - segBegin[s]);
  std::vector<char> own;
  char* incoming = scratch(a, maxSeg * item, own);
  for (int k = 0; k < p - 1; ++k) {
    const int sendSeg = mod(r - k - 1, p), recvSeg = mod(r - k - 2, p);
    const bool last = k == p - 2;  // we are the owner of recvSeg: AVG divides here
    const size_t recvBase = segBegin[recvSeg];
    std::vector<RequestId> sends, recvs;
    forEachChunk(segBegin[sendSeg], segEnd[sendSeg], ce, [&](size_t off, size_t n, size_t c) {
      sends.push_back(t.isend(next, a.tag(k, c), at(data, off, a), n * item));
    });
    forEachChunk(recvBase, segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      recvs.push_back(t.irecv(prev, a.tag(k, c), incoming + (off - recvBase) * item, n * item));
    });
    forEachChunk(recvBase, segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      t.wait(recvs[c], a.deadline);  // chunk c is in; chunk c+1 keeps moving while we reduce
      const void* srcs[2] = {incoming + (off - recvBase) * item, at(data, off, a)};
      kernels::cpu::reduceSources(a.dtype, a.op, srcs, 2, at(data, off, a), n, last && a.op == RedOp::kAvg ? p : 0);
    });
    for (RequestId s : sends) t.wait(s, a.deadline);
  }
}

void ringAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   uint32_t firstStep) {
  const int p = t.size(), r = t.rank(), next = (r + 1) % p, prev = (r + p - 1) % p;
  const size_t ce = chunkElems(a), item = itemBytes(a);
  for (int k = 0; k < p - 1; ++k) {
    const int sendSeg = mod(r - k, p), recvSeg = mod(r - k - 1, p);
    const uint32_t step = firstStep + k;
    std::vector<RequestId> reqs;
    forEachChunk(segBegin[sendSeg], segEnd[sendSeg], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.isend(next, a.tag(step, c), at(data, off, a), n * item));
    });
    forEachChunk(segBegin[recvSeg], segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.irecv(prev, a.tag(step, c), at(data, off, a), n * item));
    });
    for (RequestId q : reqs) t.wait(q, a.deadline);
  }
}

}  // namespace zcoll::schedule
