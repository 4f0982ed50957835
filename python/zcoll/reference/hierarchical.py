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


def hierarchical_all_reduce(xs, op, d, groups, intra, algo, avg, comp, residuals):
    """Stage 1: reduce-scatter inside each host; stage 2: for each piece, an all-reduce between
    the hosts of the owners' parts (hosts in order; AVG divides by all p ranks), compressed with
    `comp` (the piece's elements keep their indices for the hash); stage 3: all-gather inside
    each host. Compressed, every stage runs in float32, rounded to T once at the end, and the
    residuals feed back the parts each rank encodes. Returns (outputs, residuals or None)."""
    from .collectives import _all_reduce_arrays, _compressed_all_reduce_f32
    p, n = len(xs), xs[0].size
    if comp is None:
        segs, cuts = pieces(n, groups, uncompressed_align(d.itemsize))
        partial = _host_partials(xs, op, d, groups, intra, segs)
        out = np.empty(n, d.storage)
        for lo, hi, _ in cuts:
            out[lo:hi] = _all_reduce_arrays([part[lo:hi] for part in partial], op, d, algo, avg)
        return [out.copy() for _ in range(p)], None
    f32 = DTYPES["float32"]
    xf = [d.to_acc(x).astype(np.float32) for x in xs]
    segs, cuts = pieces(n, groups, comp.align)
    partial = _host_partials(xf, ReduceOp.SUM, f32, groups, intra, segs)
    res = None
    if residuals is not None:
        if len(residuals) != p or any(np.asarray(e).size != n for e in residuals):
            raise ValueError("need one residual array per rank, each the size of the input")
        res = [np.zeros(n, np.float32) for _ in range(p)]
    out = np.empty(n, np.float32)
    for lo, hi, owners in cuts:
        parts = [part[lo:hi].copy() for part in partial]
        if residuals is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                parts = [v + np.asarray(residuals[o], np.float32).reshape(-1)[lo:hi] for v, o in zip(parts, owners)]
        piece_res = [np.zeros(hi - lo, np.float32) for _ in owners] if res is not None else None
        comp.element_base = lo
        out[lo:hi] = _compressed_all_reduce_f32(parts, comp, algo, avg, piece_res)
        if res is not None:
            for o, e in zip(owners, piece_res):
                res[o][lo:hi] = e
    comp.element_base = 0
    result = d.from_acc(out)
    return [result.copy() for _ in range(p)], res
