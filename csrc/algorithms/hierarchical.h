// Two-level schedules (docs/arithmetic.md §4, hierarchical): over a group whose ranks sit on
// several hosts, a stage inside each host (shared memory), one between hosts (the network), and
// one inside each host again. Each stage is a flat schedule of collective.h / compressed.h run
// over a RankView, the subset of ranks it involves.
#pragma once

#include <cstddef>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/compressed.h"
#include "transport/topology.h"

namespace zcoll {

// The ranks `ranks` of `base` (ascending or not), renumbered 0..k-1: a schedule run over it
// talks to those ranks only. The caller's rank must be one of them.
class RankView : public Transport {
 public:
  RankView(Transport& base, std::vector<int> ranks);
  const char* name() const override { return base_.name(); }
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(ranks_.size()); }
  RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) override {
    return base_.isend(ranks_[peer], tag, data, bytes);
  }
  RequestId isendOperand(int peer, uint64_t tag, const void* data, size_t bytes) override {
    return base_.isendOperand(ranks_[peer], tag, data, bytes);
  }
  RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) override {
    return base_.irecv(ranks_[peer], tag, data, bytes);
  }
  RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) override {
    return base_.irecvConsume(ranks_[peer], tag, bytes, std::move(consume));
  }
  void wait(RequestId req, Deadline deadline) override { base_.wait(req, deadline); }
  bool test(RequestId req) override { return base_.test(req); }
  void abort(const std::string& why) override { base_.abort(why); }

 private:
  Transport& base_;
  std::vector<int> ranks_;
  int rank_ = -1;
};

// The algorithms of a hierarchical collective: the reduce-scatter inside each host (kRing or
// kTwoShot; the one of this rank's host) and the collective between hosts.
struct TwoLevel {
  Algorithm intra = Algorithm::kRing;
  Algorithm inter = Algorithm::kRing;
};

// In-place all-reduce of `count` elements: reduce-scatter inside each host over the host's
// partition of the tensor, then for each piece between all hosts' segment boundaries an
// all-reduce among the pieces' owners (one per host; AVG divides by all ranks), then an
// all-gather inside each host. Hosts may have different numbers of ranks.
void hierarchicalAllReduce(Transport& t, const Topology& topo, void* data, size_t count, const CollectiveArgs& a,
                           TwoLevel algos);

// The same over float32 `data` with the stage between hosts compressed (`algos.inter`: kRing or
// kTwoShot); the stages inside hosts are exact (float32). With `residual` (count floats), error
// feedback on the pieces this rank encodes; zero elsewhere.
void hierarchicalCompressedAllReduce(Transport& t, const Topology& topo, float* data, size_t count,
                                     const CollectiveArgs& a, const Compression& c, TwoLevel algos,
                                     float* residual = nullptr);

// Reduce-scatter over the caller's slices (slice r ends at rank r), with equally many ranks on
// every host: inside each host, a reduce-scatter in which local rank j's part is its column's
// slices (the ranks of local index j, in host order) back to back; between hosts, a
// reduce-scatter of those slices among the column (`algos.inter`; AVG divides by all ranks).
void hierarchicalReduceScatter(Transport& t, const Topology& topo, void* data, const size_t* segBegin,
                               const size_t* segEnd, const CollectiveArgs& a, TwoLevel algos);
// The same over float32 with the stage between hosts compressed: each slice keeps its index in
// `data` for the hash, the stream's rank is the host's.
void hierarchicalCompressedReduceScatter(Transport& t, const Topology& topo, float* data, const size_t* segBegin,
                                         const size_t* segEnd, const CollectiveArgs& a, const Compression& c,
                                         TwoLevel algos);

// All-gather in place (slice s from rank s), equally many ranks on every host: between hosts
// among each column, then inside each host (copies: the flat all-gather's bits).
void hierarchicalAllGather(Transport& t, const Topology& topo, void* data, const size_t* segBegin,
                           const size_t* segEnd, const CollectiveArgs& a);
// The same over float32 with the stage between hosts compressed: each rank encodes its slice
// once, the host's index as the stream's rank; every rank decodes every slice.
void hierarchicalCompressedAllGather(Transport& t, const Topology& topo, float* data, const size_t* segBegin,
                                     const size_t* segEnd, const CollectiveArgs& a, const Compression& c);

// Reduce of `count` elements to `root`: inside each host to its leader (the root on its host,
// else the host's rank of the root's local index, or its first; `algos.intra`: kTree or
// kOneShot), then among the leaders to the root (`algos.inter`; AVG divides by all ranks).
// Other ranks' `data` is scratch.
void hierarchicalReduce(Transport& t, const Topology& topo, void* data, size_t count, int root,
                        const CollectiveArgs& a, TwoLevel algos);

// The rank that carries host `host`'s part of a collective rooted at `root` (reduce, broadcast).
int hostLeader(const Topology& topo, int host, int root);

}  // namespace zcoll
