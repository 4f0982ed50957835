// Which algorithm and chunk size a collective uses when the user did not say (ZCOLL_ALGO,
// ZCOLL_CHUNK_BYTES). The thresholds come from bench/ measurements on our machines
// (docs/architecture.md, "Algorithms and the tuner"); results never depend on the chunk size,
// only on the algorithm, which the debug log reports.
#pragma once

#include <cstddef>
#include <string>

#include "algorithms/collective.h"
#include "algorithms/hierarchical.h"
#include "kernels/common/codec_math.h"

namespace zcoll {

enum class Collective { kAllReduce, kReduce, kReduceScatter };

const char* collectiveName(Collective c);

struct TunerChoice {
  Algorithm algorithm;
  size_t chunkBytes;
};

// `bytes`: the tensor's size (reduce_scatter: the whole input); `transport`: "shm" or "tcp".
TunerChoice tune(Collective c, size_t bytes, int ranks, const std::string& transport);

// A hierarchical collective's algorithms (inside this rank's host, between hosts) and chunk.
struct TwoLevelChoice {
  TwoLevel algos;
  size_t chunkBytes;
};
TwoLevelChoice tuneTwoLevel(Collective c, size_t bytes, const Topology& topo, int rank);

// The compressed all-reduce's schedule (ring or two-shot) and chunk: two-shot where the ring's
// error, which grows with every re-encoding hop, would be large (many ranks, or int4).
TunerChoice tuneCompressed(kernels::Codec codec, size_t bytes, int ranks);

// Whether `algo` implements collective `c`.
bool supports(Collective c, Algorithm algo);

}  // namespace zcoll
