// Tree schedules (docs/arithmetic.md §4 "tree"): a binary heap of ranks; node v combines
// x_node ⊕ c(2v+1) ⊕ c(2v+2) in A(T), rounds once and sends to its parent; the root applies AVG.
// The all-reduce runs two such trees at once on the two halves of the tensor: tree A is the heap
// over ranks, tree B the heap over mirrored ranks p-1-r, so the inner nodes of one are the leaves
// of the other and every rank sends and receives about the same amount. Chunks pipeline
// through the levels.
//
// Message order: between two ranks messages are FIFO, so every rank posts and sends in one
// global order, item (chunk c, tree k) by item; all reduction messages before all broadcast
// messages.
#include <vector>

#include "algorithms/schedule.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll::schedule {
namespace {

// One rank's place in one binary heap over p ranks; heap index u belongs to rank rankOf(u).
struct TreeNode {
  int parent = -1;                 // rank, or -1 at the root
  int children[2] = {-1, -1};      // ranks, in combination order
  int childCount = 0;
  size_t begin = 0, end = 0;       // the elements this tree reduces

  template <typename RankOf>
  TreeNode(int v, int p, RankOf rankOf, size_t b, size_t e) : begin(b), end(e) {
    if (v > 0) parent = rankOf((v - 1) / 2);
    for (int c : {2 * v + 1, 2 * v + 2})
      if (c < p) children[childCount++] = rankOf(c);
  }
  size_t chunks(size_t ce) const { return (end - begin + ce - 1) / ce; }
};

// Reduce up the trees: chunk by chunk, each tree's node reduces its children's partials into
// `data` and sends the result to its parent (the roots keep it). Returns the sends to wait for.
std::vector<RequestId> reduceUp(Transport& t, void* data, const std::vector<TreeNode>& trees, const CollectiveArgs& a) {
  const int p = t.size();
  const size_t ce = chunkElems(a), item = itemBytes(a);
  size_t chunks = 0, scratchElems = 0;
  std::vector<size_t> slotBase(trees.size());
  // A node with one child combines its part as it arrives, straight from the transport (on shm
  // out of its ring or a single copy's bounce buffer): x_node ⊕ c, rounded once, as from a slot.
  auto fused = [&](size_t k) { return trees[k].childCount == 1; };
  for (size_t k = 0; k < trees.size(); ++k) {
    chunks = std::max(chunks, trees[k].chunks(ce));
    slotBase[k] = scratchElems;
    if (!fused(k)) scratchElems += static_cast<size_t>(trees[k].childCount) * (trees[k].end - trees[k].begin);
  }
  std::vector<char> own;
  char* slots = scratch(a, scratchElems * item, own);
  auto slot = [&](size_t k, int child, size_t off) {
    const TreeNode& n = trees[k];
    return slots + (slotBase[k] + static_cast<size_t>(child) * (n.end - n.begin) + (off - n.begin)) * item;
  };
  auto forEachItem = [&](auto fn) {  // (tree k, chunk c, offset, elems) in the global order
    for (size_t c = 0; c < chunks; ++c)
      for (size_t k = 0; k < trees.size(); ++k) {
        const size_t off = trees[k].begin + c * ce;
        if (off < trees[k].end) fn(k, c, off, std::min(ce, trees[k].end - off));
      }
  };
  std::vector<RequestId> recvs, sends;
  forEachItem([&](size_t k, size_t c, size_t off, size_t n) {
    const uint64_t tag = a.tag(static_cast<uint32_t>(k), c);
    if (fused(k)) {
      const int64_t divisor = trees[k].parent < 0 ? a.avgDivisor(p) : 0;
      recvs.push_back(t.irecvConsume(trees[k].children[0], tag, n * item, reduceInto(a, at(data, off, a), divisor, true)));
      return;
    }
    for (int i = 0; i < trees[k].childCount; ++i)
      recvs.push_back(t.irecv(trees[k].children[i], tag, slot(k, i, off), n * item));
  });
  size_t next = 0;
  forEachItem([&](size_t k, size_t c, size_t off, size_t n) {
    const TreeNode& node = trees[k];
    const void* srcs[3] = {at(data, off, a), nullptr, nullptr};
    for (int i = 0; i < node.childCount; ++i) {
      t.wait(recvs[next++], a.deadline);
      srcs[1 + i] = slot(k, i, off);
    }
    const bool root = node.parent < 0;
    if (!fused(k) && (node.childCount > 0 || root))
      kernels::cpu::reduceSources(a.dtype, a.op, srcs, 1 + node.childCount, at(data, off, a), n,
                                  root ? a.avgDivisor(p) : 0);
    if (!root) sends.push_back(t.isendOperand(node.parent, a.tag(static_cast<uint32_t>(k), c), at(data, off, a), n * item));
  });
  return sends;
}

}  // namespace

void treeAllReduce(Transport& t, void* data, size_t count, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const auto halves = segmentsOf(count, 2, a);
  const std::vector<TreeNode> trees = {
      TreeNode(r, p, [](int u) { return u; }, halves[0].begin, halves[0].end),
      TreeNode(p - 1 - r, p, [p](int u) { return p - 1 - u; }, halves[1].begin, halves[1].end)};
  for (RequestId s : reduceUp(t, data, trees, a)) t.wait(s, a.deadline);  // before results land here
  // Broadcast down the same trees (steps 2 and 3), chunk by chunk as results arrive.
  const size_t ce = chunkElems(a), item = itemBytes(a);
  const size_t chunks = std::max(trees[0].chunks(ce), trees[1].chunks(ce));
  std::vector<RequestId> reqs(2 * chunks), sends;
  std::vector<bool> posted(2 * chunks, false);
  for (size_t c = 0; c < chunks; ++c)
    for (size_t k = 0; k < 2; ++k) {
      const size_t off = trees[k].begin + c * ce;
      if (off < trees[k].end && trees[k].parent >= 0) {
        posted[2 * c + k] = true;
        reqs[2 * c + k] = t.irecv(trees[k].parent, a.tag(2 + k, c), at(data, off, a),
                                  std::min(ce, trees[k].end - off) * item);
      }
    }
  for (size_t c = 0; c < chunks; ++c)
    for (size_t k = 0; k < 2; ++k) {
      const size_t off = trees[k].begin + c * ce;
      if (off >= trees[k].end) continue;
      if (posted[2 * c + k]) t.wait(reqs[2 * c + k], a.deadline);
      for (int i = 0; i < trees[k].childCount; ++i)
        sends.push_back(t.isend(trees[k].children[i], a.tag(2 + k, c), at(data, off, a),
                                std::min(ce, trees[k].end - off) * item));
    }
  for (RequestId s : sends) t.wait(s, a.deadline);
}

void treeReduce(Transport& t, void* data, size_t count, int root, const CollectiveArgs& a) {
  const int p = t.size(), r = t.rank();
  const std::vector<TreeNode> tree = {TreeNode(mod(r - root, p), p, [p, root](int u) { return (u + root) % p; }, 0, count)};
  for (RequestId s : reduceUp(t, data, tree, a)) t.wait(s, a.deadline);
}

}  // namespace zcoll::schedule
