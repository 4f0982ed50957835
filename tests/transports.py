"""Helpers for the transport tests: open a zcoll._C.Transport in a rank, and deterministic
payloads both ends can recompute."""
import numpy as np


def open_transport(kind, rank, world, store, prefix="test", **kw):
    import torch  # noqa: F401  (before zcoll._C: it links against torch's libraries)

    from zcoll import _C
    kw.setdefault("timeout", 30.0)
    return _C.Transport(kind, store, prefix, rank, world, **kw)


def payload(src, dst, nbytes, salt=0):
    return np.random.default_rng([src, dst, nbytes, salt]).integers(0, 256, nbytes, dtype=np.uint8)
