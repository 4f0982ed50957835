// Ring schedules (docs/arithmetic.md §4 "ring"): the ring is 0 -> 1 -> ... -> p-1 -> 0; in
// reduce-scatter step k rank r sends segment r-k-1 to r+1, which combines it with its own part,
// so segment s ends, fully reduced, at its owner s; the all-gather passes owners' segments on.
// Each is a pipeline of chunk steps (primitives/ring_pipeline.h): a chunk goes on to the next
// rank as soon as it has arrived, and an all-reduce's all-gather starts with the first chunk
// its reduce-scatter finishes.
#include <vector>

#include "algorithms/schedule.h"
#include "primitives/ring_pipeline.h"

namespace zcoll::schedule {
namespace {

using primitives::RingStep;

void addReduceScatterSteps(std::vector<RingStep>& steps, int p, int r, const CollectiveArgs& a) {
  for (int k = 0; k < p - 1; ++k) {
    const int64_t divisor = k == p - 2 ? a.avgDivisor(p) : 0;  // we own the segment received last: AVG divides here
    steps.push_back({mod(r - k - 1, p), mod(r - k - 2, p), true, static_cast<uint32_t>(k), divisor});
  }
}

void addAllGatherSteps(std::vector<RingStep>& steps, int p, int r, uint32_t firstStep) {
  for (int k = 0; k < p - 1; ++k) steps.push_back({mod(r - k, p), mod(r - k - 1, p), false, firstStep + k, 0});
}

}  // namespace

void ringReduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd,
                       const CollectiveArgs& a) {
  std::vector<RingStep> steps;
  addReduceScatterSteps(steps, t.size(), t.rank(), a);
  primitives::runRing(t, data, segBegin, segEnd, a, steps);
}

void ringAllGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   uint32_t firstStep) {
  std::vector<RingStep> steps;
  addAllGatherSteps(steps, t.size(), t.rank(), firstStep);
  primitives::runRing(t, data, segBegin, segEnd, a, steps);
}

void ringAllReduce(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   uint32_t allGatherFirstStep) {
  std::vector<RingStep> steps;
  addReduceScatterSteps(steps, t.size(), t.rank(), a);
  addAllGatherSteps(steps, t.size(), t.rank(), allGatherFirstStep);
  primitives::runRing(t, data, segBegin, segEnd, a, steps);
}

}  // namespace zcoll::schedule
