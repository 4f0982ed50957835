// The tuner's cost model (docs/architecture.md, "Algorithms and the tuner"): per transport kind
// a latency α, a wire bandwidth β and a reduction bandwidth γ (the α-β-γ model of Thakur,
// Rabenseifner and Gropp, as Open MPI's and NCCL's tuners use it), plus the terms our
// measurements needed: what concurrent messages to several peers cost (σ, κ), what ranks that
// outnumber the cores pay per message (`switchCost`), whether moving chunk c+1 overlaps reducing
// chunk c, and each codec's encode and decode rates. Every schedule's predicted time is a
// function of these, the size, the ranks and the chunk; the tuner takes the fastest.
//
// Deterministic: the same model, collective and size give the same choice on every rank, which
// the collectives need (ranks that pick different schedules would deadlock). A group agrees on
// its model once, at creation (measureCostModel / agreeCostModel below).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "kernels/common/codec_math.h"
#include "transport/topology.h"
#include "transport/transport.h"

namespace zcoll {

enum class Collective { kAllReduce, kReduce, kReduceScatter };

const char* collectiveName(Collective c);

// One transport kind's costs. Rates are per rank: what one rank sends, receives or reduces.
struct LinkCost {
  double alpha = 0;       // s per message: posting it, the peer seeing it, the hand-off
  double beta = 0;        // bytes/s one rank moves to a peer
  double gamma = 0;       // bytes/s of reduction (bytes of one incoming operand)
  // A round of k concurrent messages to different peers costs (1 + sigma (k-1)) message
  // latencies (0: they overlap fully, 1: one after the other) and moves its bytes at
  // beta / (1 + kappa (k-1)) (the streams contend for cores, caches, the NIC).
  double sigma = 0;
  double kappa = 0;
  // Extra latency per message for every rank beyond one per core (a peer that shares a core
  // answers only once it is scheduled): alpha + switchCost * (ranksPerCore - 1).
  double switchCost = 0;
  // Fraction of the shorter of wire and reduction time that chunking hides (0: one core does
  // both, as over shared memory; 1: the kernel or NIC moves the bytes while the CPU reduces).
  double overlap = 0;
  size_t maxChunk = 0;    // the largest chunk worth sending (bytes); candidates stop here
};

struct CodecCost {
  double encode = 0;  // float32 input bytes/s
  double decode = 0;  // float32 output bytes/s
};

struct CostModel {
  LinkCost shm;   // ranks on one host ("shm")
  LinkCost net;   // the network transport ("tcp" or "ucx", and what crosses hosts)
  int cores = 2;  // cores per host: ranks beyond them share cores (ranksPerCore > 1)
  std::array<CodecCost, 4> codecs{};  // by kernels::Codec
  // Where the numbers come from, for the logs: "defaults", "file <path>", "measured".
  std::string source = "defaults";

  // Calibrated on the 2-core machine the old threshold table was measured on (the .cc says
  // which measurement gives which number).
  static CostModel defaults();
  // The link a flat schedule over transport `name` runs on: "shm" -> shm, anything else
  // ("tcp", "ucx", "shm+tcp": a flat schedule across hosts) -> net.
  const LinkCost& link(const std::string& transport) const;
  // "" when every value is usable (positive rates, alpha >= 0, ...), else what is wrong, naming
  // the field ("shm.beta must be positive, got 0").
  std::string invalid() const;
  // The numbers in a fixed order (for agreeing across ranks) and back.
  std::vector<double> toVector() const;
  void fromVector(const std::vector<double>& v);
  // One line for ZCOLL_DEBUG=INFO: "shm: alpha 1.5 us, beta 12.4 GB/s, gamma 12.4 GB/s; net: ...".
  std::string describe() const;
};

// One schedule's predicted time at its best chunk.
struct Prediction {
  Algorithm algorithm = Algorithm::kRing;
  size_t chunkBytes = 0;
  double seconds = 0;
};

// Every candidate the tuner weighed (in a fixed order) and the one it took.
struct Predictions {
  std::array<Prediction, 4> candidates{};
  int count = 0;
  int best = 0;
  const Prediction& choice() const { return candidates[static_cast<size_t>(best)]; }
  // The prediction for `algo`, or null when it was not a candidate.
  const Prediction* find(Algorithm algo) const;
};

// The flat schedules of collective `c` on `bytes` (reduce_scatter: the whole input) over
// `ranks` ranks of transport `transport`, `ranksPerHost` of them on the busiest host (0: all).
Predictions predict(const CostModel& m, Collective c, size_t bytes, int ranks, const std::string& transport,
                    int ranksPerHost = 0);

// `algo`'s predicted time at its best chunk (it must implement `c`; kHierarchical is not flat).
Prediction predictOne(const CostModel& m, Collective c, Algorithm algo, size_t bytes, int ranks,
                      const std::string& transport, int ranksPerHost = 0);

// The compressed all-reduce (ring or two-shot, float32 data of `bytes`) with `codec`. With
// `errorBound`, two-shot is the only candidate where the ring's error would be large (ranks >= 4
// or int4, docs/compression.md): the error constraint comes before speed.
Predictions predictCompressed(const CostModel& m, kernels::Codec codec, size_t bytes, int ranks,
                              const std::string& transport, int block = kernels::kDefaultBlock, int ranksPerHost = 0,
                              bool errorBound = true);

// A flat all-gather's (ring) predicted time: what the hierarchical schedules' third stage costs.
double predictAllGather(const CostModel& m, size_t bytes, int ranks, size_t chunkBytes, const std::string& transport,
                        int ranksPerHost = 0);

// ---- agreement and measurement at group creation ------------------------------------------------

// Every rank of `t` leaves with rank 0's model (sent to every other rank): a group whose ranks
// loaded different tuning files still agrees. Returns whether this rank's own model differed.
bool agreeCostModel(Transport& t, CostModel& model, Deadline deadline);

// What measureCostModel found, for the logs and tests.
struct Measurement {
  bool shm = false, net = false;  // which links were measured (a group may have no pair of a kind)
  double seconds = 0;             // the probe's own duration on rank 0
};

// Measures alpha and beta of each link kind the group has (ping-pongs of 8 bytes and of
// `probeBytes` between one pair of ranks per kind: the first two ranks of the first host with
// two, and rank 0 with the first rank of another host) and gamma (rank 0 times the reduction),
// takes the host's core count, and leaves every rank with rank 0's result (the other ranks
// wait, so the pairs run on idle cores). Collective: every rank of `t` calls it at once, before
// any collective. `base` supplies what is not measured (sigma, kappa, codecs, ...).
CostModel measureCostModel(Transport& t, const Topology& topo, const CostModel& base, Deadline deadline,
                           Measurement* report = nullptr, size_t probeBytes = 256 * 1024);

}  // namespace zcoll
