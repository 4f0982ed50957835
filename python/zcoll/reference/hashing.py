"""The counter-based hash behind stochastic rounding (docs/arithmetic.md §5.2)."""
from __future__ import annotations

import numpy as np

GATHER_STAGE = 0xFFFFFFFF
_M32 = 0xFFFFFFFF
_KEY_INIT = 0x2545F491


def fmix32(h):
    """murmur3's finalizer on Python ints or uint32 arrays (wrapping)."""
    if isinstance(h, np.ndarray):
        h = h.astype(np.uint32, copy=True)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
        return h
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def mix(h, v):
    if isinstance(v, np.ndarray):
        return fmix32(np.uint32(h) ^ fmix32(v.astype(np.uint32) + np.uint32(0x9E3779B9)))
    return fmix32(h ^ fmix32((v + 0x9E3779B9) & _M32))


def stream_key(seed: int, step: int, rank: int, stage: int) -> int:
    """The 32-bit key of one encode: (seed, step, rank, stage)."""
    h = _KEY_INIT
    for word in (seed & _M32, (seed >> 32) & _M32, step & _M32, (step >> 32) & _M32,
                 rank & _M32, stage & _M32):
        h = mix(h, word)
    return h


def element_hash(key: int, index: np.ndarray) -> np.ndarray:
    """hash(key, i) for 64-bit element indices i."""
    i = np.asarray(index, dtype=np.uint64)
    lo = (i & np.uint64(_M32)).astype(np.uint32)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    return fmix32(fmix32(lo ^ np.uint32(key)) ^ mix(key, hi))


def uniform(key: int, base: int, n: int) -> np.ndarray:
    """u_i in [0, 1) as float32 for indices base .. base+n-1 (24 random bits, exact in float32)."""
    h = element_hash(key, np.arange(base, base + n, dtype=np.uint64))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
