"""The hierarchical (two-level) schedules of docs/arithmetic.md §4: a stage inside each host,
a stage between hosts, a stage inside each host again."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .dtypes import DTYPES
from .ops import ReduceOp
from .partition import partition, uncompressed_align


def host_ranks(hosts: Sequence, p: int) -> list[list[int]]:
    """Each host's ranks in ascending order, hosts in order of their lowest rank."""
    if len(hosts) != p:
        raise ValueError(f"hosts names {len(hosts)} hosts for {p} ranks")
    groups: dict = {}
    for r, h in enumerate(hosts):
        groups.setdefault(h, []).append(r)
    return list(groups.values())


def two_level(groups: list[list[int]]) -> bool:
    """More than one host, and some host with more than one rank."""
    return len(groups) > 1 and any(len(g) > 1 for g in groups)


def pieces(n: int, groups: list[list[int]], align: int):
    """Each host's segments (partition(n, ranks on the host, align); local rank j owns segment j)
    and the pieces between all hosts' segment boundaries: [(lo, hi, owner on each host)]."""
    segs = [partition(n, len(g), align) for g in groups]
    bounds = sorted({0, n} | {b for host in segs for seg in host for b in seg})
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo < hi:
            owners = [next(g[j] for j, (a, b) in enumerate(host) if a <= lo < b) for g, host in zip(groups, segs)]
            out.append((lo, hi, owners))
    return segs, out


def _intra_algos(intra, groups):
    algos = [intra] * len(groups) if isinstance(intra, str) else list(intra)
    if len(algos) != len(groups):
        raise ValueError(f"intra names {len(algos)} algorithms for {len(groups)} hosts")
    return algos


def _host_partials(xs, op, d, groups, intra, segs):
    """Stage 1: each host's reduce-scatter over its own segments (no AVG division yet); returns
    one array per host holding every segment's reduction at its place."""
    from .collectives import _flat_reduce, _ring_segment
    red = ReduceOp.SUM if op == ReduceOp.AVG else op
    out = []
    for g, algo, host in zip(groups, _intra_algos(intra, groups), segs):
        part = np.empty(xs[0].size, xs[0].dtype)
        host_xs = [xs[r] for r in g]
        for s, (lo, hi) in enumerate(host):
            if len(g) == 1:
                part[lo:hi] = host_xs[0][lo:hi]
            elif algo == "ring":
                part[lo:hi] = _ring_segment(host_xs, lo, hi, s, red, d, False)
            elif algo == "twoshot":
                part[lo:hi] = _flat_reduce([x[lo:hi] for x in host_xs], red, d, False)
            else:
                raise ValueError(f"unknown intra-host reduce_scatter algorithm {algo!r}; supported: ring, twoshot")
        out.append(part)
    return out


# The hierarchical all-reduce runs block after block (pipelined in time; arithmetic.md §4): each
# block, at most this many elements (a whole number of the partition's alignment), is a tensor
# of its own.
BLOCK_ELEMENTS = 1 << 20


def blocks(n: int, align: int) -> list[tuple[int, int]]:
    size = max(align, BLOCK_ELEMENTS // align * align)
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)] or [(0, 0)]


