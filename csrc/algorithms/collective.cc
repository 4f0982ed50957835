#include "algorithms/collective.h"

#include <vector>

#include "algorithms/schedule.h"
#include "util/error.h"

namespace zcoll {

const char* algorithmName(Algorithm a) {
  switch (a) {
    case Algorithm::kRing: return "ring";
    case Algorithm::kTree: return "tree";
    case Algorithm::kOneShot: return "oneshot";
    case Algorithm::kTwoShot: return "twoshot";
    case Algorithm::kHierarchical: return "hierarchical";
  }
  return "?";
}

bool parseAlgorithm(const std::string& name, Algorithm* out) {
  for (Algorithm a : {Algorithm::kRing, Algorithm::kTree, Algorithm::kOneShot, Algorithm::kTwoShot,
                      Algorithm::kHierarchical})
    if (name == algorithmName(a)) {
      *out = a;
      return true;
    }
  return false;
}

char* Workspace::get(size_t bytes) {
  if (bytes > bytes_) {
    buf_.reset(new char[bytes]);  // not value-initialised: no zeroing pass over the pages
    bytes_ = bytes;
  }
  return buf_.get();
}

uint64_t CollectiveArgs::tag(uint32_t step, uint32_t chunk) const {
  const bool reduces = opcode == OpCode::kAllReduce || opcode == OpCode::kReduceScatter || opcode == OpCode::kReduce;
  return packTag({opcode, reduces ? static_cast<uint8_t>(op) : kNoRedOp, dtype, seq, step, chunk});
}

void allReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a, Algorithm algo) {
  if (t.size() == 1) return;
  switch (algo) {
    case Algorithm::kOneShot: return schedule::oneShotAllReduce(t, data, count, a);
    case Algorithm::kTree: return schedule::treeAllReduce(t, data, count, a);
    case Algorithm::kRing:
    case Algorithm::kTwoShot: {
      const auto segs = schedule::segmentsOf(count, t.size(), a);
      std::vector<size_t> b, e;
      for (const auto& s : segs) b.push_back(s.begin), e.push_back(s.end);
      if (algo == Algorithm::kRing) {
        schedule::ringAllReduce(t, data, b.data(), e.data(), a, 0x800);  // steps apart from reduce-scatter's
      } else {
        schedule::flatReduceScatter(t, data, b.data(), e.data(), a);
        schedule::directAllGather(t, data, b.data(), e.data(), a, 1);
      }
      return;
    }
    case Algorithm::kHierarchical:
      ZCOLL_CHECK(false, "the hierarchical all-reduce needs the group's topology (hierarchicalAllReduce)");
  }
}

void reduceScatter(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a,
                   Algorithm algo) {
  ZCOLL_CHECK(algo == Algorithm::kRing || algo == Algorithm::kTwoShot, "reduce_scatter has no ", algorithmName(algo),
              " algorithm (ring or twoshot)");
  if (t.size() == 1) return;
  if (algo == Algorithm::kRing) schedule::ringReduceScatter(t, data, segBegin, segEnd, a);
  else schedule::flatReduceScatter(t, data, segBegin, segEnd, a);
}

void reduceToRoot(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a, Algorithm algo) {
  ZCOLL_CHECK(algo == Algorithm::kTree || algo == Algorithm::kOneShot, "reduce has no ", algorithmName(algo),
              " algorithm (tree or oneshot)");
  if (t.size() == 1) return;
  if (algo == Algorithm::kTree) schedule::treeReduce(t, data, count, root, a);
  else schedule::oneShotReduce(t, data, count, root, a);
}

bool reduceWritesData(int rank, int size, int root, Algorithm algo) {
  if (rank == root) return true;
  if (algo == Algorithm::kOneShot) return false;
  if (algo == Algorithm::kTree) return 2 * schedule::mod(rank - root, size) + 1 < size;  // has a child in the heap
  return true;
}

void allGather(Transport& t, void* data, const size_t* segBegin, const size_t* segEnd, const CollectiveArgs& a) {
  if (t.size() > 1) schedule::ringAllGather(t, data, segBegin, segEnd, a, 0);
}

}  // namespace zcoll
