#include "primitives/ring_pipeline.h"

#include "algorithms/schedule.h"
#include "util/error.h"

namespace zcoll::primitives {

using schedule::at;
using schedule::chunkElems;
using schedule::itemBytes;

namespace {

// Chunk c of a segment: its first element and its length.
struct Chunk {
  size_t off, n;
};

class Ring {
 public:
  Ring(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a)
      : t_(t), data_(data), segBegin_(segBegin), segEnd_(segEnd), a_(a), ce_(chunkElems(a)), item_(itemBytes(a)),
        next_((t.rank() + 1) % t.size()), prev_((t.rank() + t.size() - 1) % t.size()) {}

  size_t chunks(int seg) const { return (segEnd_[seg] - segBegin_[seg] + ce_ - 1) / ce_; }
  Chunk chunk(int seg, size_t c) const {
    const size_t off = segBegin_[seg] + c * ce_;
    return {off, std::min(ce_, segEnd_[seg] - off)};
  }

  // send / the "Send" of every recv*Send: chunk c of `seg` to the next rank.
  void send(const RingStep& s, size_t c) {
    const Chunk k = chunk(s.sendSeg, c);
    const uint64_t tag = a_.tag(s.tagStep, static_cast<uint32_t>(c));
    // The next rank's step is ours: it reduces what we send when we reduce what we receive.
    sends_.push_back(s.reduce ? t_.isendOperand(next_, tag, at(data_, k.off, a_), k.n * item_)
                              : t_.isend(next_, tag, at(data_, k.off, a_), k.n * item_));
  }

  // recvReduce: chunk c from the previous rank, combined with ours straight out of the transport
  // (on shm out of its ring or the bounce buffer of a single copy): ours = in ⊕ ours, rounded
  // into place. recv: stored into place.
  RequestId postRecv(const RingStep& s, size_t c) {
    const Chunk k = chunk(s.recvSeg, c);
    char* local = at(data_, k.off, a_);
    const uint64_t tag = a_.tag(s.tagStep, static_cast<uint32_t>(c));
    if (!s.reduce) return t_.irecv(prev_, tag, local, k.n * item_);
    return t_.irecvConsume(prev_, tag, k.n * item_, schedule::reduceInto(a_, local, s.divisor, false));
  }

  void wait(RequestId q) { t_.wait(q, a_.deadline); }
  void waitSends() {
    for (RequestId q : sends_) wait(q);
  }

 private:
  Transport& t_;
  void* data_;
  const size_t *segBegin_, *segEnd_;
  const CollectiveArgs& a_;
  const size_t ce_, item_;
  const int next_, prev_;
  std::vector<RequestId> sends_;
};

}  // namespace

void runRing(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
             const std::vector<RingStep>& steps) {
  if (steps.empty()) return;
  for (size_t k = 1; k < steps.size(); ++k)
    ZCOLL_CHECK(steps[k].sendSeg == steps[k - 1].recvSeg, "ring step ", k, " sends segment ", steps[k].sendSeg,
                " but the step before received ", steps[k - 1].recvSeg);
  Ring ring(t, data, segBegin, segEnd, a);
  // Every receive is posted up front, in the order the previous rank sends (step by step,
  // chunk by chunk). Storing a chunk early overwrites nothing still needed: a segment we
  // receive into was sent by us, if at all, in an earlier reduce-scatter step, and its final
  // value cannot reach us before the next rank has taken our part of it.
  std::vector<std::vector<RequestId>> recvs(steps.size());
  for (size_t k = 0; k < steps.size(); ++k)
    for (size_t c = 0; c < ring.chunks(steps[k].recvSeg); ++c) recvs[k].push_back(ring.postRecv(steps[k], c));
  for (size_t c = 0; c < ring.chunks(steps[0].sendSeg); ++c) ring.send(steps[0], c);
  for (size_t k = 0; k < steps.size(); ++k) {
    for (size_t c = 0; c < recvs[k].size(); ++c) {
      ring.wait(recvs[k][c]);  // recvReduce / recv done: the chunk is ours
      if (k + 1 < steps.size()) ring.send(steps[k + 1], c);  // ... and goes on: recvReduceSend, recvCopySend
    }
  }
  ring.waitSends();
}

}  // namespace zcoll::primitives