def hierarchical_all_reduce(xs, op, d, groups, intra, algo, avg, comp, residuals):
    """Per block: stage 1, a reduce-scatter inside each host; stage 2, for each piece, an
    all-reduce between the hosts of the owners' parts (hosts in order; AVG divides by all p
    ranks), compressed with `comp` (every element keeps its index in the tensor for the hash);
    stage 3, an all-gather inside each host. Compressed, every stage runs in float32, rounded to
    T once at the end, and the residuals feed back the parts each rank encodes. Returns
    (outputs, residuals or None)."""
    p, n = len(xs), xs[0].size
    if residuals is not None and (len(residuals) != p or any(np.asarray(e).size != n for e in residuals)):
        raise ValueError("need one residual array per rank, each the size of the input")
    if comp is not None:
        xs = [d.to_acc(x).astype(np.float32) for x in xs]
        out = np.empty(n, np.float32)
        res = [np.zeros(n, np.float32) for _ in range(p)] if residuals is not None else None
    else:
        out = np.empty(n, d.storage)
        res = None
    for blo, bhi in blocks(n, comp.align if comp is not None else uncompressed_align(d.itemsize)):
        block = [x[blo:bhi] for x in xs]
        if comp is None:
            out[blo:bhi] = _block_all_reduce(block, op, d, groups, intra, algo, avg)
        else:
            block_res = [np.asarray(e, np.float32).reshape(-1)[blo:bhi] for e in residuals] if res else None
            out[blo:bhi], new_res = _block_compressed_all_reduce(block, groups, intra, algo, avg, comp, blo, block_res)
            if res is not None:
                for r in range(p):
                    res[r][blo:bhi] = new_res[r]
    result = d.from_acc(out) if comp is not None else out
    return [result.copy() for _ in range(p)], res


def _block_all_reduce(xs, op, d, groups, intra, algo, avg):
    from .collectives import _all_reduce_arrays
    n = xs[0].size
    segs, cuts = pieces(n, groups, uncompressed_align(d.itemsize))
    partial = _host_partials(xs, op, d, groups, intra, segs)
    out = np.empty(n, d.storage)
    for lo, hi, _ in cuts:
        out[lo:hi] = _all_reduce_arrays([part[lo:hi] for part in partial], op, d, algo, avg)
    return out


def _block_compressed_all_reduce(xf, groups, intra, algo, avg, comp, base, residuals):
    """One block of float32 values starting at element `base` of the tensor; returns its result
    and every rank's new residuals for it (None without feedback)."""
    from .collectives import _compressed_all_reduce_f32
    n = xf[0].size
    segs, cuts = pieces(n, groups, comp.align)
    partial = _host_partials(xf, ReduceOp.SUM, DTYPES["float32"], groups, intra, segs)
    res = [np.zeros(n, np.float32) for _ in xf] if residuals is not None else None
    out = np.empty(n, np.float32)
    for lo, hi, owners in cuts:
        parts = [part[lo:hi].copy() for part in partial]
        if residuals is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                parts = [v + residuals[o][lo:hi] for v, o in zip(parts, owners)]
        piece_res = [np.zeros(hi - lo, np.float32) for _ in owners] if res is not None else None
        comp.element_base = base + lo
        out[lo:hi] = _compressed_all_reduce_f32(parts, comp, algo, avg, piece_res)
        if res is not None:
            for o, e in zip(owners, piece_res):
                res[o][lo:hi] = e
    comp.element_base = 0
    return out, res


def columns(groups: list[list[int]]) -> list[list[int]]:
    """With equally many ranks per host: column j is the rank of local index j on every host,
    in host order."""
    return [[g[j] for g in groups] for j in range(len(groups[0]))]


def even(groups: list[list[int]]) -> bool:
    return len({len(g) for g in groups}) == 1


