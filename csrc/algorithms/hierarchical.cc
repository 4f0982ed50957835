#include "algorithms/hierarchical.h"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "algorithms/partition.h"
#include "algorithms/schedule.h"
#include "transport/router.h"
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

// Where the stages run. Over the shm+tcp transport, on its two transports (this host's, whose
// ranks it numbers from 0, and the network's), each driven by one thread: the blocks' pipeline.
// Over any other transport, on it alone, one thread.
struct Stages {
  Transport* inside = nullptr;  // null: this rank is alone on its host
  std::vector<int> insideRanks;  // this host's ranks as `inside` numbers them
  Transport* between = nullptr;
  bool pipelined = false;

  Stages(Transport& t, const Topology& topo) {
    const std::vector<int>& host = topo.ranksOn(topo.hostOf(t.rank()));
    const PerPeer split = perPeer(t);
    pipelined = split.network != nullptr;
    between = pipelined ? split.network : &t;
    inside = pipelined ? split.local : &t;
    for (size_t i = 0; i < host.size(); ++i) insideRanks.push_back(pipelined ? static_cast<int>(i) : host[i]);
    if (host.size() == 1) inside = nullptr;
  }
};

// Stage 1 and stage 3 inside this rank's host: the reduce-scatter (no AVG division) and the
// all-gather over the host's partition.
struct HostStages {
  std::unique_ptr<RankView> local;  // null: alone on the host
  std::vector<size_t> begin, end;

  HostStages(Transport* inside, const std::vector<int>& ranks, const Topology& topo, int rank, const Layout& layout) {
    if (inside) local = std::make_unique<RankView>(*inside, ranks);
    for (const auto& s : layout.segs[topo.hostOf(rank)]) begin.push_back(s.begin), end.push_back(s.end);
  }
  void reduceScatter(void* data, CollectiveArgs a, Algorithm algo) {
    if (!local) return;
    if (a.op == RedOp::kAvg) a.op = RedOp::kSum;  // the division comes once, between hosts
    zcoll::reduceScatter(*local, data, begin.data(), end.data(), a, algo);
  }
  void allGather(void* data, const CollectiveArgs& a) {
    // Steps apart from the reduce-scatter's, so that a message of one is never taken for the other's.
    if (local) schedule::ringAllGather(*local, data, begin.data(), end.data(), a, 0x800);
  }
};

// arithmetic.md §4: the hierarchical all-reduce runs on blocks of at most 2^20 elements (a whole
// number of the partition's alignment), each a tensor of its own.
constexpr size_t kBlockElements = size_t{1} << 20;

std::vector<Segment> blocksOf(size_t count, size_t align) {
  const size_t size = std::max(align, kBlockElements / align * align);
  std::vector<Segment> out;
  for (size_t lo = 0; lo < count; lo += size) out.push_back({lo, std::min(count, lo + size)});
  if (out.empty()) out.push_back({0, 0});
  return out;
}

// Runs every block's stages: pipelined, stage 2 of block b on a second thread while this one runs
// stage 1 of block b+1 and stage 3 of block b-1; else one block after the other. Either way
// every rank of a host runs its stages 1 and 3 in the same order. A failure on either thread
// aborts the transport (so the other thread's waits end) and is rethrown here.
void runBlocks(size_t blocks, bool pipelined, Transport& t, const std::function<void(size_t)>& stage1,
               const std::function<void(size_t)>& stage2, const std::function<void(size_t)>& stage3) {
  if (!pipelined || blocks == 1) {
    for (size_t b = 0; b < blocks; ++b) stage1(b), stage2(b), stage3(b);
    return;
  }
  std::mutex mu;
  std::condition_variable cv;
  size_t ready = 0, done = 0;  // blocks through stage 1, through stage 2
  bool stop = false;
  std::exception_ptr failed;  // the second thread's
  std::thread between([&] {
    try {
      for (size_t b = 0; b < blocks; ++b) {
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return ready > b || stop; });
          if (stop) return;
        }
        stage2(b);
        std::lock_guard<std::mutex> lock(mu);
        done = b + 1;
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      failed = std::current_exception();
      cv.notify_all();
    }
  });
  const auto afterStage2 = [&](size_t b) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done > b || failed; });
    if (failed) std::rethrow_exception(failed);
  };
  try {
    for (size_t b = 0; b < blocks; ++b) {
      stage1(b);
      {
        std::lock_guard<std::mutex> lock(mu);
        ready = b + 1;
      }
      cv.notify_all();
      if (b > 0) afterStage2(b - 1), stage3(b - 1);
    }
    afterStage2(blocks - 1);
    stage3(blocks - 1);
  } catch (...) {
    const std::exception_ptr mine = std::current_exception();
    t.abort("zcoll: a hierarchical all-reduce failed");
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    between.join();
    std::rethrow_exception(failed ? failed : mine);  // the first cause, where it is known
  }
  between.join();
}

