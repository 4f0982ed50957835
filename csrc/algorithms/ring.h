// Ring schedules over any transport (docs/arithmetic.md §1, §4).
//
// Terms: segment s = partition(n, p, align)[s], owned by rank s at the end of reduce-scatter;
// chunk = a run of chunkElems elements inside a segment, one transport message each, so that
// the transfer of chunk c+1 overlaps the reduction of chunk c; step = one hop around the ring.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/dtypes.h"
#include "transport/transport.h"

namespace zcoll {

// What a schedule needs besides its buffers; built per call by the backend.
struct CollectiveArgs {
  DType dtype = DType::kFloat32;
  RedOp op = RedOp::kSum;  // PREMUL_SUM inputs arrive already scaled
  uint64_t seq = 0;        // collective sequence number of the group (goes into every tag)
  size_t chunkBytes = 1u << 19;
  Deadline deadline = Deadline::max();
};

// Tags pack op | seq | step | chunk so that concurrent or mismatched collectives never mix.
uint64_t makeTag(uint8_t opcode, uint64_t seq, uint32_t step, uint32_t chunk);

// In-place ring all-reduce of `count` elements at `data`: reduce-scatter, then all-gather.
void ringAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a);

// Ring reduce-scatter over caller-given segments (segment r ends at rank r): `data` holds all
// segments and is used as scratch; the owner's result is left in its own segment.
void ringReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                       const CollectiveArgs& a, uint8_t opcode);

// Ring all-gather in place: segment s of `data` comes from rank s.
void ringAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                   const CollectiveArgs& a, uint8_t opcode);

}  // namespace zcoll
