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

// The arguments of a stage between hosts: AVG divides by the whole group.
CollectiveArgs betweenHosts(const CollectiveArgs& a, const Transport& t) {
  CollectiveArgs between = a;
  between.avgRanks = t.size();
  return between;
}

CollectiveArgs inFloat32(const CollectiveArgs& a) {
  CollectiveArgs exact = a;
  exact.dtype = DType::kFloat32;
  return exact;
}

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
  const CollectiveArgs between = betweenHosts(a, t);
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
  const CollectiveArgs exact = inFloat32(a);  // the stages inside hosts: float32 sums, exact copies
  HostStages host(t, topo, layout);
  host.reduceScatter(data, exact, algos.intra);
  const CollectiveArgs between = betweenHosts(a, t);
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

namespace {

// Equally many ranks per host: column j holds the ranks of local index j, in host order, and in
// the packed layout of a host stage, column j's slices lie back to back as local rank j's part.
struct Columns {
  std::vector<std::vector<int>> ranks;  // by local index
  std::vector<size_t> packedBegin, packedEnd;  // column j's part of the packed layout
  size_t item;

  Columns(const Topology& topo, const size_t* segBegin, const size_t* segEnd, size_t itemBytes) : item(itemBytes) {
    ZCOLL_CHECK(topo.even(), "a hierarchical reduce-scatter or all-gather needs equally many ranks on every host");
    const size_t local = topo.ranksOn(0).size();
    size_t at = 0;
    for (size_t j = 0; j < local; ++j) {
      ranks.emplace_back();
      packedBegin.push_back(at);
      for (int h = 0; h < topo.hosts(); ++h) {
        const int r = topo.ranksOn(h)[j];
        ranks.back().push_back(r);
        at += segEnd[r] - segBegin[r];
      }
      packedEnd.push_back(at);
    }
  }
  // Copies column j's slices between `data` (at their places) and `packed` (back to back).
  void pack(size_t j, const char* data, char* packed, const size_t* segBegin, const size_t* segEnd) const {
    size_t at = packedBegin[j];
    for (int r : ranks[j]) {
      std::copy(data + segBegin[r] * item, data + segEnd[r] * item, packed + at * item);
      at += segEnd[r] - segBegin[r];
    }
  }
  void unpack(size_t j, const char* packed, char* data, const size_t* segBegin, const size_t* segEnd) const {
    size_t at = packedBegin[j];
    for (int r : ranks[j]) {
      std::copy(packed + at * item, packed + (at + segEnd[r] - segBegin[r]) * item, data + segBegin[r] * item);
      at += segEnd[r] - segBegin[r];
    }
  }
  // The slices of column j, as the segment arrays of a schedule over the column.
  void slices(size_t j, const size_t* segBegin, const size_t* segEnd, std::vector<size_t>& b,
              std::vector<size_t>& e) const {
    b.clear(), e.clear();
    for (int r : ranks[j]) b.push_back(segBegin[r]), e.push_back(segEnd[r]);
  }
};

// Stage 1 of the reduce-scatters: this host's reduce-scatter over the packed layout, after
// which this rank's column's host sums are back at their places in `data`.
void hostReduceScatter(Transport& t, const Topology& topo, const Columns& cols, char* data, const size_t* segBegin,
                       const size_t* segEnd, CollectiveArgs a, Algorithm intra) {
  const size_t j = static_cast<size_t>(topo.localIndex(t.rank()));
  if (cols.ranks.size() == 1) return;
  std::vector<char> packed(cols.packedEnd.back() * cols.item);
  for (size_t k = 0; k < cols.ranks.size(); ++k) cols.pack(k, data, packed.data(), segBegin, segEnd);
  if (a.op == RedOp::kAvg) a.op = RedOp::kSum;  // the division comes once, between hosts
  RankView local(t, topo.ranksOn(topo.hostOf(t.rank())));
  reduceScatter(local, packed.data(), cols.packedBegin.data(), cols.packedEnd.data(), a, intra);
  cols.unpack(j, packed.data(), data, segBegin, segEnd);
}

// Stage 2 of the all-gathers: this host's all-gather of the columns over the packed layout,
// then every column back at its places in `data`.
void hostAllGather(Transport& t, const Topology& topo, const Columns& cols, char* data, const size_t* segBegin,
                   const size_t* segEnd, const CollectiveArgs& a) {
  if (cols.ranks.size() == 1) return;
  const size_t j = static_cast<size_t>(topo.localIndex(t.rank()));
  std::vector<char> packed(cols.packedEnd.back() * cols.item);
  cols.pack(j, data, packed.data(), segBegin, segEnd);
  RankView local(t, topo.ranksOn(topo.hostOf(t.rank())));
  allGather(local, packed.data(), cols.packedBegin.data(), cols.packedEnd.data(), a);
  for (size_t k = 0; k < cols.ranks.size(); ++k) cols.unpack(k, packed.data(), data, segBegin, segEnd);
}

// This rank's column as a schedule sees it: a view of its ranks, and their slices.
struct MyColumn {
  RankView view;
  std::vector<size_t> begin, end;