// A hierarchical all-reduce's blocks, where their stages run, and each block's layout and
// stages inside the host.
struct Blocks {
  std::vector<Segment> blocks;
  Stages where;
  std::vector<Layout> layouts;
  std::vector<std::unique_ptr<HostStages>> hosts;

  Blocks(Transport& t, const Topology& topo, size_t count, size_t align)
      : blocks(blocksOf(count, align)), where(t, topo) {
    for (const Segment& b : blocks) layouts.emplace_back(topo, b.size(), align);
    for (const Layout& layout : layouts)
      hosts.push_back(std::make_unique<HostStages>(where.inside, where.insideRanks, topo, t.rank(), layout));
  }
};

bool owns(const Piece& piece, int rank) {
  return std::find(piece.owners.begin(), piece.owners.end(), rank) != piece.owners.end();
}

}  // namespace

void hierarchicalAllReduce(Transport& t, const Topology& topo, void* data, size_t count, const CollectiveArgs& a,
                           TwoLevel algos) {
  const size_t align = kCacheLineBytes / dtypeSize(a.dtype);
  Blocks plan(t, topo, count, align);
  const auto& [blocks, where, layouts, hosts] = plan;
  CollectiveArgs between = betweenHosts(a, t);
  between.workspace = nullptr;  // the workspace is the other thread's
  runBlocks(blocks.size(), where.pipelined, t,
            [&](size_t b) { hosts[b]->reduceScatter(schedule::at(data, blocks[b].begin, a), a, algos.intra); },
            [&](size_t b) {
              for (const Piece& piece : layouts[b].pieces) {  // in order on every rank: no waiting in circles
                if (!owns(piece, t.rank())) continue;
                RankView peers(*where.between, piece.owners);
                allReduce(peers, schedule::at(data, blocks[b].begin + piece.begin, a), piece.end - piece.begin, between,
                          algos.inter);
              }
            },
            [&](size_t b) { hosts[b]->allGather(schedule::at(data, blocks[b].begin, a), a); });
}

void hierarchicalCompressedAllReduce(Transport& t, const Topology& topo, float* data, size_t count,
                                     const CollectiveArgs& a, const Compression& c, TwoLevel algos, float* residual) {
  const size_t align = compressionAlign(c);
  Blocks plan(t, topo, count, align);
  const auto& [blocks, where, layouts, hosts] = plan;
  CollectiveArgs exact = inFloat32(a);  // the stages inside hosts: float32 sums, exact copies
  CollectiveArgs between = betweenHosts(a, t);
  between.workspace = nullptr;  // the workspace is the other thread's
  runBlocks(blocks.size(), where.pipelined, t,
            [&](size_t b) { hosts[b]->reduceScatter(data + blocks[b].begin, exact, algos.intra); },
            [&](size_t b) {
              float* x = data + blocks[b].begin;
              float* res = residual ? residual + blocks[b].begin : nullptr;
              size_t zeroFrom = 0;  // residuals outside the pieces this rank encodes are 0
              for (const Piece& piece : layouts[b].pieces) {
                if (!owns(piece, t.rank())) continue;
                if (res) std::fill(res + zeroFrom, res + piece.begin, 0.0f);
                RankView peers(*where.between, piece.owners);
                Compression pc = c;  // every element keeps its index in the tensor for the hash
                pc.elementBase = c.elementBase + blocks[b].begin + piece.begin;
                compressedAllReduce(peers, x + piece.begin, piece.end - piece.begin, between, pc, algos.inter,
                                    res ? res + piece.begin : nullptr);
                zeroFrom = piece.end;
              }
              if (res) std::fill(res + zeroFrom, res + blocks[b].size(), 0.0f);
            },
            [&](size_t b) { hosts[b]->allGather(data + blocks[b].begin, exact); });
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
