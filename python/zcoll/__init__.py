"""zcoll: fast (and optionally compressed) collectives for torch.distributed.

``import zcoll`` registers the "zcoll" backend when torch is installed and makes ``zcoll.launch``
(mpirun glue) and ``zcoll.hooks`` (the DDP comm hook) usable; ``zcoll.reference`` (numpy only)
works without torch.
"""
__version__ = "0.1.0"

try:
    import torch.distributed as _dist  # noqa: F401
except ImportError:  # the numpy reference alone needs no torch
    _dist = None

from . import launch  # noqa: E402,F401
from .config import Options  # noqa: E402

if _dist is not None:
    from .backend import register as _register
    from .backend import shared_memory, shrink_group  # noqa: F401
    from .errors import ArgumentError, ArgumentTypeError, DistTimeoutError  # noqa: F401
    from . import hooks  # noqa: F401

    _register()


def build_info() -> dict:
    """How the native extension was built: versions, CUDA kernels and archs, key flags."""
    import torch  # noqa: F401  (loads libtorch/libc10 before the extension that links them)

    from . import _C

    info = dict(_C.build_info())
    info["version"] = __version__
    return info


__all__ = ["Options", "build_info", "launch", "__version__"]
if _dist is not None:
    __all__ += ["ArgumentError", "ArgumentTypeError", "DistTimeoutError", "hooks", "shared_memory", "shrink_group"]
