// The compressed ring (docs/arithmetic.md §6, "ring") as one pipeline of chunk steps: the
// compressed twins of ring_pipeline.h's steps, over float32 values and a codec's wire. A chunk
// goes on to the next rank as soon as it has been decoded, added and re-encoded, and the
// all-gather of the owners' encodings starts with the first chunk an owner finishes:
//
//   encodeSend                        step 0: E_{r,0} of our own chunk goes out
//   recvDecodeReduceEncodeSend        reduce-scatter hop j: acc = D(in) + x, stored in x, and
//                                     E_{r,j}(acc) goes on
//   recvDecodeReduceEncodeCopySend    the owner's hop: acc (AVG: / p) is final; E_{r,gather}(acc)
//                                     is stored in the gather wire, decoded into x (every rank,
//                                     the owner too, takes the decoded value) and goes on
//   recvCopyDecodeSend                all-gather: the encoded chunk is stored in the wire, goes on
//                                     and is decoded into x
//   recvCopyDecode, recvDecodeReduce  the last step of each (a reduce-scatter's owner keeps its
//                                     float32 sum, encoding nothing)
//
// Every value is encoded and decoded by the same ranks, stages and indices as in the
// step-by-step order, so results are bit-identical to zcoll.reference; only when bytes move
// changes.
#pragma once

#include <vector>

#include "algorithms/collective.h"
#include "algorithms/partition.h"
#include "primitives/codec_wire.h"
#include "transport/transport.h"

namespace zcoll::primitives {

// In place over float32 `x` split into `segs` (segment s ends at rank s). With `gather`, the
// all-reduce; without, the reduce-scatter (rank r's segment keeps the float32 sum). Tags: the
// reduce-scatter's hop k is step k, the all-gather's step j is kGatherSteps + j.
constexpr uint32_t kGatherSteps = 0x800;
void runCompressedRing(Transport& t, float* x, const CollectiveArgs& a, const Wire& w, const std::vector<Segment>& segs,
                       bool gather);

}  // namespace zcoll::primitives
