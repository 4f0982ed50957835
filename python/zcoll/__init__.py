"""zcoll: fast (and optionally compressed) collectives for torch.distributed.

``zcoll.reference`` (numpy only) is importable without torch; ``build_info()`` loads the native
extension, which needs torch.
"""
__version__ = "0.1.0"


def build_info() -> dict:
    """How the native extension was built: versions, CUDA kernels and archs, key flags."""
    import torch  # noqa: F401  (loads libtorch/libc10 before the extension that links them)

    from . import _C

    info = dict(_C.build_info())
    info["version"] = __version__
    return info
