"""Lossy wire codecs of the contract (docs/arithmetic.md §5): encode/decode one segment.

A segment is encoded on its own: blocks start at the segment's first element, and ``base`` is
the global index of that element (it feeds the stochastic-rounding hash).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import bf16_bits_to_float32, float16_to_float32, float32_to_bf16_bits, float32_to_float16
from .hashing import uniform

DEFAULT_BLOCK = 256
_NAN_SCALE = np.array(0x7FC00000, dtype=np.uint32).view(np.float32)


@dataclass(frozen=True)
class Codec:
    name: str
    bits: int  # bits per element on the wire
    qmax: int  # 0 for the cast codecs

    @property
    def blockwise(self) -> bool:
        return self.qmax > 0

    def align(self, block: int) -> int:
        """Partition alignment in elements (docs/arithmetic.md §1)."""
        return block if self.blockwise else 32


CODECS = {c.name: c for c in [Codec("fp16", 16, 0), Codec("bf16", 16, 0),
                              Codec("int8", 8, 127), Codec("int4", 4, 7)]}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; supported: {', '.join(CODECS)}")
    return CODECS[name]


def check_block(block: int) -> None:
    if not (isinstance(block, (int, np.integer)) and 16 <= block <= 65536 and block % 16 == 0):
        raise ValueError(f"block size must be a multiple of 16 in [16, 65536], got {block!r}")


def _code_bytes(codec: Codec, count: int) -> int:
    return (count * codec.bits + 7) // 8


def encoded_bytes(codec: Codec | str, n: int, block: int = DEFAULT_BLOCK) -> int:
    """Wire size of an n-element segment."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    if not codec.blockwise:
        return 2 * n
    full, tail = divmod(n, block)
    return full * (4 + _code_bytes(codec, block)) + ((4 + _code_bytes(codec, tail)) if tail else 0)


def _quantize_blocks(codec: Codec, x: np.ndarray, u: np.ndarray, block: int):
    """Scales (float32 per block) and codes (int8 per element) for x padded to whole blocks."""
    nb = -(-x.size // block)
    xp = np.zeros(nb * block, np.float32)
    xp[: x.size] = x
    up = np.zeros(nb * block, np.float32)
    up[: x.size] = u
    xb, ub = xp.reshape(nb, block), up.reshape(nb, block)
    qmax = np.float32(codec.qmax)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        nonfinite = ~np.isfinite(xb).all(axis=1)
        absmax = np.abs(xb).max(axis=1)
        inv = qmax / absmax
        zero = ~nonfinite & np.isinf(inv)
        live = ~nonfinite & ~zero
        scale = np.where(nonfinite, _NAN_SCALE, np.where(zero, np.float32(0), absmax / qmax))
        t = xb * inv[:, None]
        t = t + ub
        q = np.clip(np.floor(t), -qmax, qmax)
    q = np.where(live[:, None], q, np.float32(0)).astype(np.int8)
    return scale.astype(np.float32), q.reshape(-1)[: x.size]


def _pack_codes(codec: Codec, q: np.ndarray) -> np.ndarray:
    if codec.bits == 8:
        return q.view(np.uint8)
    nib = (q.astype(np.uint8) & np.uint8(0x0F))
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return nib[0::2] | (nib[1::2] << np.uint8(4))


def _unpack_codes(codec: Codec, b: np.ndarray, count: int) -> np.ndarray:
    if codec.bits == 8:
        return b[:count].view(np.int8)
    nib = np.empty(b.size * 2, np.uint8)
    nib[0::2] = b & np.uint8(0x0F)
    nib[1::2] = b >> np.uint8(4)
    v = nib[:count].astype(np.int8)
    return np.where(v >= 8, v - np.int8(16), v).astype(np.int8)


def encode(codec: Codec | str, x: np.ndarray, key: int, base: int = 0,
           block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Encode a float32 segment to wire bytes (uint8). ``key`` from hashing.stream_key."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if codec.name == "fp16":
        return float32_to_float16(x).view(np.uint8)
    if codec.name == "bf16":
        return float32_to_bf16_bits(x).view(np.uint8)
    check_block(block)
    scale, q = _quantize_blocks(codec, x, uniform(key, base, x.size), block)
    full, tail = divmod(x.size, block)
    parts = []
    if full:  # full blocks as rows: [scale | codes]
        rows = np.empty((full, 4 + _code_bytes(codec, block)), np.uint8)
        rows[:, :4] = scale[:full].view(np.uint8).reshape(full, 4)
        rows[:, 4:] = _pack_codes(codec, q[: full * block]).reshape(full, -1)
        parts.append(rows.reshape(-1))
    if tail:
        parts += [scale[full:].view(np.uint8), _pack_codes(codec, q[full * block:])]
    return np.concatenate(parts) if parts else np.empty(0, np.uint8)


def decode(codec: Codec | str, buf: np.ndarray, n: int, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Decode wire bytes of an n-element segment to float32."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    if buf.size != encoded_bytes(codec, n, block):
        raise ValueError(f"{codec.name}: {buf.size} bytes cannot hold {n} elements")
    if codec.name == "fp16":
        return float16_to_float32(buf.view(np.float16))
    if codec.name == "bf16":
        return bf16_bits_to_float32(buf.view(np.uint16))
    full, tail = divmod(n, block)
    row = 4 + _code_bytes(codec, block)
    scales = np.empty(full + (1 if tail else 0), np.float32)
    codes = np.empty(n, np.int8)
    if full:
        rows = buf[: full * row].reshape(full, row)
        scales[:full] = np.ascontiguousarray(rows[:, :4]).view(np.float32).reshape(-1)
        codes[: full * block] = _unpack_codes(codec, np.ascontiguousarray(rows[:, 4:]).reshape(-1),
                                              full * block)
    if tail:
        scales[full] = buf[full * row: full * row + 4].view(np.float32)[0]
        codes[full * block:] = _unpack_codes(codec, buf[full * row + 4:], tail)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN scales; absmax ~ FLT_MAX
        return codes.astype(np.float32) * np.repeat(scales, block)[:n]


def roundtrip(codec: Codec | str, x: np.ndarray, key: int, base: int = 0,
              block: int = DEFAULT_BLOCK) -> np.ndarray:
    """D(E(x)): what the receiver of x sees."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    return decode(codec, encode(codec, x, key, base, block), x.size, block)


def residual(v: np.ndarray, decoded: np.ndarray, scale: int = 1) -> np.ndarray:
    """Error-feedback residual (v - D(E(v))) * scale, 0 wherever either side is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = (v - decoded) * np.float32(scale) if scale != 1 else v - decoded
        return np.where(np.isfinite(v) & np.isfinite(decoded), r, np.float32(0)).astype(np.float32)
