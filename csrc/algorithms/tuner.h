// Which algorithm and chunk size a collective uses when the user did not say (ZCOLL_ALGO,
// ZCOLL_CHUNK_BYTES): the one with the least predicted time under the group's cost model
// (algorithms/cost_model.h; docs/architecture.md, "Algorithms and the tuner"). Results never
// depend on the chunk size, only on the algorithm, which the debug log reports.
#pragma once

#include <cstddef>
#include <string>

#include "algorithms/collective.h"
#include "algorithms/cost_model.h"
#include "algorithms/hierarchical.h"
#include "kernels/common/codec_math.h"

namespace zcoll {

// The compiled-in model (CostModel::defaults()), built once.
const CostModel& defaultCostModel();

struct TunerChoice {
  Algorithm algorithm;
  size_t chunkBytes;
  Predictions predictions;  // every candidate's predicted time; predictions.choice() is this one
  double seconds() const { return predictions.choice().seconds; }
};

// `bytes`: the tensor's size (reduce_scatter: the whole input); `transport`: the group's
// transport name ("shm", "tcp", "ucx", "shm+tcp", ...); `ranksPerHost`: ranks on the busiest
// host (0: all of them, as when every rank is on one host).
TunerChoice tune(const CostModel& model, Collective c, size_t bytes, int ranks, const std::string& transport,
                 int ranksPerHost = 0);
inline TunerChoice tune(Collective c, size_t bytes, int ranks, const std::string& transport) {
  return tune(defaultCostModel(), c, bytes, ranks, transport);
}

// A hierarchical collective's algorithms (inside this rank's host, between hosts) and chunk,
// each level chosen by the flat model of its link: a reduce-scatter (reduce: a reduce) over
// shared memory among the host's ranks, the collective over the network among the hosts for
// what crosses, all hosts' ranks at once.
struct TwoLevelChoice {
  TwoLevel algos;
  size_t chunkBytes;
  TunerChoice intra, inter;
  double allGatherSeconds = 0;  // the third stage inside the host (all-reduce only)
  double seconds() const { return intra.seconds() + inter.seconds() + allGatherSeconds; }
};
TwoLevelChoice tuneTwoLevel(const CostModel& model, Collective c, size_t bytes, const Topology& topo, int rank);
inline TwoLevelChoice tuneTwoLevel(Collective c, size_t bytes, const Topology& topo, int rank) {
  return tuneTwoLevel(defaultCostModel(), c, bytes, topo, rank);
}

// The compressed all-reduce's schedule (ring or two-shot) and chunk: two-shot where the ring's
// error, which grows with every re-encoding hop, would be large (ranks >= 4, or int4); elsewhere
// the faster of the two. The model picks the chunk either way.
TunerChoice tuneCompressed(const CostModel& model, kernels::Codec codec, size_t bytes, int ranks,
                           const std::string& transport, int block = kernels::kDefaultBlock, int ranksPerHost = 0);
inline TunerChoice tuneCompressed(kernels::Codec codec, size_t bytes, int ranks) {
  return tuneCompressed(defaultCostModel(), codec, bytes, ranks, "shm");
}

// Whether `algo` implements collective `c`.
bool supports(Collective c, Algorithm algo);

// "ring 412 us (twoshot 530 us, oneshot 900 us, tree 1.2 ms)": the choice's prediction first,
// then the other candidates' (for ZCOLL_DEBUG=INFO). With `forced`, that algorithm's prediction
// leads and the model's choice is named among the others as "the tuner's".
std::string describePredictions(const Predictions& p, const Algorithm* forced = nullptr);
// "412 us", "1.2 ms", "3.4 s".
std::string formatSeconds(double s);

}  // namespace zcoll
