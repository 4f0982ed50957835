"""Tensor dtypes of the arithmetic contract (docs/arithmetic.md §2) and their exact conversions.

bfloat16 is carried as its raw bits in ``np.uint16`` arrays: numpy has no bfloat16, the contract
is about bits anyway, and torch hands bf16 to numpy only through ``.view(torch.uint16)``. That
keeps the reference free of extra dependencies (ml_dtypes would add one and has its own NaN
rules). float16 uses numpy's own dtype; both 16-bit conversions are pinned to the contract's
bit rules here, not left to numpy's or the CPU's NaN handling.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_F32_QUIET = np.uint32(0x00400000)


@dataclass(frozen=True)
class DType:
    name: str
    storage: np.dtype  # numpy dtype the values are stored in
    acc: np.dtype  # accumulation type A(T)
    kind: str  # "float", "int" or "bool"

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    def to_acc(self, x: np.ndarray) -> np.ndarray:
        """Exact conversion of stored values to the accumulation type."""
        if self.name == "bfloat16":
            return bf16_bits_to_float32(x)
        if self.name == "float16":
            return float16_to_float32(x)
        return np.asarray(x, dtype=self.storage)

    def from_acc(self, a: np.ndarray) -> np.ndarray:
        """Round accumulation-type values back to the stored dtype (RNE for 16-bit floats)."""
        if self.name == "bfloat16":
            return float32_to_bf16_bits(a)
        if self.name == "float16":
            return float32_to_float16(a)
        return np.asarray(a, dtype=self.storage)


DTYPES = {
    d.name: d
    for d in [
        DType("float64", np.dtype(np.float64), np.dtype(np.float64), "float"),
        DType("float32", np.dtype(np.float32), np.dtype(np.float32), "float"),
        DType("float16", np.dtype(np.float16), np.dtype(np.float32), "float"),
        DType("bfloat16", np.dtype(np.uint16), np.dtype(np.float32), "float"),
        DType("int8", np.dtype(np.int8), np.dtype(np.int8), "int"),
        DType("int16", np.dtype(np.int16), np.dtype(np.int16), "int"),
        DType("int32", np.dtype(np.int32), np.dtype(np.int32), "int"),
        DType("int64", np.dtype(np.int64), np.dtype(np.int64), "int"),
        DType("uint8", np.dtype(np.uint8), np.dtype(np.uint8), "int"),
        DType("bool", np.dtype(np.bool_), np.dtype(np.bool_), "bool"),
    ]
}


def resolve_dtype(arrays: list[np.ndarray], dtype: str | None) -> DType:
    """The contract dtype of ``arrays``: ``dtype`` if given, else inferred from numpy's dtype."""
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
        d = DTYPES[dtype]
    else:
        found = {a.dtype for a in arrays}
        if len(found) != 1:
            raise ValueError(f"inputs have different dtypes: {sorted(map(str, found))}")
        np_dtype = found.pop()
        if np_dtype == np.uint16:
            raise ValueError("uint16 arrays are ambiguous: pass dtype='bfloat16' for bf16 bits")
        matches = [d for d in DTYPES.values() if d.storage == np_dtype]
        if not matches:
            raise ValueError(f"unsupported dtype {np_dtype}; supported: {', '.join(DTYPES)}")
        d = matches[0]
    for a in arrays:
        if a.dtype != d.storage:
            raise ValueError(f"input of dtype {a.dtype} does not store {d.name} ({d.storage})")
    return d


def float32_bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN keeping sign/payload top."""
    b = float32_bits(x)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet = (b >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def bf16_bits_to_float32(h: np.ndarray) -> np.ndarray:
    """bfloat16 bits -> float32, exact; NaNs get the quiet bit."""
    b = np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, b | _F32_QUIET, b).view(np.float32)


def float32_to_float16(x: np.ndarray) -> np.ndarray:
    """float32 -> float16, IEEE round to nearest even (numpy's cast); NaN -> sign|0x7E00|mant>>13."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    b = x.view(np.uint32)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        quiet = (((b >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7E00)
                 | ((b & np.uint32(0x7FFFFF)) >> np.uint32(13)))
        h = np.where(nan, quiet.astype(np.uint16), h)
    return h.view(np.float16)


def float16_to_float32(h: np.ndarray) -> np.ndarray:
    """float16 -> float32, exact; NaNs keep sign and payload and get the quiet bit."""
    h = np.ascontiguousarray(h, dtype=np.float16)
    f = h.astype(np.float32)
    hb = h.view(np.uint16)
    nan = (hb & np.uint16(0x7FFF)) > np.uint16(0x7C00)
    if nan.any():
        bits = (((hb.astype(np.uint32) & np.uint32(0x8000)) << np.uint32(16)) | np.uint32(0x7FC00000)
                | ((hb.astype(np.uint32) & np.uint32(0x3FF)) << np.uint32(13)))
        f = np.where(nan, bits.view(np.float32), f)
    return f
