"""What each of p simulated ranks holds after each collective: docs/arithmetic.md, literally.

Every function takes one numpy array per rank and returns one result per rank (``reduce``
returns the root's). Uncompressed results are exact for the named algorithm; compressed ones
(``codec=``) follow the contract's schedules, including their stochastic rounding.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import codecs as C
from .dtypes import DType, resolve_dtype
from .hashing import GATHER_STAGE, stream_key
from .ops import ReduceOp, average, check_op, combine, parse_op, premultiply
from .partition import partition, uncompressed_align

ALL_REDUCE_ALGOS = ("ring", "tree", "oneshot", "twoshot")
COMPRESSED_ALGOS = ("ring", "twoshot")
REDUCE_SCATTER_ALGOS = ("ring", "twoshot")
REDUCE_ALGOS = ("tree", "oneshot")
_COMPRESSIBLE = ("float32", "float16", "bfloat16")


# ---------------------------------------------------------------------------------------------
# input checking

def _flat_inputs(inputs: Sequence[np.ndarray], dtype: str | None, same_size=True):
    if len(inputs) < 1:
        raise ValueError("need at least one rank's input")
    arrays = [np.asarray(a) for a in inputs]
    d = resolve_dtype(arrays, dtype)
    if same_size and len({a.shape for a in arrays}) != 1:
        raise ValueError(f"inputs differ in shape across ranks: {[a.shape for a in arrays]}")
    return [np.ascontiguousarray(a).reshape(-1) for a in arrays], d


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; supported: {', '.join(allowed)}")


class _Compression:
    """Codec parameters of one compressed collective and its hash keys."""

    def __init__(self, codec: str, block: int, seed: int, step: int, dtype: DType, op: ReduceOp):
        self.codec = C.get_codec(codec)
        if self.codec.blockwise:
            C.check_block(block)
        if dtype.name not in _COMPRESSIBLE:
            raise ValueError(f"codec {codec} compresses float32/float16/bfloat16, not {dtype.name}")
        if op not in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PREMUL_SUM):
            raise ValueError(f"only sum/avg/premul_sum are compressed, not {op.value}")
        self.block, self.seed, self.step = block, seed, step
        self.element_base = 0  # the hash index of the data's first element (hierarchical pieces)

    @property
    def align(self) -> int:
        return self.codec.align(self.block)

    def roundtrip(self, v: np.ndarray, rank: int, stage: int, base: int) -> np.ndarray:
        key = stream_key(self.seed, self.step, rank, stage)
        return C.roundtrip(self.codec, v, key, self.element_base + base, self.block)


# ---------------------------------------------------------------------------------------------
# uncompressed reduction orders (docs/arithmetic.md §4)

# `avg` is False or the number AVG divides by: the number of ranks, or for a stage of a
# hierarchical schedule the whole group's (§4, hierarchical).

def _ring_segment(xs, lo, hi, s, op, d, avg):
    """Segment s travels s+1 -> s+2 -> ... -> s, rounded to T at every hop."""
    p = len(xs)
    acc = xs[(s + 1) % p][lo:hi]
    for j in range(2, p + 1):
        a = combine(op, d.to_acc(acc), d.to_acc(xs[(s + j) % p][lo:hi]), d)
        if j == p and avg:
            a = average(a, avg, d)
        acc = d.from_acc(a)
    return acc


def _flat_reduce(parts, op, d, avg):
    """x_0 ⊕ x_1 ⊕ ... ⊕ x_{p-1} in A(T), rounded once."""
    a = d.to_acc(parts[0])
    for x in parts[1:]:
        a = combine(op, a, d.to_acc(x), d)
    if avg:
        a = average(a, avg, d)
    return d.from_acc(a)


def _tree_reduce(parts_by_heap_index, op, d, avg):
    """Binary heap reduction; parts_by_heap_index[v] is node v's input. Returns the root's value."""
    p = len(parts_by_heap_index)
    out = [None] * p
    for v in range(p - 1, -1, -1):
        a = d.to_acc(parts_by_heap_index[v])
        for c in (2 * v + 1, 2 * v + 2):
            if c < p:
                a = combine(op, a, d.to_acc(out[c]), d)
        if v == 0 and avg:
            a = average(a, avg, d)
        out[v] = d.from_acc(a)
    return out[0]


def _all_reduce_arrays(xs, op, d, algo, avg):
    """The uncompressed all-reduce of §4 over len(xs) ranks, flattened; `avg` as above."""
    p, n = len(xs), xs[0].size
    out = np.empty(n, d.storage)
    if p == 1:  # the identity (AVG divides by 1); a hierarchical stage has two ranks or more
        out[:] = xs[0]
    elif algo == "ring":
        for s, (lo, hi) in enumerate(partition(n, p, uncompressed_align(d.itemsize))):
            out[lo:hi] = _ring_segment(xs, lo, hi, s, op, d, avg)
    elif algo in ("oneshot", "twoshot"):
        out[:] = _flat_reduce(xs, op, d, avg)
    else:  # double binary tree: tree A = heap over ranks, tree B = heap over mirrored ranks
        (a_lo, a_hi), (b_lo, b_hi) = partition(n, 2, uncompressed_align(d.itemsize))
        out[a_lo:a_hi] = _tree_reduce([x[a_lo:a_hi] for x in xs], op, d, avg)
        out[b_lo:b_hi] = _tree_reduce([x[b_lo:b_hi] for x in reversed(xs)], op, d, avg)
    return out


def _prepare(xs, op, d, premul):
    op = parse_op(op)
    check_op(op, d)
    if op == ReduceOp.PREMUL_SUM:
        if premul is None:
            raise ValueError("premul_sum needs premul=<factor>")
        xs = [premultiply(x, premul, d) for x in xs]
    return xs, op


def all_reduce(inputs: Sequence[np.ndarray], op: ReduceOp | str = "sum", algo: str = "ring", *,
               dtype: str | None = None, premul: float | None = None, codec: str | None = None,
               block: int = C.DEFAULT_BLOCK, seed: int = 0, step: int = 0,
               residuals: Sequence[np.ndarray] | None = None, hosts: Sequence | None = None,
               intra: str | Sequence[str] = "ring"):
    """All-reduce over len(inputs) ranks. Returns one array per rank (all identical).

    With ``codec`` the compressed schedule ``algo`` ('ring' or 'twoshot') runs; with
    ``residuals`` (one float32 array per rank) error feedback is on and the function returns
    ``(outputs, new_residuals)``. With ``hosts`` (each rank's host) on two levels, the
    hierarchical schedule of §4 runs: ``intra`` is the reduce-scatter algorithm within each host
    (one, or one per host in order of their lowest rank) and ``algo`` the all-reduce between
    hosts, the compressed one when ``codec`` is given.
    """
    xs, d = _flat_inputs(inputs, dtype)
    shape = np.asarray(inputs[0]).shape
    xs, op = _prepare(xs, op, d, premul)
    avg = len(xs) if op == ReduceOp.AVG else False
    p = len(xs)
    comp = None
    if codec is not None:
        _check_choice("compressed all_reduce algorithm", algo, COMPRESSED_ALGOS)
        comp = _Compression(codec, block, seed, step, d, op)
    elif residuals is not None:
        raise ValueError("error feedback (residuals=) needs a codec")
    else:
        _check_choice("all_reduce algorithm", algo, ALL_REDUCE_ALGOS)
    if hosts is not None:
        from .hierarchical import host_ranks, hierarchical_all_reduce, two_level
        groups = host_ranks(hosts, p)
        if two_level(groups):
            outs, res = hierarchical_all_reduce(xs, op, d, groups, intra, algo, avg, comp, residuals)
            outs = [o.reshape(shape) for o in outs]
            return (outs, res) if residuals is not None else outs
    if comp is not None:
        outs, res = _compressed_all_reduce(xs, d, comp, algo, avg, residuals)
        outs = [o.reshape(shape) for o in outs]
        return (outs, res) if residuals is not None else outs
    out = _all_reduce_arrays(xs, op, d, algo, avg)
    return [out.reshape(shape).copy() for _ in range(p)]


def reduce(inputs: Sequence[np.ndarray], root: int = 0, op: ReduceOp | str = "sum",
           algo: str = "tree", *, dtype: str | None = None, premul: float | None = None,
           hosts: Sequence | None = None, intra: str | Sequence[str] = "tree") -> np.ndarray:
    """Reduce to ``root``; returns the root's result (other ranks' outputs are undefined). With
    ``hosts`` on two levels: ``intra`` (tree or oneshot, one or one per host) inside hosts,
    ``algo`` between them (§4, hierarchical)."""
    xs, d = _flat_inputs(inputs, dtype)
    shape = np.asarray(inputs[0]).shape
    p = len(xs)
    if not 0 <= root < p:
        raise ValueError(f"root {root} is not a rank of a group of {p}")
    _check_choice("reduce algorithm", algo, REDUCE_ALGOS)
    xs, op = _prepare(xs, op, d, premul)
    avg = p if op == ReduceOp.AVG else False
    if hosts is not None:
        from .hierarchical import hierarchical_reduce, host_ranks, two_level
        groups = host_ranks(hosts, p)
        if two_level(groups):
            return hierarchical_reduce(xs, op, d, groups, root, intra, algo, avg).reshape(shape)
    if p == 1:
        return xs[0].reshape(shape).copy()
    if algo == "oneshot":
        return _flat_reduce(xs, op, d, avg).reshape(shape)
    by_heap = [xs[(v + root) % p] for v in range(p)]
    return _tree_reduce(by_heap, op, d, avg).reshape(shape)


def reduce_scatter(inputs: Sequence[np.ndarray], op: ReduceOp | str = "sum", algo: str = "ring", *,
                   counts: Sequence[int] | None = None, dtype: str | None = None,
                   premul: float | None = None, codec: str | None = None,
                   block: int = C.DEFAULT_BLOCK, seed: int = 0, step: int = 0,
                   residuals: Sequence[np.ndarray] | None = None, hosts: Sequence | None = None,
                   intra: str | Sequence[str] = "ring"):
    """Reduce-scatter: rank r gets the reduction of slice r (``counts`` elements each, default
    equal parts). Each input holds all slices back to back. Compressed and error feedback as
    in all_reduce. With ``hosts`` on two levels and equally many ranks per host, the
    hierarchical schedule of §4 (``intra`` inside hosts, ``algo`` between; no error feedback)."""
    xs, d = _flat_inputs(inputs, dtype)
    p, n = len(xs), xs[0].size
    counts = _counts(n, p, counts)
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    segs = list(zip(bounds[:-1], bounds[1:]))
    xs, op = _prepare(xs, op, d, premul)
    avg = p if op == ReduceOp.AVG else False
    _check_choice("reduce_scatter algorithm", algo, REDUCE_SCATTER_ALGOS)
    if hosts is not None:
        from .hierarchical import even, hierarchical_reduce_scatter, host_ranks, two_level
        groups = host_ranks(hosts, p)
        if two_level(groups) and even(groups):
            if residuals is not None:
                raise ValueError("the hierarchical reduce_scatter has no error feedback")
            comp = _Compression(codec, block, seed, step, d, op) if codec is not None else None
            outs = hierarchical_reduce_scatter(xs, op, d, groups, intra, algo, avg, segs, comp)
            return [d.from_acc(o) for o in outs] if comp is not None else outs
    if codec is not None:
        comp = _Compression(codec, block, seed, step, d, op)
        xf, res = _with_residuals(xs, d, residuals)
        if p == 1:
            return _maybe_res([d.from_acc(xf[0])], res, residuals)
        accs = _compressed_reduce_phase(xf, segs, comp, algo, res)
        outs = [d.from_acc(average(accs[s], avg, d) if avg else accs[s]) for s in range(p)]
        return _maybe_res(outs, res, residuals)
    if residuals is not None:
        raise ValueError("error feedback (residuals=) needs a codec")
    if p == 1:
        return [xs[0].copy()]
    if algo == "ring":
        return [_ring_segment(xs, lo, hi, s, op, d, avg) for s, (lo, hi) in enumerate(segs)]
    return [_flat_reduce([x[lo:hi] for x in xs], op, d, avg) for lo, hi in segs]


def all_gather(inputs: Sequence[np.ndarray], *, dtype: str | None = None, codec: str | None = None,
               block: int = C.DEFAULT_BLOCK, seed: int = 0, step: int = 0,
               hosts: Sequence | None = None) -> list[np.ndarray]:
    """All-gather: every rank gets all inputs back to back (flattened). With ``codec`` each rank
    encodes its part once (gather stage) and every rank, the sender too, decodes it. With
    ``hosts`` on two levels and equally many ranks per host, the hierarchical schedule of §4
    (the same bits uncompressed; compressed, the stream's rank is the sender's host)."""
    xs, d = _flat_inputs(inputs, dtype)
    p, m = len(xs), xs[0].size
    if hosts is not None:
        from .hierarchical import even, hierarchical_all_gather, host_ranks, two_level
        groups = host_ranks(hosts, p)
        if two_level(groups) and even(groups):
            comp = _Compression(codec, block, seed, step, d, ReduceOp.SUM) if codec is not None else None
            out = hierarchical_all_gather(xs, d, groups, comp)
            return [out.copy() for _ in range(p)]
    if codec is None or p == 1:
        out = np.concatenate(xs)
    else:
        comp = _Compression(codec, block, seed, step, d, ReduceOp.SUM)
        out = np.concatenate([d.from_acc(comp.roundtrip(d.to_acc(x), r, GATHER_STAGE, r * m))
                              for r, x in enumerate(xs)])
    return [out.copy() for _ in range(p)]


def broadcast(inputs: Sequence[np.ndarray], root: int = 0, *, dtype: str | None = None) -> list[np.ndarray]:
    """Every rank gets the root's input, bit for bit."""
    xs, _ = _flat_inputs(inputs, dtype)
    if not 0 <= root < len(xs):
        raise ValueError(f"root {root} is not a rank of a group of {len(xs)}")
    shape = np.asarray(inputs[root]).shape
    return [xs[root].reshape(shape).copy() for _ in xs]


