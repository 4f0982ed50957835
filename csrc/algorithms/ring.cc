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
  for (int k = 0; k < p - 1; ++k) {
    const int sendSeg = mod(r - k - 1, p), recvSeg = mod(r - k - 2, p);
    const int64_t divisor = k == p - 2 ? a.avgDivisor(p) : 0;  // we own recvSeg: AVG divides here
    std::vector<RequestId> reqs;
    forEachChunk(segBegin[sendSeg], segEnd[sendSeg], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.isend(next, a.tag(k, c), at(data, off, a), n * item));
    });
    // Incoming chunks are combined with ours as they arrive, straight from the transport (on shm,
    // out of its ring): acc = incoming ⊕ local, rounded into our copy of the segment.
    forEachChunk(segBegin[recvSeg], segEnd[recvSeg], ce, [&](size_t off, size_t n, size_t c) {
      char* local = at(data, off, a);
      reqs.push_back(t.irecvConsume(prev, a.tag(k, c), n * item, [&a, local, item, divisor](size_t o, const void* in,
                                                                                          size_t bytes) {
        const void* srcs[2] = {in, local + o};
        kernels::cpu::reduceSources(a.dtype, a.op, srcs, 2, local + o, bytes / item, divisor);
      }));
    });
    for (RequestId q : reqs) t.wait(q, a.deadline);
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
