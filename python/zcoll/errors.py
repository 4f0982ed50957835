"""zcoll's exceptions, as members of torch's hierarchy (docs/architecture.md, "Errors").

- A failed collective or point-to-point operation raises ``torch.distributed.DistBackendError``;
  one that failed because the network did (a connection refused, reset or lost) raises
  ``torch.distributed.DistNetworkError``. Both are ``RuntimeError``\\ s, as gloo's errors are.
- A timeout raises :class:`DistTimeoutError`, a ``DistBackendError`` that is also Python's
  ``TimeoutError``; its message says "timed out" and names the rank that waited and the rank(s)
  it waited for.
- Bad arguments raise :class:`ArgumentError` (a ``ValueError``) or :class:`ArgumentTypeError`
  (a ``TypeError``, e.g. an unsupported dtype), before anything is sent. Both are
  ``RuntimeError``\\ s too, because gloo raises ``RuntimeError`` for the same mistakes: an
  ``except RuntimeError`` written for gloo or NCCL keeps working (as numpy's ``AxisError`` is
  both a ``ValueError`` and an ``IndexError``).
"""
from __future__ import annotations

import torch.distributed as dist

from . import _C


class ArgumentError(ValueError, RuntimeError):
    """A collective was called with arguments zcoll cannot take (sizes, lists, roots, ops)."""


class ArgumentTypeError(TypeError, RuntimeError):
    """A collective was given a tensor of a kind zcoll cannot take (dtype, layout, device)."""


class DistTimeoutError(dist.DistBackendError, TimeoutError):
    """A collective, a point-to-point operation or a group's creation ran past its timeout."""


_C._set_error_types(ArgumentError, ArgumentTypeError, DistTimeoutError)

__all__ = ["ArgumentError", "ArgumentTypeError", "DistTimeoutError"]
