// A tree schedule (docs/arithmetic.md §4, "tree") as one pipeline of chunk steps, in NCCL's
// terms:
//
//   recvReduceSend       up the tree: a node combines its children's partial sums with its own
//                        part (x_node ⊕ c(2v+1) ⊕ c(2v+2), rounded once) and sends the result to
//                        its parent; a leaf only sends
//   recvReduce           the root: the sum is final (AVG divides here)
//   recvCopySend, send   down the tree (all-reduce): a node stores the result its parent sends
//                        and passes it to its children; the root starts it
//
// Several trees may run at once on different elements (the all-reduce's two mirrored heaps).
// Chunks pipeline through the levels: a node passes chunk c on as soon as it has it, while
// chunk c+1 is still on its way. Every rank posts its receives and sends its messages in one
// order (each chunk up every tree, then each chunk down), so the per-pair FIFO of the transports
// lines up. The arithmetic is the tree's of arithmetic.md whatever the timing: results are
// bit-identical.
#pragma once

#include <cstddef>
#include <vector>

#include "algorithms/collective.h"
#include "transport/transport.h"

namespace zcoll::primitives {

// One rank's place in one binary heap over p ranks; heap index u belongs to rank rankOf(u).
struct TreeNode {
  int parent = -1;             // rank, or -1 at the root
  int children[2] = {-1, -1};  // ranks, in combination order
  int childCount = 0;
  size_t begin = 0, end = 0;   // the elements this tree reduces

  template <typename RankOf>
  TreeNode(int v, int p, RankOf rankOf, size_t b, size_t e) : begin(b), end(e) {
    if (v > 0) parent = rankOf((v - 1) / 2);
    for (int c : {2 * v + 1, 2 * v + 2})
      if (c < p) children[childCount++] = rankOf(c);
  }
  size_t chunks(size_t ce) const { return (end - begin + ce - 1) / ce; }
};

// Runs `trees` over `data` in chunks of schedule::chunkElems(a): up to each root (reduce) and,
// with `broadcast`, back down to every rank (all-reduce). Tree k's messages are step k up and
// step 2 + k down (at most two trees).
void runTrees(Transport& t, void* data, const std::vector<TreeNode>& trees, const CollectiveArgs& a, bool broadcast);

}  // namespace zcoll::primitives
