"""Reduction operators of the contract (docs/arithmetic.md §3), applied in the accumulation type."""
from __future__ import annotations

from enum import Enum

import numpy as np

from .dtypes import DType


class ReduceOp(str, Enum):
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"
    PREMUL_SUM = "premul_sum"


def parse_op(op: ReduceOp | str) -> ReduceOp:
    try:
        return ReduceOp(op.value if isinstance(op, ReduceOp) else str(op).lower())
    except ValueError:
        names = ", ".join(o.value for o in ReduceOp)
        raise ValueError(f"unknown reduce op {op!r}; supported: {names}") from None


def check_op(op: ReduceOp, dtype: DType) -> None:
    if op in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and dtype.kind == "float":
        raise ValueError(f"{op.value} is a bitwise op and is not defined for {dtype.name}")
    if op in (ReduceOp.AVG, ReduceOp.PREMUL_SUM) and dtype.kind == "bool":
        raise ValueError(f"{op.value} is not defined for bool")


def combine(op: ReduceOp, a: np.ndarray, b: np.ndarray, dtype: DType) -> np.ndarray:
    """a ⊕ b with ``a`` the accumulated value and ``b`` the incoming contribution (both A(T))."""
    if dtype.kind == "bool":
        if op in (ReduceOp.SUM, ReduceOp.MAX, ReduceOp.BOR, ReduceOp.PREMUL_SUM):
            return a | b
        if op in (ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.BAND):
            return a & b
        if op == ReduceOp.BXOR:
            return a ^ b
    with np.errstate(over="ignore", invalid="ignore"):
        if op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PREMUL_SUM):
            return a + b
        if op == ReduceOp.PRODUCT:
            return a * b
        if op in (ReduceOp.MIN, ReduceOp.MAX):
            pick_b = (b < a) if op == ReduceOp.MIN else (b > a)
            out = np.where(pick_b, b, a)
            if dtype.kind == "float":
                out = np.where(np.isnan(a) | np.isnan(b), np.array(np.nan, out.dtype), out)
            return out
        if op == ReduceOp.BAND:
            return a & b
        if op == ReduceOp.BOR:
            return a | b
        if op == ReduceOp.BXOR:
            return a ^ b
    raise ValueError(f"unhandled op {op}")


def average(a: np.ndarray, p: int, dtype: DType) -> np.ndarray:
    """The one AVG division of the full sum, in A(T): floats divide by p converted to A(T);
    integers divide the (wrapped) sum by the integer p as C does (truncating toward zero) and
    the quotient is stored back in T."""
    if dtype.kind == "float":
        return a / np.asarray(p, dtype=dtype.acc)
    wide = a.astype(np.int64)
    q = wide // p
    q = q + ((wide % p != 0) & (wide < 0))
    return q.astype(dtype.acc)


def premultiply(x: np.ndarray, factor: float, dtype: DType) -> np.ndarray:
    """PREMUL_SUM's local step: round_T(x * f) with f in A(T); for integer T, f must be an
    integer and is cast to T as C does (wrapping)."""
    if dtype.kind == "int":
        if int(factor) != factor:
            raise ValueError(f"premul_sum on {dtype.name} needs an integer factor, got {factor!r}")
        f = np.asarray(int(factor), dtype=np.int64).astype(dtype.acc)
    else:
        f = np.asarray(factor, dtype=dtype.acc)
    with np.errstate(over="ignore", invalid="ignore"):
        return dtype.from_acc(dtype.to_acc(x) * f)
