#include "algorithms/hierarchical.h"

#include <algorithm>
#include <set>

#include "algorithms/partition.h"
#include "algorithms/schedule.h"
#include "util/error.h"

namespace zcoll {

RankView::RankView(Transport& base, std::vector<int> ranks) : base_(base), ranks_(std::move(ranks)) {
  const auto it = std::find(ranks_.begin(), ranks_.end(), base.rank());
  ZCOLL_CHECK(it != ranks_.end(), "rank ", base.rank(), " is not in the view it runs a stage over");
  rank_ = static_cast<int>(it - ranks_.begin());
}

namespace {

// One piece of the tensor between all hosts' segment boundaries and its owner on each host.
struct Piece {
  size_t begin, end;
  std::vector<int> owners;  // by host
};

// Each host's partition of [0, count) over its ranks (local rank j owns segment j), and the
// pieces between all their boundaries (arithmetic.md §4, hierarchical).
struct Layout {
  std::vector<std::vector<Segment>> segs;  // by host
  std::vector<Piece> pieces;

  Layout(const Topology& topo, size_t count, size_t align) {
    std::set<size_t> bounds{0, count};
    for (int h = 0; h < topo.hosts(); ++h) {
      segs.push_back(partition(count, topo.ranksOn(h).size(), align));
      for (const auto& s : segs.back()) bounds.insert({s.begin, s.end});
    }
    for (auto it = bounds.begin(); std::next(it) != bounds.end(); ++it) {
      Piece piece{*it, *std::next(it), {}};
      for (int h = 0; h < topo.hosts(); ++h)
        for (size_t j = 0; j < segs[h].size(); ++j)
          if (segs[h][j].begin <= piece.begin && piece.begin < segs[h][j].end) piece.owners.push_back(topo.ranksOn(h)[j]);
      pieces.push_back(std::move(piece));
    }
  }
};

// Stage 1 and stage 3 inside this rank's host: the reduce-scatter (no AVG division) and the
// all-gather over the host's partition.
struct HostStages {
  RankView local;
  std::vector<size_t> begin, end;

  HostStages(Transport& t, const Topology& topo, const Layout& layout)
      : local(t, topo.ranksOn(topo.hostOf(t.rank()))) {
    for (const auto& s : layout.segs[topo.hostOf(t.rank())]) begin.push_back(s.begin), end.push_back(s.end);
  }
  void reduceScatter(void* data, CollectiveArgs a, Algorithm algo) {
    if (local.size() == 1) return;
    if (a.op == RedOp::kAvg) a.op = RedOp::kSum;  // the division comes once, between hosts
    zcoll::reduceScatter(local, data, begin.data(), end.data(), a, algo);
  }
  void allGather(void* data, const CollectiveArgs& a) {
    // Steps apart from the reduce-scatter's, so that a message of one is never taken for the other's.
    if (local.size() > 1) schedule::ringAllGather(local, data, begin.data(), end.data(), a, 0x800);
  }
};

}  // namespace

void hierarchicalAllReduce(Transport& t, const Topology& topo, void* data, size_t count, const CollectiveArgs& a,
                           TwoLevel algos) {
  const Layout layout(topo, count, kCacheLineBytes / dtypeSize(a.dtype));
  HostStages host(t, topo, layout);
  host.reduceScatter(data, a, algos.intra);
  CollectiveArgs between = a;
  between.avgRanks = t.size();
  for (const Piece& piece : layout.pieces) {  // in order on every rank: no waiting in circles
    if (std::find(piece.owners.begin(), piece.owners.end(), t.rank()) == piece.owners.end()) continue;
    RankView hosts(t, piece.owners);
    allReduce(hosts, schedule::at(data, piece.begin, a), piece.end - piece.begin, between, algos.inter);
  }
  host.allGather(data, a);
}

void hierarchicalCompressedAllReduce(Transport& t, const Topology& topo, float* data, size_t count,
                                     const CollectiveArgs& a, const Compression& c, TwoLevel algos, float* residual) {
  const Layout layout(topo, count, compressionAlign(c));
  CollectiveArgs exact = a;  // the stages inside hosts: float32 sums, exact copies
  exact.dtype = DType::kFloat32;
  HostStages host(t, topo, layout);
  host.reduceScatter(data, exact, algos.intra);
  CollectiveArgs between = a;
  between.avgRanks = t.size();
  size_t zeroFrom = 0;  // residuals outside the pieces this rank encodes are 0
  for (const Piece& piece : layout.pieces) {
    if (std::find(piece.owners.begin(), piece.owners.end(), t.rank()) == piece.owners.end()) continue;
    if (residual) std::fill(residual + zeroFrom, residual + piece.begin, 0.0f);
    RankView hosts(t, piece.owners);
    Compression pc = c;
    pc.elementBase = c.elementBase + piece.begin;  // the piece's elements keep their indices for the hash
    compressedAllReduce(hosts, data + piece.begin, piece.end - piece.begin, between, pc, algos.inter,
                        residual ? residual + piece.begin : nullptr);
    zeroFrom = piece.end;
  }
  if (residual) std::fill(residual + zeroFrom, residual + count, 0.0f);
  host.allGather(data, exact);
}

}  // namespace zcoll
