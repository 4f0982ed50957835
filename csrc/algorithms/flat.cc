// One-shot and two-shot schedules (docs/arithmetic.md §4): the owner of a result reduces all p
// contributions at once, x_0 ⊕ x_1 ⊕ ... ⊕ x_{p-1} in A(T), rounding once. One-shot: every rank
// is the owner of everything (one round, p-1 full copies in: for small messages). Two-shot:
// rank r owns segment r (reduce-scatter by direct sends, then a direct all-gather: two rounds,
// ring-sized traffic).
#include <vector>

#include "algorithms/schedule.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll::schedule {
namespace {

// Peers in the order r+1, r+2, ...: ranks start on different neighbours instead of all on 0.
template <typename Fn>
void forEachPeer(int r, int p, Fn fn) {
  for (int k = 1; k < p; ++k) fn((r + k) % p);
}

// Receives every peer's [begin, end) (in chunks, step `step`) into its own slot of `slots`
// (slot q holds rank q's part; our own slot is unused) and, chunk by chunk as they arrive,
// reduces all p parts in rank order into `data`. `divisor` as in reduceSources. `sends` are ours
// that still read `data`: the reduction waits for them before writing. With none and p = 2,
// nothing needs a slot: the peer's part is combined straight out of the transport.
void reduceFromAll(Transport& t, void* data, size_t begin, size_t end, char* slots, const CollectiveArgs& a,
                   uint32_t step, int64_t divisor, std::vector<RequestId>& sends) {
  const int p = t.size(), r = t.rank();
  const size_t ce = chunkElems(a), item = itemBytes(a), len = end - begin;
  if (p == 2 && sends.empty()) {
    std::vector<RequestId> recvs;
    forEachChunk(begin, end, ce, [&](size_t off, size_t n, size_t c) {
      recvs.push_back(t.irecvConsume(1 - r, a.tag(step, c), n * item, reduceInto(a, at(data, off, a), divisor, r == 0)));
    });
    for (RequestId q : recvs) t.wait(q, a.deadline);
    return;
  }
  auto slot = [&](int q, size_t off) { return slots + (static_cast<size_t>(q) * len + (off - begin)) * item; };
  std::vector<std::vector<RequestId>> recvs(p);
  forEachPeer(r, p, [&](int q) {
    forEachChunk(begin, end, ce, [&](size_t off, size_t n, size_t c) {
      recvs[q].push_back(t.irecv(q, a.tag(step, c), slot(q, off), n * item));
    });
  });
  std::vector<const void*> srcs(p);
  forEachChunk(begin, end, ce, [&](size_t off, size_t n, size_t c) {
    forEachPeer(r, p, [&](int q) { t.wait(recvs[q][c], a.deadline); });
    for (RequestId s : sends) t.wait(s, a.deadline);  // our chunk may still be on its way out
    sends.clear();
    for (int q = 0; q < p; ++q) srcs[q] = q == r ? at(data, off, a) : slot(q, off);
    kernels::cpu::reduceSources(a.dtype, a.op, srcs.data(), p, at(data, off, a), n, divisor);
  });
}


}  // namespace

void flatReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                       const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const size_t ce = chunkElems(a), item = itemBytes(a);
  std::vector<RequestId> sends;
  forEachPeer(r, p, [&](int s) {
    forEachChunk(segBegin[s], segEnd[s], ce, [&](size_t off, size_t n, size_t c) {
      sends.push_back(t.isendOperand(s, a.tag(0, c), at(data, off, a), n * item));
    });
  });
  std::vector<char> own;
  char* slots = p == 2 ? nullptr : scratch(a, static_cast<size_t>(p) * (segEnd[r] - segBegin[r]) * item, own);
  // Our sends read other segments than the one reduced into (so the reduction need not wait for
  // them), but we wait for them before returning.
  std::vector<RequestId> none;
  reduceFromAll(t, data, segBegin[r], segEnd[r], slots, a, 0, a.avgDivisor(p), none);
  for (RequestId s : sends) t.wait(s, a.deadline);
}

void directAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                     uint32_t step) {
  const int p = t.size(), r = t.rank();
  const size_t ce = chunkElems(a), item = itemBytes(a);
  std::vector<RequestId> reqs;
  forEachPeer(r, p, [&](int q) {
    forEachChunk(segBegin[q], segEnd[q], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.irecv(q, a.tag(step, c), at(data, off, a), n * item));
    });
    forEachChunk(segBegin[r], segEnd[r], ce, [&](size_t off, size_t n, size_t c) {
      reqs.push_back(t.isend(q, a.tag(step, c), at(data, off, a), n * item));
    });
  });
  for (RequestId q : reqs) t.wait(q, a.deadline);
}

void oneShotAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const size_t ce = chunkElems(a), item = itemBytes(a);
  std::vector<RequestId> sends;
  forEachPeer(r, p, [&](int q) {
    forEachChunk(0, count, ce, [&](size_t off, size_t n, size_t c) {
      sends.push_back(t.isendOperand(q, a.tag(0, c), at(data, off, a), n * item));
    });
  });
  // The reduction overwrites `data`, which the sends read: the first chunk waits for those still
  // reading it. At 2 ranks, where the peer's part can be combined straight out of the transport
  // once no send reads `data` any more, one pass of progress sees whether they are done (on shm a
  // small message is copied into its ring then); more ranks reduce from slots either way.
  if (p == 2) std::erase_if(sends, [&](RequestId s) { return t.test(s); });
  std::vector<char> own;
  char* slots = p == 2 && sends.empty() ? nullptr : scratch(a, static_cast<size_t>(p) * count * item, own);
  reduceFromAll(t, data, 0, count, slots, a, 0, a.avgDivisor(p), sends);
}

void oneShotReduce(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const size_t ce = chunkElems(a), item = itemBytes(a);
  if (r != root) {
    std::vector<RequestId> sends;
    forEachChunk(0, count, ce, [&](size_t off, size_t n, size_t c) {
      sends.push_back(t.isendOperand(root, a.tag(0, c), at(data, off, a), n * item));
    });
    for (RequestId s : sends) t.wait(s, a.deadline);
    return;
  }
  std::vector<char> own;
  char* slots = p == 2 ? nullptr : scratch(a, static_cast<size_t>(p) * count * item, own);
  std::vector<RequestId> none;
  reduceFromAll(t, data, 0, count, slots, a, 0, a.avgDivisor(p), none);
}

}  // namespace zcoll::schedule
