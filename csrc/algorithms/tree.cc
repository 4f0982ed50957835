// Tree schedules (docs/arithmetic.md §4 "tree"): a binary heap of ranks; node v combines
// x_node ⊕ c(2v+1) ⊕ c(2v+2) in A(T), rounds once and sends to its parent; the root applies AVG.
// The all-reduce runs two such trees at once on the two halves of the tensor: tree A is the heap
// over ranks, tree B the heap over mirrored ranks p-1-r, so the inner nodes of one are the leaves
// of the other and every rank sends and receives about the same amount. Both are pipelines of
// chunk steps (primitives/tree_pipeline.h): chunks go up through the levels and, in the
// all-reduce, back down.
#include <vector>

#include "algorithms/schedule.h"
#include "primitives/tree_pipeline.h"

namespace zcoll::schedule {

using primitives::TreeNode;

void treeAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const auto halves = segmentsOf(count, 2, a);
  const std::vector<TreeNode> trees = {
      TreeNode(r, p, [](int u) { return u; }, halves[0].begin, halves[0].end),
      TreeNode(p - 1 - r, p, [p](int u) { return p - 1 - u; }, halves[1].begin, halves[1].end)};
  primitives::runTrees(t, data, trees, a, true);
}

void treeReduce(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const std::vector<TreeNode> tree = {TreeNode(mod(r - root, p), p, [p, root](int u) { return (u + root) % p; }, 0, count)};
  primitives::runTrees(t, data, tree, a, false);
}

}  // namespace zcoll::schedule
