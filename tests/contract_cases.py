"""Test data and comparisons over the contract's dtypes and ops (docs/arithmetic.md §2-3),
shared by the tests of the reference and of the native kernels."""
from __future__ import annotations

import zlib

import numpy as np

FLOATS = ("float64", "float32", "float16", "bfloat16")
INTS = {"int8": (8, True), "int16": (16, True), "int32": (32, True), "int64": (64, True),
        "uint8": (8, False)}
DTYPES = FLOATS + tuple(INTS) + ("bool",)
STORAGE = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
           "bfloat16": np.uint16, "int8": np.int8, "int16": np.int16, "int32": np.int32,
           "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}
ITEMSIZE = {t: np.dtype(s).itemsize for t, s in STORAGE.items()}
BITS_VIEW = {"float64": np.uint64, "float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}

FLOAT_OPS = ("sum", "avg", "product", "min", "max", "premul_sum")
INT_OPS = ("sum", "avg", "product", "min", "max", "band", "bor", "bxor", "premul_sum")
BOOL_OPS = ("sum", "product", "min", "max", "band", "bor", "bxor")
VALID_OPS = {**{t: FLOAT_OPS for t in FLOATS}, **{t: INT_OPS for t in INTS}, "bool": BOOL_OPS}
PREMUL = {"float": 0.3, "int": 3}

WORLD_SIZES = (1, 2, 3, 4, 5, 8)


def kind(t):
    return "float" if t in FLOATS else "bool" if t == "bool" else "int"


def line_align(t):
    """Uncompressed collectives partition on one 64-byte cache line (section 1 table)."""
    return 64 // ITEMSIZE[t]


def dtype_kw(t):
    return {"dtype": "bfloat16"} if t == "bfloat16" else {}




# ---------------------------------------------------------------------------------------------
# comparison and data

def bits_of(t, arr):
    a = np.ascontiguousarray(arr).reshape(-1)
    return a.view(BITS_VIEW[t]) if t in BITS_VIEW and t != "bfloat16" else a


def nan_of(t, arr):
    a = np.ascontiguousarray(arr).reshape(-1)
    if t == "bfloat16":
        return (a & 0x7FFF) > 0x7F80
    if t in FLOATS:
        return np.isnan(a)
    return np.zeros(a.shape, bool)


def assert_matches(t, got, expected, what=""):
    """got: an array from zcoll.reference; expected: (bits, nan mask) from the model.
    Bits must be equal except where the model says NaN, where "is NaN" must hold."""
    bits, nan = expected
    got = np.asarray(got)
    assert got.dtype == STORAGE[t], (what, got.dtype)
    gbits, gnan = bits_of(t, got), nan_of(t, got)
    assert gbits.shape == bits.shape, (what, gbits.shape, bits.shape)
    bad = np.flatnonzero((gnan != nan) | (~nan & (gbits != bits)))
    assert bad.size == 0, (f"{what}: {bad.size} of {bits.size} elements differ, first at "
                           f"{bad[:8].tolist()}: got {gbits[bad[:8]].tolist()} expected "
                           f"{bits[bad[:8]].tolist()} (nan {gnan[bad[:8]].tolist()} vs "
                           f"{nan[bad[:8]].tolist()})")


def assert_bits_equal(t, a, b, what=""):
    np.testing.assert_array_equal(bits_of(t, a), bits_of(t, b), err_msg=what)


EXP_RANGE = {"float64": (-30, 30), "float32": (-12, 12), "float16": (-17, 5),
             "bfloat16": (-12, 12)}
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])


def to_storage(t, x):
    """float64 values -> T's storage (float16: numpy's cast; bfloat16: truncated float32 bits,
    which are always valid bf16 values)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if t == "bfloat16":
            return (np.asarray(x, np.float32).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        return np.asarray(x).astype(STORAGE[t])


def make_inputs(t, p, n, rng, specials=0.04, spread=True):
    """p arrays of n random values of T (floats: mixed magnitudes, a few zeros/inf/NaN)."""
    if kind(t) == "bool":
        x = rng.random((p, n)) < rng.uniform(0.3, 0.9)
    elif kind(t) == "int":
        info = np.iinfo(STORAGE[t])
        x = rng.integers(info.min, info.max, size=(p, n), dtype=STORAGE[t], endpoint=True)
    else:
        x = rng.standard_normal((p, n))
        if spread:
            x *= np.exp2(rng.integers(*EXP_RANGE[t], size=(p, n)))
        if specials:
            where = rng.random((p, n)) < specials
            x[where] = rng.choice(SPECIALS, size=int(where.sum()))
        x = to_storage(t, x)
    return [np.ascontiguousarray(x[r]) for r in range(p)]


def premul_factor(t):
    return PREMUL["int"] if kind(t) == "int" else PREMUL["float"]


def seed_of(*parts):
    """A stable per-test seed (hash() of str is salted per process)."""
    return zlib.crc32(repr(parts).encode())
