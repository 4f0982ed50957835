// A ring schedule as a pipeline of chunk steps, in NCCL's terms: at each step a rank receives a
// segment from the previous rank chunk by chunk and passes each chunk on to the next rank as
// soon as it has arrived, without waiting for the rest of the step:
//
//   send                  step 0: our own chunk goes out
//   recvReduceSend        reduce-scatter: the chunk in is combined with ours and goes on
//   recvReduceCopySend    the last reduce-scatter step of an all-reduce: the chunk is final
//                         (rounded into place; the output is the input, so the copy is the
//                         reduction's own store) and starts the all-gather
//   recvCopySend          all-gather: the chunk in is stored and goes on
//   recvReduce, recv      the last step of each: the chunk stays
//
// The order of the arithmetic is the unpipelined ring's (docs/arithmetic.md §4, "ring"): every
// chunk is combined at the same ranks in the same order, so results are bit-identical; only
// when its bytes move changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "algorithms/collective.h"
#include "transport/transport.h"

namespace zcoll::primitives {

// One step of a ring: this rank sends segment `sendSeg` to the next rank and receives segment
// `recvSeg` from the previous one, combining it into its own copy (`reduce`, dividing by
// `divisor` when non-zero: AVG at the segment's owner) or storing it. Each step's send is the
// previous step's receive (sendSeg == previous recvSeg): that is what lets a chunk go on at once.
struct RingStep {
  int sendSeg;
  int recvSeg;
  bool reduce;
  uint32_t tagStep;
  int64_t divisor;
};

// Runs `steps` over the segments [segBegin[s], segEnd[s]) of `data` (elements), in chunks of
// schedule::chunkElems(a). Throws what the transport throws.
void runRing(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
             const std::vector<RingStep>& steps);

}  // namespace zcoll::primitives
