"""The native reduction primitive (csrc/kernels/cpu/reduce_cpu) and partition equal the contract.

Every algorithm order of docs/arithmetic.md §4 is a sequence of one primitive,
reduce_sources(srcs) = round_T(src0 ⊕ src1 ⊕ ... (/p)): a ring hop is {incoming, local}, a tree
node {own, children...}, one-/two-shot {x_0..x_{p-1}}. Driving the native primitive in those
orders must reproduce zcoll.reference bit for bit (NaN payloads aside) for every dtype and op.
"""
import numpy as np
import pytest
from contract_cases import (DTYPES, VALID_OPS, assert_matches, bits_of, dtype_kw, line_align,
                            make_inputs, nan_of, premul_factor, seed_of)

from native import _C
from zcoll import reference as R


def native_prepare(t, xs, op, premul):
    if op == "premul_sum":
        xs = [_C.premultiply(t, x, premul) for x in xs]
    return xs


def native_ring(t, xs, op, segs):
    """Segment s: s+1 -> s+2 -> ... -> s, one reduce_sources per hop, AVG on the last."""
    p = len(xs)
    outs = []
    for s, (lo, hi) in enumerate(segs):
        acc = xs[(s + 1) % p][lo:hi].copy()
        for j in range(2, p + 1):
            divisor = p if (j == p and op == "avg") else 0
            acc = _C.reduce_sources(t, op, [acc, np.ascontiguousarray(xs[(s + j) % p][lo:hi])], divisor)
        outs.append(acc)
    return outs


def native_tree(t, by_heap, op):
    p = len(by_heap)
    out = [None] * p
    for v in range(p - 1, -1, -1):
        srcs = [by_heap[v]] + [out[c] for c in (2 * v + 1, 2 * v + 2) if c < p]
        out[v] = _C.reduce_sources(t, op, [np.ascontiguousarray(s) for s in srcs],
                                   p if (v == 0 and op == "avg") else 0)
    return out[0]


def native_all_reduce(t, xs, op, algo, premul=None):
    p, n = len(xs), xs[0].size
    xs = native_prepare(t, xs, op, premul)
    if p == 1:
        return xs[0]
    if algo == "ring":
        segs = _C.partition(n, p, line_align(t))
        return np.concatenate(native_ring(t, xs, op, segs))
    if algo in ("oneshot", "twoshot"):
        return _C.reduce_sources(t, op, xs, p if op == "avg" else 0)
    (a_lo, a_hi), (b_lo, b_hi) = _C.partition(n, 2, line_align(t))
    half_a = native_tree(t, [x[a_lo:a_hi] for x in xs], op)
    half_b = native_tree(t, [x[b_lo:b_hi] for x in reversed(xs)], op)
    return np.concatenate([half_a, half_b])


CASES = [(t, op, p) for t in DTYPES for op in VALID_OPS[t] for p in (1, 2, 3, 4, 5, 8)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("algo", R.ALL_REDUCE_ALGOS)
def test_all_reduce_orders_from_the_native_primitive(case, algo):
    t, op, p = case
    rng = np.random.default_rng(seed_of("native", t, op, p, algo))
    premul = premul_factor(t) if op == "premul_sum" else None
    for n in (0, 1, p + 1, 700):  # 700: several tiles' worth of segments and a ragged tail
        xs = make_inputs(t, p, n, rng)
        want = R.all_reduce(xs, op, algo, premul=premul, **dtype_kw(t))[0]
        got = native_all_reduce(t, xs, op, algo, premul)
        assert_matches(t, got.reshape(-1), (bits_of(t, want), nan_of(t, want)), f"{algo} n={n}")


@pytest.mark.parametrize("t", DTYPES)
@pytest.mark.parametrize("algo", R.REDUCE_SCATTER_ALGOS)
def test_reduce_scatter_and_reduce_orders(t, algo):
    rng = np.random.default_rng(seed_of("rs", t, algo))
    p, m = 4, 300
    for op in VALID_OPS[t]:
        premul = premul_factor(t) if op == "premul_sum" else None
        xs = make_inputs(t, p, p * m, rng)
        want = R.reduce_scatter(xs, op, algo, premul=premul, **dtype_kw(t))
        pre = native_prepare(t, xs, op, premul)
        segs = [(r * m, (r + 1) * m) for r in range(p)]
        if algo == "ring":
            got = native_ring(t, pre, op, segs)
        else:
            got = [_C.reduce_sources(t, op, [np.ascontiguousarray(x[lo:hi]) for x in pre], p if op == "avg" else 0)
                   for lo, hi in segs]
        for g, w in zip(got, want):
            assert_matches(t, g, (bits_of(t, w), nan_of(t, w)), f"reduce_scatter {algo} {op}")
        if op in ("band", "bor"):
            continue
        root = 2
        want = R.reduce(xs, root, op, "tree", premul=premul, **dtype_kw(t))
        got = native_tree(t, [pre[(v + root) % p] for v in range(p)], op)
        assert_matches(t, got, (bits_of(t, want), nan_of(t, want)), f"reduce tree {op}")


@pytest.mark.parametrize("n", [0, 1, 7, 63, 64, 65, 1000, 12345])
@pytest.mark.parametrize("parts", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("align", [1, 16, 64, 256])
def test_partition_equals_reference(n, parts, align):
    assert [tuple(s) for s in _C.partition(n, parts, align)] == R.partition(n, parts, align)


def test_bad_arguments():
    x = np.ones(4, np.float32)
    with pytest.raises(RuntimeError, match="bxor is bitwise and not defined for float32"):
        _C.reduce_sources("float32", "bxor", [x, x])
    with pytest.raises(RuntimeError, match="avg is not defined for bool"):
        _C.reduce_sources("bool", "avg", [np.ones(4, bool)] * 2, 2)
    with pytest.raises(RuntimeError, match="integral factor"):
        _C.premultiply("int32", np.ones(4, np.int32), 2.5)
    with pytest.raises(ValueError, match="expected a contiguous array of float64 storage"):
        _C.reduce_sources("float64", "sum", [x, x])
    with pytest.raises(ValueError, match="sources differ in size"):
        _C.reduce_sources("float32", "sum", [x, np.ones(5, np.float32)])
    with pytest.raises(ValueError, match="unknown reduce op 'mean'"):
        _C.reduce_sources("float32", "mean", [x])


def test_integer_avg_and_wraparound_in_native_code():
    """The C++ must not rely on signed overflow (undefined): int32 and int64 wrap like numpy."""
    for t, dt in (("int32", np.int32), ("int64", np.int64), ("int16", np.int16)):
        info = np.iinfo(dt)
        xs = [np.array([info.max, info.min, -7, info.max], dt), np.array([1, -1, 0, info.max], dt)]
        for op in ("sum", "product", "avg"):
            want = R.all_reduce(xs, op, "oneshot")[0]
            got = _C.reduce_sources(t, op, xs, 2 if op == "avg" else 0)
            np.testing.assert_array_equal(got, want)
