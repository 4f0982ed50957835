"""zcoll.reference, uncompressed part (docs/arithmetic.md sections 1-4), against the doc itself.

The reference is vectorised numpy. This file holds a second, deliberately naive model of the
contract: one element at a time, explicit loops over the order of contributions, numpy scalars
of the accumulation type, and the 16-bit conversions written from the doc's text (float16
rounding through ``struct``'s IEEE half packing, bfloat16 with the doc's integer formula).
Results are compared bit for bit; where the doc leaves a NaN payload unspecified (a NaN produced
by an operation) only "is NaN" is compared. On top of that: partition properties, error bounds,
directed checks of each operator's semantics, collective shapes, and input validation.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import zcoll.reference as R
from contract_cases import (BITS_VIEW, DTYPES, FLOATS, INTS,
                            ITEMSIZE, STORAGE, VALID_OPS, WORLD_SIZES,
                            assert_bits_equal, assert_matches, bits_of, dtype_kw, kind, line_align,
                            make_inputs, nan_of, premul_factor, seed_of, to_storage)

# ---------------------------------------------------------------------------------------------
# dtypes of the contract (section 2)

def doc_partition(n, parts, align):
    """Section 1, the formula as printed."""
    units = -(-n // align)
    q, rem = divmod(units, parts)
    return [(min(n, align * (i * q + min(i, rem))), min(n, align * ((i + 1) * q + min(i + 1, rem))))
            for i in range(parts)]


# ---------------------------------------------------------------------------------------------
# the scalar model: bit helpers and 16-bit conversions written from section 2's text

def f32_from_bits(b):
    return np.frombuffer(struct.pack("<I", b & 0xFFFFFFFF), np.float32)[0]


def f32_to_bits(a):
    return struct.unpack("<I", np.float32(a).tobytes())[0]


def is_nan_f32_bits(b):
    return (b & 0x7FFFFFFF) > 0x7F800000


def f16_bits_to_f32(h):
    """float16 -> float32: exact; a NaN keeps sign and payload (mantissa << 13) + quiet bit."""
    sign, exp, mant = h & 0x8000, (h >> 10) & 0x1F, h & 0x3FF
    if exp == 0x1F and mant:
        return f32_from_bits((sign << 16) | 0x7F800000 | (mant << 13) | 0x00400000)
    return np.float32(struct.unpack("<e", struct.pack("<H", h))[0])  # exact: half -> double


def f32_to_f16_bits(a):
    """float32 -> float16: IEEE RNE with subnormals, overflow to +-inf; NaN ->
    sign | 0x7E00 | (mantissa >> 13)."""
    b = f32_to_bits(a)
    sign = (b >> 16) & 0x8000
    if is_nan_f32_bits(b):
        return sign | 0x7E00 | ((b & 0x7FFFFF) >> 13)
    try:  # struct's binary16 packing rounds half to even, from the exact double value
        return struct.unpack("<H", struct.pack("<e", float(a)))[0]
    except OverflowError:
        return sign | 0x7C00


def bf16_bits_to_f32(h):
    """bfloat16 -> float32: bits << 16; a NaN also gets the quiet bit 0x00400000."""
    b = h << 16
    if is_nan_f32_bits(b):
        b |= 0x00400000
    return f32_from_bits(b)


def f32_to_bf16_bits(a):
    """float32 -> bfloat16: NaN -> (bits >> 16) | 0x0040, else
    (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16."""
    b = f32_to_bits(a)
    if is_nan_f32_bits(b):
        return (b >> 16) | 0x0040
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


class Scalar:
    """One dtype T of section 2, one element at a time.

    Stored values (T): np.float64 / np.float32 scalars, the raw bits (a Python int) for
    float16 and bfloat16, Python ints for integers (always kept wrapped into T's range),
    Python bools. Accumulated values (A(T)): np.float64, np.float32, the same ints, bools.
    """

    def __init__(self, t):
        self.t, self.kind = t, kind(t)
        self.acc = np.float64 if t == "float64" else np.float32
        if self.kind == "int":
            self.bits, self.signed = INTS[t]

    # -- T <-> A(T) --
    def load(self, arr):
        a = np.ascontiguousarray(arr).reshape(-1)
        if self.t == "float16":
            return [int(v) for v in a.view(np.uint16)]
        if self.t == "bfloat16":
            return [int(v) for v in a]
        if self.t in ("float64", "float32"):
            return list(a)
        if self.kind == "int":
            return [int(v) for v in a]
        return [bool(v) for v in a]

    def to_acc(self, v):
        if self.t == "float16":
            return f16_bits_to_f32(v)
        if self.t == "bfloat16":
            return bf16_bits_to_f32(v)
        return v

    def round(self, a):
        """round_T: RNE for the 16-bit floats, nothing to do for the rest (A(T) = T)."""
        if self.t == "float16":
            return f32_to_f16_bits(a)
        if self.t == "bfloat16":
            return f32_to_bf16_bits(a)
        return a

    def wrap(self, v):
        m = 1 << self.bits
        v &= m - 1
        return v - m if self.signed and v >= m >> 1 else v

    # -- section 3 --
    def combine(self, op, a, b):
        """a (+) b with a the accumulated value and b the incoming contribution, in A(T)."""
        if self.kind == "bool":
            if op in ("sum", "max", "bor"):
                return a or b
            if op in ("product", "min", "band"):
                return a and b
            assert op == "bxor"
            return a != b
        if self.kind == "int":
            if op in ("sum", "avg", "premul_sum"):
                return self.wrap(a + b)
            if op == "product":
                return self.wrap(a * b)
            if op == "min":
                return b if b < a else a
            if op == "max":
                return b if b > a else a
            return self.wrap({"band": a & b, "bor": a | b, "bxor": a ^ b}[op])
        if op in ("sum", "avg", "premul_sum"):
            return a + b
        if op == "product":
            return a * b
        if op in ("min", "max"):
            if math.isnan(a) or math.isnan(b):
                return self.acc(math.nan)
            if op == "min":
                return b if b < a else a
            return b if b > a else a
        raise AssertionError(op)

    def average(self, a, p):
        if self.kind == "float":
            return a / self.acc(p)
        q = abs(a) // p  # C division: truncation toward zero
        return -q if a < 0 else q

    def premultiply(self, v, f):
        """PREMUL_SUM's local step round_T(x * f), f in A(T) (cast to T for integers)."""
        if self.kind == "int":
            return self.wrap(v * self.wrap(int(f)))
        return self.round(self.to_acc(v) * self.acc(f))

    # -- results --
    def result(self, vals):
        """(values or bits as an array, NaN mask) of a list of stored values."""
        if self.t in ("float16", "bfloat16"):
            bits = np.array(vals, dtype=np.uint16).reshape(-1)
            return bits, (bits & 0x7FFF) > (0x7C00 if self.t == "float16" else 0x7F80)
        if self.kind == "float":
            arr = np.array(vals, dtype=STORAGE[self.t]).reshape(-1)
            return arr.view(BITS_VIEW[self.t]), np.isnan(arr)
        arr = np.array(vals, dtype=STORAGE[self.t]).reshape(-1)
        return arr, np.zeros(arr.shape, bool)


# ---------------------------------------------------------------------------------------------
# the scalar model: section 4, element by element

def finish(S, op, a, p):
    """The single place producing the final value: AVG divides, then one rounding to T."""
    if op == "avg":
        a = S.average(a, p)
    return S.round(a)


def ring_element(S, op, col, s):
    """Segment s starts at rank s+1 and travels s+1 -> s+2 -> ... -> s, rounded every hop."""
    p = len(col)
    acc = col[(s + 1) % p]
    for j in range(2, p + 1):
        a = S.combine(op, S.to_acc(acc), S.to_acc(col[(s + j) % p]))
        acc = finish(S, op, a, p) if j == p else S.round(a)
    return acc


def flat_element(S, op, col):
    """acc = x_0; acc = acc (+) x_1; ... in A(T), then AVG, then one rounding."""
    a = S.to_acc(col[0])
    for r in range(1, len(col)):
        a = S.combine(op, a, S.to_acc(col[r]))
    return finish(S, op, a, len(col))


def tree_element(S, op, by_heap):
    """Binary heap: node v adds its children 2v+1, 2v+2 (each already rounded to T by the
    child) in A(T) and rounds once; the root applies AVG."""
    p = len(by_heap)

    def node(v):
        a = S.to_acc(by_heap[v])
        for c in (2 * v + 1, 2 * v + 2):
            if c < p:
                a = S.combine(op, a, S.to_acc(node(c)))
        return finish(S, op, a, p) if v == 0 else S.round(a)

    return node(0)


def model_inputs(S, xs, op, premul):
    vals = [S.load(x) for x in xs]
    if op == "premul_sum":
        vals = [[S.premultiply(v, premul) for v in row] for row in vals]
    return vals


def model_all_reduce(t, xs, op, algo, premul=None):
    S = Scalar(t)
    vals = model_inputs(S, xs, op, premul)
    p, n = len(vals), len(vals[0])
    if p == 1:
        return S.result(vals[0])
    out = [None] * n
    if algo == "ring":
        for s, (lo, hi) in enumerate(doc_partition(n, p, line_align(t))):
            for i in range(lo, hi):
                out[i] = ring_element(S, op, [row[i] for row in vals], s)
    elif algo in ("oneshot", "twoshot"):
        for i in range(n):
            out[i] = flat_element(S, op, [row[i] for row in vals])
    elif algo == "tree":
        (a_lo, a_hi), (b_lo, b_hi) = doc_partition(n, 2, line_align(t))
        for i in range(a_lo, a_hi):  # tree A: heap index v is rank v
            out[i] = tree_element(S, op, [vals[v][i] for v in range(p)])
        for i in range(b_lo, b_hi):  # tree B: heap index w is rank p-1-w
            out[i] = tree_element(S, op, [vals[p - 1 - w][i] for w in range(p)])
    else:
        raise AssertionError(algo)
    assert None not in out
    return S.result(out)


def model_reduce(t, xs, root, op, algo, premul=None):
    S = Scalar(t)
    vals = model_inputs(S, xs, op, premul)
    p, n = len(vals), len(vals[0])
    if p == 1:
        return S.result(vals[0])
    if algo == "oneshot":
        return S.result([flat_element(S, op, [row[i] for row in vals]) for i in range(n)])
    # heap over relative ranks v = (r - root) mod p, i.e. heap index v is rank (v + root) mod p
    return S.result([tree_element(S, op, [vals[(v + root) % p][i] for v in range(p)])
                     for i in range(n)])


def model_reduce_scatter(t, xs, op, algo, counts, premul=None):
    S = Scalar(t)
    vals = model_inputs(S, xs, op, premul)
    p = len(vals)
    bounds = [sum(counts[:r]) for r in range(p + 1)]
    outs = []
    for s in range(p):
        lo, hi = bounds[s], bounds[s + 1]
        if p == 1:
            outs.append(S.result(vals[0][lo:hi]))
        elif algo == "ring":
            outs.append(S.result([ring_element(S, op, [row[i] for row in vals], s)
                                  for i in range(lo, hi)]))
        else:
            outs.append(S.result([flat_element(S, op, [row[i] for row in vals])
                                  for i in range(lo, hi)]))
    return outs


# ---------------------------------------------------------------------------------------------
# 1. partition

PARTITION_NS = sorted({0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 1000, 1023,
                       4096, 4097, 100_003, 1_000_000})


@pytest.mark.parametrize("align", [1, 16, 64])
@pytest.mark.parametrize("parts", range(1, 10))
def test_partition_properties(parts, align):
    for n in sorted(set(PARTITION_NS) | {parts - 1, parts, parts + 1, parts * align - 1,
                                         parts * align, parts * align + 1, 3 * parts * align + 5}):
        segs = R.partition(n, parts, align)
        assert len(segs) == parts
        # consecutive cover of [0, n), in order
        assert segs[0][0] == 0 and segs[-1][1] == n, (n, segs)
        for (lo, hi), (lo2, _) in zip(segs, segs[1:]):
            assert hi == lo2
        for lo, hi in segs:
            assert 0 <= lo <= hi <= n
            # every boundary is a multiple of align, except n itself
            assert lo % align == 0 or lo == n
            assert hi % align == 0 or hi == n
        # sizes in units of align differ by at most one; the first `rem` are the larger ones
        units = -(-n // align)
        seg_units = [-(-(hi - lo) // align) for lo, hi in segs]
        assert sum(seg_units) == units
        q, rem = divmod(units, parts)
        assert max(seg_units) - min(seg_units) <= 1
        assert seg_units == [q + 1] * rem + [q] * (parts - rem), (n, seg_units)
        sizes = [hi - lo for lo, hi in segs]
        assert max(sizes) - min(sizes) < 2 * align  # one unit, plus the partial unit at n
        assert sizes == sorted(sizes, reverse=True)
        # only the segment holding the end may be a partial unit; trailing ones may be empty
        for lo, hi in segs:
            assert (hi - lo) % align == 0 or hi == n
        assert segs == doc_partition(n, parts, align)


def test_partition_small_examples():
    assert R.partition(0, 3, 16) == [(0, 0)] * 3
    assert R.partition(10, 4, 1) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert R.partition(65, 4, 64) == [(0, 64), (64, 65), (65, 65), (65, 65)]
    assert R.partition(300, 8, 64) == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300),
                                       (300, 300), (300, 300), (300, 300)]
    assert R.partition(100, 3, 16) == [(0, 48), (48, 80), (80, 100)]


@pytest.mark.parametrize("t", DTYPES)
def test_uncompressed_align_is_one_cache_line(t):
    assert R.uncompressed_align(ITEMSIZE[t]) == line_align(t)


# ---------------------------------------------------------------------------------------------
# 2. the scalar model against zcoll.reference, bit for bit

def sizes_for(t, p):
    """0, 1, p-1, p+1 and 300 (several cache-line segments, a partial line at the end)."""
    return sorted({0, 1, p - 1, p + 1, 300})


GRID = [(t, op, p) for t in DTYPES for op in VALID_OPS[t] for p in WORLD_SIZES]


def _grid_ids(c):
    t, op, p = c
    return f"{t}-{op}-p{p}"


@pytest.mark.parametrize("algo", R.ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("case", GRID, ids=_grid_ids)
def test_all_reduce_matches_scalar_model(case, algo):
    t, op, p = case
    rng = np.random.default_rng(seed_of("ar", t, op, p, algo))
    premul = premul_factor(t) if op == "premul_sum" else None
    for n in sizes_for(t, p):
        xs = make_inputs(t, p, n, rng)
        outs = R.all_reduce(xs, op, algo, premul=premul, **dtype_kw(t))
        assert len(outs) == p
        with np.errstate(all="ignore"):
            expected = model_all_reduce(t, xs, op, algo, premul)
        for r, out in enumerate(outs):
            assert_matches(t, out, expected, f"all_reduce {algo} {t} {op} p={p} n={n} rank {r}")


REDUCE_GRID = [(t, op, p) for t in DTYPES for op in VALID_OPS[t] if op not in ("band", "bor")
               for p in WORLD_SIZES]


@pytest.mark.parametrize("algo", R.REDUCE_ALGOS)
@pytest.mark.parametrize("case", REDUCE_GRID, ids=_grid_ids)
def test_reduce_matches_scalar_model(case, algo):
    t, op, p = case
    rng = np.random.default_rng(seed_of("red", t, op, p, algo))
    premul = premul_factor(t) if op == "premul_sum" else None
    root = (p - 1) - (p // 3)  # not always 0
    for n in sizes_for(t, p):
        xs = make_inputs(t, p, n, rng)
        out = R.reduce(xs, root, op, algo, premul=premul, **dtype_kw(t))
        with np.errstate(all="ignore"):
            expected = model_reduce(t, xs, root, op, algo, premul)
        assert_matches(t, out, expected, f"reduce {algo} root {root} {t} {op} p={p} n={n}")


@pytest.mark.parametrize("algo", R.REDUCE_SCATTER_ALGOS)
@pytest.mark.parametrize("case", REDUCE_GRID, ids=_grid_ids)
def test_reduce_scatter_matches_scalar_model(case, algo):
    t, op, p = case
    rng = np.random.default_rng(seed_of("rs", t, op, p, algo))
    premul = premul_factor(t) if op == "premul_sum" else None
    for m in (0, 1, 3, 41):
        xs = make_inputs(t, p, p * m, rng)
        outs = R.reduce_scatter(xs, op, algo, premul=premul, **dtype_kw(t))
        assert len(outs) == p
        with np.errstate(all="ignore"):
            expected = model_reduce_scatter(t, xs, op, algo, [m] * p, premul)
        for r in range(p):
            assert_matches(t, outs[r], expected[r], f"reduce_scatter {algo} {t} {op} p={p} m={m} rank {r}")


@pytest.mark.parametrize("algo", R.REDUCE_SCATTER_ALGOS)
@pytest.mark.parametrize("t", ["float32", "float16", "bfloat16", "int8"])
def test_reduce_scatter_uneven_counts(t, algo):
    rng = np.random.default_rng(seed_of("rs-counts", t, algo))
    for counts in ([3, 0, 5, 1], [0, 0, 7], [70, 1, 0, 2, 33], [4]):
        p = len(counts)
        for op in ("sum", "avg", "max"):
            xs = make_inputs(t, p, sum(counts), rng)
            outs = R.reduce_scatter(xs, op, algo, counts=counts, **dtype_kw(t))
            with np.errstate(all="ignore"):
                expected = model_reduce_scatter(t, xs, op, algo, counts)
            for r in range(p):
                assert outs[r].size == counts[r]
                assert_matches(t, outs[r], expected[r], f"{algo} {t} {op} counts={counts} rank {r}")


def test_scalar_model_conversions_agree_with_reference_exhaustively():
    """The model's 16-bit conversions (from the doc's text) equal the reference's on every
    16-bit pattern and a sweep of float32 patterns, including NaN payloads (these are exact
    conversions, so the doc does fix their NaN bits)."""
    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    got16 = R.float16_to_float32(h.view(np.float16)).view(np.uint32)
    gotbf = R.bf16_bits_to_float32(h).view(np.uint32)
    for k in range(0, 2**16, 7):
        assert f32_to_bits(f16_bits_to_f32(k)) == got16[k], hex(k)
        assert f32_to_bits(bf16_bits_to_f32(k)) == gotbf[k], hex(k)
    special = [0, 1, 0x007FFFFF, 0x00800000, 0x33000000, 0x33000001, 0x387FFFFF, 0x38800000,
               0x477FE000, 0x477FEFFF, 0x477FF000, 0x7F7FFFFF, 0x7F7F8000, 0x3F808000, 0x3F818000,
               0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0x7F802000]
    pats = np.concatenate([np.arange(0, 2**32, 2**32 // 20011 + 1, dtype=np.uint64).astype(np.uint32),
                           np.array(special, np.uint32), np.array(special, np.uint32) | np.uint32(2**31)])
    x = pats.view(np.float32)
    ref16 = R.float32_to_float16(x).view(np.uint16)
    refbf = R.float32_to_bf16_bits(x)
    for i, v in enumerate(x):
        assert f32_to_f16_bits(v) == ref16[i], hex(int(pats[i]))
        assert f32_to_bf16_bits(v) == refbf[i], hex(int(pats[i]))


# ---------------------------------------------------------------------------------------------
# 3. exactness and error bounds against float64

@pytest.mark.parametrize("algo", R.ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("t", FLOATS)
@pytest.mark.parametrize("p", WORLD_SIZES)
def test_integer_valued_floats_sum_exactly(t, p, algo):
    rng = np.random.default_rng(seed_of("exact", t, p, algo))
    hi = 16 if t in ("float16", "bfloat16") else 1000  # |partial sums| <= 128 (bf16: 8 bits)
    vals = rng.integers(-hi, hi, size=(p, 257)).astype(np.float64)
    xs = [to_storage(t, v) for v in vals]
    exact = vals.sum(axis=0)
    out = R.all_reduce(xs, "sum", algo, **dtype_kw(t))[0]
    got = R.bf16_bits_to_float32(out) if t == "bfloat16" else out
    np.testing.assert_array_equal(np.asarray(got, np.float64), exact)


def as_float64(t, a):
    a = np.asarray(a)
    if t == "bfloat16":
        return R.bf16_bits_to_float32(a).astype(np.float64)
    return a.astype(np.float64)


UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


@pytest.mark.parametrize("algo", ["ring", "tree", "oneshot", "twoshot"])
@pytest.mark.parametrize("t", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("p", [2, 3, 4, 5, 8])
def test_sum_error_bound(t, p, algo):
    """|result - exact| <= (p-1) * u * sum_r |x_r| (u the unit roundoff of T; 16-bit types
    round to T at most p-1 times on any path and accumulate in float32)."""
    rng = np.random.default_rng(seed_of("bound", t, p, algo))
    xs = make_inputs(t, p, 999, rng, specials=0, spread=False)
    xf = np.stack([as_float64(t, x) for x in xs])
    exact = np.array([math.fsum(col) for col in xf.T])
    got = as_float64(t, R.all_reduce(xs, "sum", algo, **dtype_kw(t))[0])
    bound = (p - 1) * UNIT_ROUNDOFF[t] * np.abs(xf).sum(axis=0) * 1.01
    err = np.abs(got - exact)
    assert (err <= bound).all(), (err / bound).max()


# ---------------------------------------------------------------------------------------------
# 4. the algorithm really matters

def _differs(t, a, b):
    return bool((bits_of(t, a) != bits_of(t, b)).any())


@pytest.mark.parametrize("p", [3, 4, 5, 8])
def test_float32_ring_and_oneshot_differ(p):
    rng = np.random.default_rng(seed_of("differ32", p))
    xs = make_inputs("float32", p, 300, rng, specials=0)
    ring = R.all_reduce(xs, "sum", "ring")[0]
    one = R.all_reduce(xs, "sum", "oneshot")[0]
    tree = R.all_reduce(xs, "sum", "tree")[0]
    assert _differs("float32", ring, one)
    assert _differs("float32", tree, one)
    assert _differs("float32", tree, ring)
    # all three are still good sums
    exact = np.sum([x.astype(np.float64) for x in xs], axis=0)
    scale = np.sum([np.abs(x.astype(np.float64)) for x in xs], axis=0)
    for out in (ring, one, tree):
        assert (np.abs(out - exact) <= (p - 1) * 2.0**-24 * scale * 1.01).all()
    # twoshot is the same flat order as oneshot
    assert_bits_equal("float32", R.all_reduce(xs, "sum", "twoshot")[0], one)


@pytest.mark.parametrize("t", ["float16", "bfloat16"])
@pytest.mark.parametrize("p", [2, 3, 4, 8])
def test_16bit_ring_rounds_per_hop_oneshot_once(t, p):
    rng = np.random.default_rng(seed_of("differ16", t, p))
    xs = make_inputs(t, p, 300, rng, specials=0, spread=False)
    ring = R.all_reduce(xs, "sum", "ring", **dtype_kw(t))[0]
    one = R.all_reduce(xs, "sum", "oneshot", **dtype_kw(t))[0]
    if p >= 3:
        assert _differs(t, ring, one)
    # oneshot: the float32 sum in rank order, rounded to T once
    acc = np.zeros(300, np.float32)
    for x in xs:
        acc = acc + (R.bf16_bits_to_float32(x) if t == "bfloat16" else x.astype(np.float32))
    once = R.float32_to_bf16_bits(acc) if t == "bfloat16" else R.float32_to_float16(acc)
    assert_bits_equal(t, one, once)
    if p == 2:  # one hop = one rounding: ring and oneshot agree on 2 ranks for SUM
        assert_bits_equal(t, ring, one)


def test_float16_ring_differs_from_oneshot_on_a_crafted_example():
    """1 + 2^-11 + 2^-11 in float16: rounding per hop loses both halves-of-ulp (ties to even),
    rounding once keeps them."""
    e = np.float16(2.0**-11)
    xs = [np.array([e], np.float16), np.array([e], np.float16), np.array([1.0], np.float16)]
    # ring with p=3, n=1: segment 0 starts at rank 1: acc = x1; acc = r(acc + x2); acc = r(acc + x0)
    # -> r(2^-11 + 1) = 1 (tie to even), then r(1 + 2^-11) = 1.
    ring = R.all_reduce(xs, "sum", "ring")[0]
    one = R.all_reduce(xs, "sum", "oneshot")[0]
    assert ring[0] == np.float16(1.0)
    assert one[0] == np.float16(1.0 + 2.0**-10)
    tree = R.all_reduce(xs, "sum", "tree")[0]  # n=1: half A only, root 0 adds x1 then x2 in f32
    assert tree[0] == np.float16(1.0 + 2.0**-10)


@pytest.mark.parametrize("p", [3, 5, 8])
def test_reduce_and_reduce_scatter_algorithms_differ(p):
    rng = np.random.default_rng(seed_of("differ-red", p))
    xs = make_inputs("float32", p, 64 * p, rng, specials=0)
    assert _differs("float32", R.reduce(xs, 1, "sum", "tree"), R.reduce(xs, 1, "sum", "oneshot"))
    if p == 3:  # heap rooted at rank 0 with two leaf children: x_0 + x_1 + x_2, the flat order
        assert_bits_equal("float32", R.reduce(xs, 0, "sum", "tree"), R.reduce(xs, 0, "sum", "oneshot"))
    else:
        assert _differs("float32", R.reduce(xs, 0, "sum", "tree"), R.reduce(xs, 0, "sum", "oneshot"))
    ring = np.concatenate(R.reduce_scatter(xs, "sum", "ring"))
    two = np.concatenate(R.reduce_scatter(xs, "sum", "twoshot"))
    assert _differs("float32", ring, two)


# ---------------------------------------------------------------------------------------------
# 5. operator semantics

ALL_ALGOS = [("all_reduce", a) for a in R.ALL_REDUCE_ALGOS] + [("reduce", a) for a in R.REDUCE_ALGOS]


def run(coll, algo, xs, op, **kw):
    """The result of an all-reduce-like collective (reduce: the root's, root 0)."""
    if coll == "all_reduce":
        outs = R.all_reduce(xs, op, algo, **kw)
        for o in outs[1:]:
            np.testing.assert_array_equal(np.asarray(o).view(np.uint8), np.asarray(outs[0]).view(np.uint8))
        return outs[0]
    return R.reduce(xs, 0, op, algo, **kw)


def float_value(t, v, n):
    return to_storage(t, np.full(n, v, np.float64))


@pytest.mark.parametrize("coll,algo", ALL_ALGOS)
@pytest.mark.parametrize("t", FLOATS)
@pytest.mark.parametrize("op", ["min", "max"])
@pytest.mark.parametrize("p", [2, 3, 5])
def test_min_max_propagate_nan_from_any_rank(op, t, coll, algo, p):
    n = 3 * line_align(t) + 1  # every ring segment and both tree halves
    for nan_rank in range(p):
        xs = [float_value(t, float(r - 1), n) for r in range(p)]
        xs[nan_rank] = float_value(t, np.nan, n)
        out = run(coll, algo, xs, op, **dtype_kw(t))
        assert nan_of(t, out).all(), (nan_rank, out)
    # NaN with -inf / +inf neighbours, and a NaN on only some positions
    xs = [float_value(t, -np.inf if r % 2 else np.inf, n) for r in range(p)]
    xs[p - 1][::2] = float_value(t, np.nan, 1)[0]
    out = run(coll, algo, xs, op, **dtype_kw(t))
    assert nan_of(t, out)[::2].all()
    assert not nan_of(t, out)[1::2].any()


@pytest.mark.parametrize("t", ["float32", "float64", "float16", "bfloat16"])
def test_signed_zeros_follow_b_lt_a(t):
    """MIN/MAX keep the accumulated value a unless b < a (b > a): with +0 and -0 the first
    contribution in each algorithm's order wins."""
    al = line_align(t)
    n = 2 * al
    pz, nz = float_value(t, 0.0, n), float_value(t, -0.0, n)
    sign = lambda a: np.signbit(as_float64(t, a))  # noqa: E731
    for op in ("min", "max"):
        for xs in ([pz, nz], [nz, pz]):
            s0, s1 = sign(xs[0])[0], sign(xs[1])[0]
            flat = R.all_reduce(xs, op, "oneshot", **dtype_kw(t))[0]
            assert (sign(flat) == s0).all()
            assert (sign(R.all_reduce(xs, op, "twoshot", **dtype_kw(t))[0]) == s0).all()
            # ring, p=2: segment 0 starts at rank 1, segment 1 at rank 0
            ring = sign(R.all_reduce(xs, op, "ring", **dtype_kw(t))[0])
            assert (ring[:al] == s1).all() and (ring[al:] == s0).all()
            # tree: half 0 is rooted at rank 0 (acc = x_0), half 1 at rank 1 (acc = x_1)
            tree = sign(R.all_reduce(xs, op, "tree", **dtype_kw(t))[0])
            assert (tree[:al] == s0).all() and (tree[al:] == s1).all()
            # reduce tree to root r: acc = x_root
            assert (sign(R.reduce(xs, 1, op, "tree", **dtype_kw(t))) == s1).all()
            assert (sign(R.reduce(xs, 0, op, "tree", **dtype_kw(t))) == s0).all()
            assert (sign(R.reduce(xs, 1, op, "oneshot", **dtype_kw(t))) == s0).all()
    # the example of the contract: MIN over ranks [+0, -0] in flat order is +0
    out = R.all_reduce([pz, nz], "min", "oneshot", **dtype_kw(t))[0]
    assert not sign(out).any()


@pytest.mark.parametrize("coll,algo", ALL_ALGOS)
def test_integers_wrap_around(coll, algo):
    n = 130  # int8: three cache-line segments
    cases = [("int8", "sum", [127, 1], -128), ("int8", "sum", [-128, -1], 127),
             ("uint8", "sum", [255, 1], 0), ("uint8", "sum", [0, 255, 2], 1),
             ("int8", "product", [16, 16], 0), ("int8", "product", [-128, -1], -128),
             ("int16", "sum", [32767, 1, 1], -32767), ("int32", "sum", [2**31 - 1, 2], -(2**31) + 1),
             ("int64", "sum", [2**63 - 1, 1], -(2**63)), ("int64", "product", [2**62, 4], 0),
             ("uint8", "product", [16, 17], 16)]
    for t, op, vals, want in cases:
        xs = [np.full(n, v, STORAGE[t]) for v in vals]
        out = run(coll, algo, xs, op)
        assert out.dtype == STORAGE[t]
        assert (out == np.array(want, STORAGE[t])).all(), (t, op, vals, out[:4])


@pytest.mark.parametrize("coll,algo", ALL_ALGOS)
def test_integer_avg_truncates_toward_zero(coll, algo):
    cases = [("int32", [-7, 0], -3), ("int32", [7, 0], 3), ("int64", [-4, -3], -3),
             ("int8", [-1, 0, 0], 0), ("int16", [-5, -5, 0], -3), ("int8", [100, 100], -28),
             ("uint8", [255, 1], 0), ("uint8", [250, 3], 126), ("int8", [-128, -1, 0], 42),
             ("int32", [-9] * 4 + [0] * 4, -4)]
    for t, vals, want in cases:
        xs = [np.full(70, v, STORAGE[t]) for v in vals]
        out = run(coll, algo, xs, "avg")
        assert (out == np.array(want, STORAGE[t])).all(), (t, vals, out[:4])


@pytest.mark.parametrize("algo", R.ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("t,p,vals,want", [
    ("int8", 128, [127] * 128, -1),          # sum 16256 wraps to -128; -128 / 128 = -1
    ("int8", 200, [1] * 200, 0),             # sum 200 wraps to -56; -56 / 200 = 0
    ("int8", 130, [-128] + [0] * 129, 0),    # -128 / 130 truncates to 0
    ("uint8", 256, [255] + [0] * 255, 0),    # 255 / 256 = 0
])
def test_integer_avg_divides_by_p_even_when_p_does_not_fit_in_T(t, p, vals, want, algo):
    """Section 3: integer AVG is "SUM, then C division by p" -- C divides the (wrapped) sum
    by the int p; unlike the float rule, p is not converted to T, so p > max(T) is fine."""
    xs = [np.array([v], STORAGE[t]) for v in vals]
    with np.errstate(all="ignore"):
        expected = model_all_reduce(t, xs, "avg", algo)
    assert expected[0][0] == want
    out = R.all_reduce(xs, "avg", algo)[0]
    assert_matches(t, out, expected, f"{t} avg p={p} {algo}")


@pytest.mark.parametrize("t,f,cast", [("uint8", -2, 254), ("int8", 300, 44), ("int16", 70000, 4464),
                                      ("uint8", 257, 1)])
def test_integer_premul_factor_is_cast_to_T(t, f, cast):
    """Section 3: for integers PREMUL_SUM's factor is "cast to T": an integer factor outside
    T's range wraps like any C integer conversion to T."""
    x = np.arange(-3, 5).astype(STORAGE[t])
    want = x * np.array(cast, STORAGE[t])  # numpy integer arrays wrap
    for algo in ("oneshot", "ring"):
        out = R.all_reduce([x, x], "premul_sum", algo, premul=f)[0]
        np.testing.assert_array_equal(out, want + want)


@pytest.mark.parametrize("coll,algo", ALL_ALGOS + [("reduce_scatter", "ring"), ("reduce_scatter", "twoshot")])
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_bool_ops_are_logical(coll, algo, p):
    combos = np.array([[(k >> r) & 1 for r in range(p)] for k in range(2**p)], bool)  # (2^p, p)
    reps = -(-200 // len(combos))
    data = np.tile(combos, (reps, 1))[: 200 - 200 % p].T  # (p, n), every combination, 3+ segments
    xs = [np.ascontiguousarray(data[r]) for r in range(p)]
    expect = {"sum": np.logical_or, "max": np.logical_or, "bor": np.logical_or,
              "product": np.logical_and, "min": np.logical_and, "band": np.logical_and,
              "bxor": np.logical_xor}
    for op, f in expect.items():
        want = f.reduce(data, axis=0)
        if coll == "reduce_scatter":
            got = np.concatenate(R.reduce_scatter(xs, op, algo))
        else:
            got = run(coll, algo, xs, op)
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, want, err_msg=op)


COLLS_WITH_OP = [
    lambda xs, op, **kw: R.all_reduce(xs, op, "ring", **kw),
    lambda xs, op, **kw: R.all_reduce(xs, op, "tree", **kw),
    lambda xs, op, **kw: R.all_reduce(xs, op, "oneshot", **kw),
    lambda xs, op, **kw: R.reduce(xs, 0, op, **kw),
    lambda xs, op, **kw: R.reduce_scatter(xs, op, "twoshot", **kw),
]


@pytest.mark.parametrize("coll", range(len(COLLS_WITH_OP)))
@pytest.mark.parametrize("t", FLOATS)
@pytest.mark.parametrize("op", ["band", "bor", "bxor", R.ReduceOp.BXOR])
def test_bitwise_ops_on_floats_raise(op, t, coll):
    xs = [float_value(t, 1.0, 4) for _ in range(2)]
    with pytest.raises(ValueError, match="bitwise|b(and|or|xor)"):
        COLLS_WITH_OP[coll](xs, op, **dtype_kw(t))


@pytest.mark.parametrize("coll", range(len(COLLS_WITH_OP)))
@pytest.mark.parametrize("op", ["avg", "premul_sum"])
@pytest.mark.parametrize("p", [1, 2])
def test_avg_and_premul_on_bool_raise(op, coll, p):
    xs = [np.ones(4, bool) for _ in range(p)]
    with pytest.raises(ValueError, match="bool"):
        COLLS_WITH_OP[coll](xs, op, premul=2.0 if op == "premul_sum" else None)


def premultiplied(t, x, f):
    """round_T(x * f) with f in A(T) (floats), f cast to T (ints), vectorised independently."""
    with np.errstate(all="ignore"):
        if t == "bfloat16":
            return R.float32_to_bf16_bits(R.bf16_bits_to_float32(x) * np.float32(f))
        if t == "float16":
            return (x.astype(np.float32) * np.float32(f)).astype(np.float16)
        if t in ("float32", "float64"):
            return x * STORAGE[t](f)
        return x * np.asarray(np.trunc(f), STORAGE[t])  # numpy int arrays wrap


@pytest.mark.parametrize("t", [t for t in DTYPES if t != "bool"])
@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_premul_sum_is_sum_of_rounded_products(t, p):
    rng = np.random.default_rng(seed_of("premul", t, p))
    n = 3 * line_align(t) + 5
    xs = make_inputs(t, p, n, rng, specials=0.02)
    factors = [0.3, -1.7, 1e-3, 3.0] if kind(t) == "float" else [3, -2, 1]
    if t == "uint8":
        factors = [3, 1, 0]
    if kind(t) == "int":  # the doc: an integer T needs an integer factor
        with pytest.raises(ValueError, match="integer factor"):
            R.all_reduce(xs, "premul_sum", "ring", premul=2.9, **dtype_kw(t))
    for f in factors:
        pre = [premultiplied(t, x, f) for x in xs]
        for algo in R.ALL_REDUCE_ALGOS:
            got = R.all_reduce(xs, "premul_sum", algo, premul=f, **dtype_kw(t))[0]
            want = R.all_reduce(pre, "sum", algo, **dtype_kw(t))[0]
            assert_matches(t, got, (bits_of(t, want), nan_of(t, want)), f"{algo} f={f}")
        for algo in R.REDUCE_ALGOS:
            got = R.reduce(xs, p - 1, "premul_sum", algo, premul=f, **dtype_kw(t))
            want = R.reduce(pre, p - 1, "sum", algo, **dtype_kw(t))
            assert_matches(t, got, (bits_of(t, want), nan_of(t, want)), f"reduce {algo} f={f}")


def test_premul_sum_rounds_each_product_to_T_first():
    """float16: 0.3 * x rounded to float16 per rank differs from 0.3 * (sum) for some data."""
    rng = np.random.default_rng(7)
    xs = make_inputs("float16", 4, 500, rng, specials=0, spread=False)
    got = R.all_reduce(xs, "premul_sum", "oneshot", premul=0.3)[0]
    acc = np.zeros(500, np.float32)
    for x in xs:
        acc += x.astype(np.float32) * np.float32(0.3)  # not rounded per rank
    assert _differs("float16", got, acc.astype(np.float16))


def nan_payload_inputs(t, p, n, rng):
    """Inputs with specific NaN payloads (signalling ones too) to check bit-exact copies."""
    xs = make_inputs(t, p, n, rng, specials=0.1)
    nans = {"float64": [0x7FF0000000000001, 0xFFF8000000000123], "float32": [0x7F800001, 0xFFC01234],
            "float16": [0x7C01, 0xFE55], "bfloat16": [0x7F81, 0xFFC3]}.get(t)
    if nans:
        for x in xs:
            v = bits_of(t, x)
            v[: len(nans)] = nans
            v[-len(nans):] = nans
    return xs


@pytest.mark.parametrize("t", DTYPES)
def test_world_size_one_is_identity(t):
    rng = np.random.default_rng(seed_of("p1", t))
    for n in (0, 1, 37, 200):
        xs = nan_payload_inputs(t, 1, n, rng) if n >= 4 else make_inputs(t, 1, n, rng)
        x = xs[0]
        for op in VALID_OPS[t]:
            if op == "premul_sum":
                f = premul_factor(t)
                want = premultiplied(t, x, f)
                for algo in R.ALL_REDUCE_ALGOS:
                    got = R.all_reduce(xs, op, algo, premul=f, **dtype_kw(t))[0]
                    assert_matches(t, got, (bits_of(t, want), nan_of(t, want)), f"premul {algo}")
                continue
            for algo in R.ALL_REDUCE_ALGOS:
                assert_bits_equal(t, R.all_reduce(xs, op, algo, **dtype_kw(t))[0], x, f"{op} {algo}")
            for algo in R.REDUCE_ALGOS:
                assert_bits_equal(t, R.reduce(xs, 0, op, algo, **dtype_kw(t)), x, f"reduce {op} {algo}")
            for algo in R.REDUCE_SCATTER_ALGOS:
                assert_bits_equal(t, R.reduce_scatter(xs, op, algo, **dtype_kw(t))[0], x, f"rs {op} {algo}")
        assert_bits_equal(t, R.all_gather(xs, **dtype_kw(t))[0], x)
        assert_bits_equal(t, R.broadcast(xs, 0, **dtype_kw(t))[0], x)


# ---------------------------------------------------------------------------------------------
# 6. shapes and copies: reduce roots, reduce_scatter slices, all_gather, broadcast

@pytest.mark.parametrize("algo", R.REDUCE_ALGOS)
@pytest.mark.parametrize("t", ["float32", "float16", "bfloat16", "int16"])
@pytest.mark.parametrize("p", [1, 2, 3, 5, 8])
def test_reduce_every_root(t, p, algo):
    rng = np.random.default_rng(seed_of("roots", t, p, algo))
    xs = make_inputs(t, p, 45, rng)
    for op in ("sum", "avg"):
        flat = R.all_reduce(xs, op, "oneshot", **dtype_kw(t))[0]
        results = []
        for root in range(p):
            out = R.reduce(xs, root, op, algo, **dtype_kw(t))
            with np.errstate(all="ignore"):
                assert_matches(t, out, model_reduce(t, xs, root, op, algo), f"root {root} {op}")
            if algo == "oneshot":  # the same flat order whatever the root
                assert_matches(t, out, (bits_of(t, flat), nan_of(t, flat)), f"root {root}")
            results.append(out)
        if algo == "tree" and p >= 3 and t == "float32" and op == "sum":
            # the heap is rooted at `root`: different roots really give different orders
            assert any(_differs(t, results[0], r) for r in results[1:])


def test_reduce_tree_root0_is_tree_a_half():
    rng = np.random.default_rng(11)
    p, n = 6, 100
    xs = make_inputs("float32", p, n, rng)
    (lo, hi), _ = R.partition(n, 2, 16)
    ar = R.all_reduce(xs, "sum", "tree")[0]
    red = R.reduce(xs, 0, "sum", "tree")
    assert_bits_equal("float32", ar[lo:hi], red[lo:hi])
    # half B is the heap over mirrored ranks, not the one rooted at p-1 by rotation
    mirrored = R.reduce(xs[::-1], 0, "sum", "tree")
    assert_bits_equal("float32", ar[hi:], mirrored[hi:])


@pytest.mark.parametrize("t", DTYPES)
@pytest.mark.parametrize("p", [2, 3, 4])
def test_reduce_scatter_is_all_reduce_sliced(t, p):
    rng = np.random.default_rng(seed_of("rs-slices", t, p))
    m = 2 * line_align(t)  # caller slices coincide with partition(n, p, align)
    xs = make_inputs(t, p, p * m, rng)
    assert R.partition(p * m, p, line_align(t)) == [(r * m, (r + 1) * m) for r in range(p)]
    ops = [o for o in VALID_OPS[t] if o != "premul_sum"]
    for op in ops:
        for rs_algo, ar_algo in (("ring", "ring"), ("twoshot", "twoshot"), ("twoshot", "oneshot")):
            full = R.all_reduce(xs, op, ar_algo, **dtype_kw(t))[0]
            parts = R.reduce_scatter(xs, op, rs_algo, **dtype_kw(t))
            for r in range(p):
                sl = full[r * m:(r + 1) * m]
                assert_matches(t, parts[r], (bits_of(t, sl), nan_of(t, sl)), f"{op} {rs_algo} rank {r}")


@pytest.mark.parametrize("t", DTYPES)
@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_all_gather_concatenates_bit_exact(t, p):
    rng = np.random.default_rng(seed_of("ag", t, p))
    for m in (0, 1, 9):
        xs = nan_payload_inputs(t, p, m, rng) if m >= 4 else make_inputs(t, p, m, rng)
        outs = R.all_gather(xs, **dtype_kw(t))
        assert len(outs) == p
        for out in outs:
            assert out.shape == (p * m,) and out.dtype == STORAGE[t]
            for r in range(p):
                assert_bits_equal(t, out[r * m:(r + 1) * m], xs[r], f"slice {r}")
    # multi-dimensional inputs are flattened in C order
    xs = [np.arange(6, dtype=np.int32).reshape(2, 3) + 10 * r for r in range(p)]
    np.testing.assert_array_equal(R.all_gather(xs)[0], np.concatenate([x.ravel() for x in xs]))


@pytest.mark.parametrize("t", DTYPES)
@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_broadcast_copies_root_bit_exact(t, p):
    rng = np.random.default_rng(seed_of("bc", t, p))
    xs = nan_payload_inputs(t, p, 12, rng)
    xs = [x.reshape(3, 4) for x in xs]
    for root in range(p):
        outs = R.broadcast(xs, root, **dtype_kw(t))
        assert len(outs) == p
        for out in outs:
            assert out.shape == (3, 4) and out.dtype == STORAGE[t]
            assert_bits_equal(t, out, xs[root])


@pytest.mark.parametrize("algo", R.ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("t", ["float32", "bfloat16", "int8", "bool"])
def test_all_reduce_keeps_shape_and_every_rank_is_identical(t, algo):
    rng = np.random.default_rng(seed_of("shape", t, algo))
    p = 5
    flat = make_inputs(t, p, 7 * 41, rng)
    xs = [x.reshape(7, 41) for x in flat]
    for op in ("sum", "max"):
        outs = R.all_reduce(xs, op, algo, **dtype_kw(t))
        flat_out = R.all_reduce(flat, op, algo, **dtype_kw(t))[0]
        for out in outs:
            assert out.shape == (7, 41) and out.dtype == STORAGE[t]
            assert_bits_equal(t, out, outs[0])
            assert_bits_equal(t, out.reshape(-1), flat_out)  # C-order flattening
        assert outs[0] is not outs[1]
    red = R.reduce(xs, 2, "sum", **dtype_kw(t))
    assert red.shape == (7, 41)


# ---------------------------------------------------------------------------------------------
# 7. bad input

f32 = lambda n: np.zeros(n, np.float32)  # noqa: E731

BAD_INPUTS = [
    ("shape", lambda: R.all_reduce([f32(3), f32(4)]), "shape"),
    ("shape-2d", lambda: R.all_reduce([f32(6), f32(6).reshape(2, 3)]), "shape"),
    ("shape-reduce", lambda: R.reduce([f32(3), f32(4)], 0), "shape"),
    ("shape-rs", lambda: R.reduce_scatter([f32(4), f32(6)]), "shape"),
    ("shape-ag", lambda: R.all_gather([f32(4), f32(6)]), "shape"),
    ("shape-bc", lambda: R.broadcast([f32(4), f32(6)], 0), "shape"),
    ("dtypes", lambda: R.all_reduce([f32(3), np.zeros(3, np.float64)]), "dtype"),
    ("dtypes-reduce", lambda: R.reduce([np.zeros(3, np.int8), np.zeros(3, np.uint8)], 0), "dtype"),
    ("dtypes-ag", lambda: R.all_gather([f32(3), np.zeros(3, np.float16)]), "dtype"),
    ("dtype-vs-given", lambda: R.all_reduce([f32(3), f32(3)], dtype="bfloat16"), "bfloat16|dtype"),
    ("uint16", lambda: R.all_reduce([np.zeros(3, np.uint16)] * 2), "bfloat16"),
    ("uint16-bc", lambda: R.broadcast([np.zeros(3, np.uint16)] * 2, 0), "bfloat16"),
    ("unsupported", lambda: R.all_reduce([np.zeros(3, np.uint32)] * 2), "dtype|uint32"),
    ("unknown-dtype-name", lambda: R.all_reduce([f32(3)] * 2, dtype="float8"), "float8"),
    ("op", lambda: R.all_reduce([f32(3)] * 2, "mean"), "mean"),
    ("op-reduce", lambda: R.reduce([f32(3)] * 2, 0, "median"), "median"),
    ("op-rs", lambda: R.reduce_scatter([f32(4)] * 2, "xor"), "xor"),
    ("algo", lambda: R.all_reduce([f32(3)] * 2, "sum", "butterfly"), "butterfly"),
    ("algo-reduce", lambda: R.reduce([f32(3)] * 2, 0, "sum", "ring"), "algorithm"),
    ("algo-rs", lambda: R.reduce_scatter([f32(4)] * 2, "sum", "tree"), "algorithm"),
    ("root-high", lambda: R.reduce([f32(3)] * 3, 3), "root"),
    ("root-neg", lambda: R.reduce([f32(3)] * 3, -1), "root"),
    ("root-bc", lambda: R.broadcast([f32(3)] * 2, 2), "root"),
    ("root-bc-neg", lambda: R.broadcast([f32(3)] * 2, -1), "root"),
    ("counts-sum", lambda: R.reduce_scatter([f32(4)] * 2, counts=[1, 2]), "counts"),
    ("counts-len", lambda: R.reduce_scatter([f32(4)] * 2, counts=[1, 1, 2]), "counts"),
    ("counts-neg", lambda: R.reduce_scatter([f32(4)] * 2, counts=[5, -1]), "counts"),
    ("not-divisible", lambda: R.reduce_scatter([f32(5)] * 2), "split|equal|5"),
    ("no-ranks", lambda: R.all_reduce([]), "rank|input"),
    ("premul-missing", lambda: R.all_reduce([f32(3)] * 2, "premul_sum"), "premul"),
]


@pytest.mark.parametrize("call,match", [(c, m) for _, c, m in BAD_INPUTS],
                         ids=[name for name, _, _ in BAD_INPUTS])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