def hierarchical_reduce_scatter(xs, op, d, groups, intra, inter, avg, segs, comp=None):
    """Equally many ranks per host. Stage 1: inside each host, a reduce-scatter in which local
    rank j's part is its column's slices back to back (in host order); stage 2: a
    reduce-scatter of those slices among the column (hosts in order; AVG divides by all p),
    compressed with `comp`, whose hash indices are the slices' places in the whole input.
    Returns each rank's slice (float32 when compressed)."""
    from .collectives import _compressed_reduce_phase, _flat_reduce, _ring_segment
    cols = columns(groups)
    red = ReduceOp.SUM if op == ReduceOp.AVG else op
    if comp is not None:
        xs = [d.to_acc(x).astype(np.float32) for x in xs]
        d, red = DTYPES["float32"], ReduceOp.SUM
    bounds, at = [], 0  # column j's place in the packed layout
    for col in cols:
        size = sum(segs[r][1] - segs[r][0] for r in col)
        bounds.append((at, at + size))
        at += size

    def pack(x):
        return np.concatenate([x[a:b] for col in cols for a, b in (segs[r] for r in col)] or [x[:0]])

    partial = {}  # local rank j: its host's sums of column j's slices, at their places
    for g, algo in zip(groups, _intra_algos(intra, groups)):
        packed = [pack(xs[r]) for r in g]
        for j, (lo, hi) in enumerate(bounds):
            if len(g) == 1:
                acc = packed[0][lo:hi]
            elif algo == "ring":
                acc = _ring_segment(packed, lo, hi, j, red, d, False)
            else:
                acc = _flat_reduce([x[lo:hi] for x in packed], red, d, False)
            full, off = np.zeros(xs[0].size, xs[0].dtype), 0
            for r in cols[j]:
                a, b = segs[r]
                full[a:b] = acc[off:off + b - a]
                off += b - a
            partial[g[j]] = full
    out = {}
    for col in cols:
        parts = [partial[r] for r in col]
        col_segs = [segs[r] for r in col]
        if comp is not None:
            accs = _compressed_reduce_phase(parts, col_segs, comp, inter, None)
            out.update({r: accs[k] / np.float32(avg) if avg else accs[k] for k, r in enumerate(col)})
        elif inter == "ring":
            out.update({r: _ring_segment(parts, lo, hi, k, op, d, avg) for k, (r, (lo, hi)) in enumerate(zip(col, col_segs))})
        else:
            out.update({r: _flat_reduce([x[lo:hi] for x in parts], op, d, avg) for r, (lo, hi) in zip(col, col_segs)})
    return [out[r] for r in range(len(xs))]


def hierarchical_all_gather(xs, d, groups, comp=None):
    """Equally many ranks per host. Stage 1: an all-gather of the slices among each column
    (compressed with `comp`: each rank encodes its slice once with the host's index as the
    stream's rank, its hash indices the slice's place in the output); stage 2: inside each host,
    an all-gather of the columns (copies). Returns the gathered output (float32 values rounded
    back to the dtype once when compressed)."""
    from .hashing import GATHER_STAGE
    m = xs[0].size
    if comp is None:
        return np.concatenate(xs)
    where = {r: h for h, g in enumerate(groups) for r in g}
    parts = [d.from_acc(comp.roundtrip(d.to_acc(x), where[r], GATHER_STAGE, r * m)) for r, x in enumerate(xs)]
    return np.concatenate(parts)


def hierarchical_reduce(xs, op, d, groups, root, intra, inter, avg):
    """Stage 1: inside each host a reduce to its leader (the root on the root's host, else the
    host's rank of the root's local index, or its first); stage 2: a reduce of the leaders'
    values to the root (hosts in order; AVG divides by all p)."""
    from .collectives import _flat_reduce, _tree_reduce
    red = ReduceOp.SUM if op == ReduceOp.AVG else op
    root_host = next(h for h, g in enumerate(groups) if root in g)
    index = groups[root_host].index(root)
    values = []
    for h, (g, algo) in enumerate(zip(groups, _intra_algos(intra, groups))):
        lead = g.index(root) if h == root_host else (index if index < len(g) else 0)
        host_xs = [xs[r] for r in g]
        if len(g) == 1:
            values.append(host_xs[0])
        elif algo == "oneshot":
            values.append(_flat_reduce(host_xs, red, d, False))
        else:
            values.append(_tree_reduce([host_xs[(v + lead) % len(g)] for v in range(len(g))], red, d, False))
    if inter == "oneshot":
        return _flat_reduce(values, op, d, avg)
    k = len(values)
    return _tree_reduce([values[(v + root_host) % k] for v in range(k)], op, d, avg)
