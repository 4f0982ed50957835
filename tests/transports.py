"""Helpers for the transport tests: open a zcoll._C.Transport in a rank, and deterministic
payloads both ends can recompute."""
import numpy as np


def open_transport(kind, rank, world, store, prefix="test", **kw):
    import torch  # noqa: F401  (before zcoll._C: it links against torch's libraries)

    from zcoll import _C
    from zcoll.config import ucx_library
    kw.setdefault("timeout", 30.0)
    if "ucx" in (kind, kw.get("net")):
        kw.setdefault("ucx_library", ucx_library())
    return _C.Transport(kind, store, prefix, rank, world, **kw)


def ucx_missing():
    """Why the ucx transport cannot run here ("" when it can): this build has no UCX transport,
    or no UCX library loads (the libucx wheel is absent). Tests over UCX skip with the reason."""
    import torch  # noqa: F401

    from zcoll import _C, build_info
    from zcoll.config import ucx_library
    if not build_info()["ucx"]:
        return "zcoll was built without the UCX transport (no UCX headers at build time)"
    try:
        _C.ucx_version(ucx_library())
    except RuntimeError as e:
        return f"no UCX library loads: {e}"
    return ""


def payload(src, dst, nbytes, salt=0):
    return np.random.default_rng([src, dst, nbytes, salt]).integers(0, 256, nbytes, dtype=np.uint8)
