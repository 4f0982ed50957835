// The collectives the algorithms implement, over any transport, and what they are given
// (docs/arithmetic.md §1, §4 defines each algorithm's exact reduction order).
//
// Terms: segment = a rank's share of the tensor (partition(), or the caller's slices); chunk = a
// run of chunkElems elements inside a segment, one transport message each, so that moving
// chunk c+1 overlaps reducing chunk c; step = one round of a schedule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/common/dtypes.h"
#include "transport/tag.h"
#include "transport/transport.h"

namespace zcoll {

// kHierarchical: the two-level schedules of algorithms/hierarchical.h (ranks on several hosts).
enum class Algorithm { kRing, kTree, kOneShot, kTwoShot, kHierarchical };

const char* algorithmName(Algorithm a);
// "ring", "tree", "oneshot", "twoshot", "hierarchical"; false for anything else.
bool parseAlgorithm(const std::string& name, Algorithm* out);

// Scratch memory a caller lends to schedules: grows to the largest request and is reused, so a
// steady stream of collectives allocates (and page-faults) once. Contents are not initialised.
class Workspace {
 public:
  char* get(size_t bytes);

 private:
  std::unique_ptr<char[]> buf_;
  size_t bytes_ = 0;
};

// What a schedule needs besides its buffers; built per call by the backend.
struct CollectiveArgs {
  DType dtype = DType::kFloat32;
  RedOp op = RedOp::kSum;  // PREMUL_SUM inputs arrive already scaled
  OpCode opcode = OpCode::kAllReduce;
  uint64_t seq = 0;        // collective sequence number of the group (goes into every tag)
  size_t chunkBytes = 1u << 19;
  Deadline deadline = Deadline::max();
  Workspace* workspace = nullptr;  // null: schedules allocate their own scratch
  // AVG divides by this many ranks; 0: the transport's size. A hierarchical schedule's stage
  // over some of the ranks divides by the whole group's (arithmetic.md §4).
  int avgRanks = 0;

  // The divisor AVG applies over a transport of p ranks (0 for every other op).
  int64_t avgDivisor(int p) const { return op == RedOp::kAvg ? (avgRanks ? avgRanks : p) : 0; }

  // The tag of message `chunk` of `step` (transport/tag.h): op and dtype go in, so ranks that
  // disagree on them fail on the first message.
  uint64_t tag(uint32_t step, uint32_t chunk) const;
};

// In-place all-reduce of `count` elements at `data` with the given (flat) algorithm.
void allReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a, Algorithm algo);

// Reduce-scatter over caller-given segments (segment r ends at rank r; kRing or kTwoShot):
// `data` holds all segments and may be used as scratch; rank r's result is left in segment r.
void reduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   Algorithm algo);

// Reduce of `count` elements to `root` (kTree or kOneShot): the root's `data` gets the result;
// other ranks' `data` is used as scratch and left undefined.
void reduceToRoot(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a, Algorithm algo);
// Whether reduceToRoot with `algo` writes into `data` on `rank` (the root, and a tree's inner
// ranks, which accumulate their children's parts there); other ranks only send it.
bool reduceWritesData(int rank, int size, int root, Algorithm algo);

// Ring all-gather in place: segment s of `data` comes from rank s.
void allGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a);

}  // namespace zcoll
