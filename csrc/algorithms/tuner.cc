#include "algorithms/tuner.h"

#include <algorithm>
#include <cstdio>

namespace zcoll {

const CostModel& defaultCostModel() {
  static const CostModel model = CostModel::defaults();
  return model;
}

bool supports(Collective c, Algorithm algo) {
  switch (c) {
    case Collective::kAllReduce: return true;  // kHierarchical: where the group spans hosts
    case Collective::kReduce:
      return algo == Algorithm::kTree || algo == Algorithm::kOneShot || algo == Algorithm::kHierarchical;
    case Collective::kReduceScatter:
      return algo == Algorithm::kRing || algo == Algorithm::kTwoShot || algo == Algorithm::kHierarchical;
  }
  return false;
}

TunerChoice tune(const CostModel& model, Collective c, size_t bytes, int ranks, const std::string& transport,
                 int ranksPerHost) {
  const Predictions p = predict(model, c, bytes, ranks, transport, ranksPerHost);
  return {p.choice().algorithm, p.choice().chunkBytes, p};
}

TwoLevelChoice tuneTwoLevel(const CostModel& model, Collective c, size_t bytes, const Topology& topo, int rank) {
  const int local = static_cast<int>(topo.ranksOn(topo.hostOf(rank)).size());
  const int most = static_cast<int>(topo.mostRanksOnAHost());
  // Inside the host: what the tuner picks over shared memory for the host's ranks (it may differ
  // between hosts of different sizes). Between hosts: what it picks over the network for what
  // crosses (one rank's share, or for a reduce the whole tensor through each host's leader), the
  // same on every rank: every rank of the busiest host takes part at once (a reduce: leaders only).
  const bool reduce = c == Collective::kReduce;
  TwoLevelChoice out;
  out.intra = tune(model, reduce ? Collective::kReduce : Collective::kReduceScatter, bytes, local, "shm", local);
  out.inter = tune(model, c, reduce ? bytes : bytes / static_cast<size_t>(most), topo.hosts(), "net",
                   reduce ? 1 : most);
  out.algos = {out.intra.algorithm, out.inter.algorithm};
  out.chunkBytes = std::min(out.intra.chunkBytes, out.inter.chunkBytes);
  if (c == Collective::kAllReduce) out.allGatherSeconds = predictAllGather(model, bytes, local, out.chunkBytes, "shm", local);
  return out;
}

TunerChoice tuneCompressed(const CostModel& model, kernels::Codec codec, size_t bytes, int ranks,
                           const std::string& transport, int block, int ranksPerHost) {
  const Predictions p = predictCompressed(model, codec, bytes, ranks, transport, block, ranksPerHost);
  return {p.choice().algorithm, p.choice().chunkBytes, p};
}

std::string formatSeconds(double s) {
  char buf[32];
  if (s < 1e-3)
    std::snprintf(buf, sizeof buf, "%.3g us", s * 1e6);
  else if (s < 1)
    std::snprintf(buf, sizeof buf, "%.3g ms", s * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

std::string describePredictions(const Predictions& p, const Algorithm* forced) {
  const Prediction* lead = forced ? p.find(*forced) : &p.choice();
  std::string out = lead ? std::string(algorithmName(lead->algorithm)) + " " + formatSeconds(lead->seconds)
                         : std::string(algorithmName(*forced)) + " (not modelled)";
  std::string others;
  for (int i = 0; i < p.count; ++i) {
    const Prediction& q = p.candidates[static_cast<size_t>(i)];
    if (&q == lead) continue;
    others += (others.empty() ? "" : ", ") + std::string(algorithmName(q.algorithm)) + " " + formatSeconds(q.seconds);
    if (forced && i == p.best) others += " (the tuner's)";
  }
  return others.empty() ? out : out + " (" + others + ")";
}

}  // namespace zcoll