  MyColumn(Transport& t, const Topology& topo, const Columns& cols, const size_t* segBegin, const size_t* segEnd)
      : view(t, cols.ranks[static_cast<size_t>(topo.localIndex(t.rank()))]) {
    cols.slices(static_cast<size_t>(topo.localIndex(t.rank())), segBegin, segEnd, begin, end);
  }
};

}  // namespace

void hierarchicalReduceScatter(Transport& t, const Topology& topo, void* data, const size_t* segBegin,
                               const size_t* segEnd, const CollectiveArgs& a, TwoLevel algos) {
  const Columns cols(topo, segBegin, segEnd, dtypeSize(a.dtype));
  hostReduceScatter(t, topo, cols, static_cast<char*>(data), segBegin, segEnd, a, algos.intra);
  MyColumn column(t, topo, cols, segBegin, segEnd);
  reduceScatter(column.view, data, column.begin.data(), column.end.data(), betweenHosts(a, t), algos.inter);
}

void hierarchicalCompressedReduceScatter(Transport& t, const Topology& topo, float* data, const size_t* segBegin,
                                         const size_t* segEnd, const CollectiveArgs& a, const Compression& c,
                                         TwoLevel algos) {
  const Columns cols(topo, segBegin, segEnd, sizeof(float));
  hostReduceScatter(t, topo, cols, reinterpret_cast<char*>(data), segBegin, segEnd, inFloat32(a), algos.intra);
  MyColumn column(t, topo, cols, segBegin, segEnd);
  compressedReduceScatter(column.view, data, column.begin.data(), column.end.data(), betweenHosts(a, t), c,
                          algos.inter);
}

void hierarchicalAllGather(Transport& t, const Topology& topo, void* data, const size_t* segBegin,
                           const size_t* segEnd, const CollectiveArgs& a) {
  const Columns cols(topo, segBegin, segEnd, dtypeSize(a.dtype));
  MyColumn column(t, topo, cols, segBegin, segEnd);
  allGather(column.view, data, column.begin.data(), column.end.data(), a);
  hostAllGather(t, topo, cols, static_cast<char*>(data), segBegin, segEnd, a);
}

void hierarchicalCompressedAllGather(Transport& t, const Topology& topo, float* data, const size_t* segBegin,
                                     const size_t* segEnd, const CollectiveArgs& a, const Compression& c) {
  const Columns cols(topo, segBegin, segEnd, sizeof(float));
  MyColumn column(t, topo, cols, segBegin, segEnd);
  compressedAllGather(column.view, data, column.begin.data(), column.end.data(), inFloat32(a), c);
  hostAllGather(t, topo, cols, reinterpret_cast<char*>(data), segBegin, segEnd, inFloat32(a));
}

int hostLeader(const Topology& topo, int host, int root) {
  if (topo.hostOf(root) == host) return root;
  const auto& ranks = topo.ranksOn(host);
  const size_t index = static_cast<size_t>(topo.localIndex(root));
  return index < ranks.size() ? ranks[index] : ranks[0];
}

void hierarchicalReduce(Transport& t, const Topology& topo, void* data, size_t count, int root,
                        const CollectiveArgs& a, TwoLevel algos) {
  const int host = topo.hostOf(t.rank()), leader = hostLeader(topo, host, root);
  const auto& local = topo.ranksOn(host);
  CollectiveArgs inside = a;
  if (inside.op == RedOp::kAvg) inside.op = RedOp::kSum;  // the division comes once, between hosts
  RankView hostView(t, local);
  reduceToRoot(hostView, data, count, topo.localIndex(leader), inside, algos.intra);
  if (t.rank() != leader) return;
  std::vector<int> leaders;
  for (int h = 0; h < topo.hosts(); ++h) leaders.push_back(hostLeader(topo, h, root));
  RankView leaderView(t, leaders);
  reduceToRoot(leaderView, data, count, topo.hostOf(root), betweenHosts(a, t), algos.inter);
}

}  // namespace zcoll