# ---------------------------------------------------------------------------------------------
# compressed schedules (docs/arithmetic.md §6), all in float32

def _counts(n, p, counts):
    if counts is None:
        if n % p:
            raise ValueError(f"input of {n} elements does not split into {p} equal parts")
        return [n // p] * p
    counts = [int(c) for c in counts]
    if len(counts) != p or min(counts) < 0 or sum(counts) != n:
        raise ValueError(f"counts {counts} do not split {n} elements over {p} ranks")
    return counts


def _with_residuals(xs, d, residuals):
    """x'_r = x_r + e_r in float32, and fresh residual arrays (or None without feedback)."""
    xf = [d.to_acc(x).astype(np.float32) for x in xs]
    if residuals is None:
        return xf, None
    if len(residuals) != len(xs) or any(np.asarray(e).size != xs[0].size for e in residuals):
        raise ValueError("need one residual array per rank, each the size of the input")
    with np.errstate(over="ignore", invalid="ignore"):
        xf = [x + np.asarray(e, np.float32).reshape(-1) for x, e in zip(xf, residuals)]
    return xf, [np.zeros(xs[0].size, np.float32) for _ in xs]


def _maybe_res(outs, res, residuals):
    return (outs, res) if residuals is not None else outs


def _compressed_reduce_phase(xf, segs, comp, algo, res):
    """First half of ring / two-shot: the float32 sum each owner s holds for segment s."""
    p = len(xf)
    accs = []
    for s, (lo, hi) in enumerate(segs):
        if algo == "ring":
            r = (s + 1) % p
            v = xf[r][lo:hi]
            dec = comp.roundtrip(v, r, 0, lo)
            _store_residual(res, r, lo, hi, v, dec)
            for j in range(2, p + 1):
                r = (s + j) % p
                acc = dec + xf[r][lo:hi]
                if j < p:
                    dec = comp.roundtrip(acc, r, j - 1, lo)
                    _store_residual(res, r, lo, hi, acc, dec)
        else:
            acc = None
            for r in range(p):
                v = xf[r][lo:hi]
                if r != s:
                    dec = comp.roundtrip(v, r, 0, lo)
                    _store_residual(res, r, lo, hi, v, dec)
                    v = dec
                acc = v.copy() if acc is None else acc + v
        accs.append(acc)
    return accs


def _store_residual(res, r, lo, hi, v, dec, scale=1):
    if res is not None:
        res[r][lo:hi] = C.residual(v, dec, scale)


def _compressed_all_reduce(xs, d, comp, algo, avg, residuals):
    xf, res = _with_residuals(xs, d, residuals)
    out = _compressed_all_reduce_f32(xf, comp, algo, avg, res)
    result = d.from_acc(out)
    return [result.copy() for _ in range(len(xs))], res


def _compressed_all_reduce_f32(xf, comp, algo, avg, res):
    """The compressed all-reduce of float32 inputs (residuals already added); writes the new
    residuals into `res` (or None) and returns the float32 result."""
    p, n = len(xf), xf[0].size
    if p == 1:
        return xf[0].copy()
    segs = partition(n, p, comp.align)
    accs = _compressed_reduce_phase(xf, segs, comp, algo, res)
    out = np.empty(n, np.float32)
    for s, (lo, hi) in enumerate(segs):
        acc = accs[s]
        if acc is None:
            continue
        if avg:
            acc = acc / np.float32(avg)
        dec = comp.roundtrip(acc, s, GATHER_STAGE, lo)
        _store_residual(res, s, lo, hi, acc, dec, avg if avg else 1)
        out[lo:hi] = dec
    return out
