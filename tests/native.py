"""The native extension for tests: torch must be imported first (the extension links libtorch)."""
import torch  # noqa: F401

from zcoll import _C  # noqa: E402,F401
