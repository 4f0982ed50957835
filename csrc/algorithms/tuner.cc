#include "algorithms/tuner.h"

#include <algorithm>

namespace zcoll {

const char* collectiveName(Collective c) {
  switch (c) {
    case Collective::kAllReduce: return "allreduce";
    case Collective::kReduce: return "reduce";
    case Collective::kReduceScatter: return "reduce_scatter";
  }
  return "?";
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

namespace {

constexpr size_t KiB = 1024, MiB = 1024 * KiB;

// Messages per segment: small enough that the next chunk moves while this one is reduced,
// large enough that per-message costs stay small.
// (2 ranks on shm, bench/: 4 MiB all-reduce 391 -> 364 us going from 256 KiB to 1 MiB chunks;
// 64 MiB 10.9 -> 10.4 ms from 512 KiB to 1 MiB.)
size_t chunkFor(size_t bytesPerStep) {
  if (bytesPerStep <= 256 * KiB) return 64 * KiB;
  if (bytesPerStep <= 1 * MiB) return 256 * KiB;
  return 1 * MiB;
}

}  // namespace

TunerChoice tune(Collective c, size_t bytes, int ranks, const std::string& transport) {
  const bool shm = transport == "shm";
  const size_t perRank = bytes / (ranks > 0 ? ranks : 1);
  switch (c) {
    case Collective::kAllReduce:
      // Many ranks over the network: a tree's 2 log p rounds beat one-shot's p-1 messages per
      // rank (tcp, 8 ranks: 4 KiB tree 329 us / one-shot 377; 64 KiB tree 447 / two-shot 737).
      if (!shm && ranks > 4 && bytes <= 64 * KiB) return {Algorithm::kTree, chunkFor(bytes / 2)};
      // One round beats the 2(p-1) rounds of a ring while p-1 copies of the tensor are cheap
      // (4 ranks on shm, 64 KiB: one-shot 170 us, two-shot 100, ring 131; tcp, 3 ranks, 4 KiB:
      // one-shot 74, tree 106, ring 135).
      if (bytes <= 16 * KiB && ranks <= 8) return {Algorithm::kOneShot, bytes ? bytes : 1};
      // Two rounds of direct sends: ring traffic without the ring's 2(p-1) steps; beyond
      // ~256 KiB the ring's one neighbour at a time wins when ranks share cores (4 ranks on shm,
      // 1 MiB: ring 487 us, two-shot 674). With 2 ranks the two are the same exchange.
      if (bytes <= 256 * KiB) return {Algorithm::kTwoShot, chunkFor(perRank)};
      return {Algorithm::kRing, chunkFor(perRank)};
    case Collective::kReduce:
      return {Algorithm::kTree, chunkFor(bytes)};
    case Collective::kReduceScatter:
      if (bytes <= 256 * KiB) return {Algorithm::kTwoShot, chunkFor(perRank)};
      return {Algorithm::kRing, chunkFor(perRank)};
  }
  return {Algorithm::kRing, chunkFor(perRank)};
}

TwoLevelChoice tuneTwoLevel(Collective c, size_t bytes, const Topology& topo, int rank) {
  const int local = static_cast<int>(topo.ranksOn(topo.hostOf(rank)).size());
  // Inside the host: what the tuner picks over shared memory for the host's ranks (a
  // reduce-scatter, or for a reduce a reduce; it may differ between hosts of different sizes).
  // Between hosts: the collective it picks over the network for what crosses (one rank's share,
  // or for a reduce the whole tensor), the same on every rank.
  const bool reduce = c == Collective::kReduce;
  const TunerChoice intra = tune(reduce ? Collective::kReduce : Collective::kReduceScatter, bytes, local, "shm");
  const TunerChoice inter = tune(c, reduce ? bytes : bytes / topo.mostRanksOnAHost(), topo.hosts(), "tcp");
  return {{intra.algorithm, inter.algorithm}, std::min(intra.chunkBytes, inter.chunkBytes)};
}

TunerChoice tuneCompressed(kernels::Codec codec, size_t bytes, int ranks) {
  // Relative L2 error of a 2-rank int8 all-reduce is the same for both (1.21e-2); at 4 ranks the
  // ring's is 1.58e-2 against two-shot's 1.31e-2, and int4's ring error is 0.29 against 0.24
  // (docs/arithmetic.md §6).
  const bool twoShot = ranks >= 4 || codec == kernels::Codec::kInt4;
  return {twoShot ? Algorithm::kTwoShot : Algorithm::kRing, chunkFor(bytes / (ranks > 0 ? ranks : 1))};
}

}  // namespace zcoll
