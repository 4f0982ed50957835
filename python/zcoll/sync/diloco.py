"""DiLoCo (Douillard et al., 2023): each rank takes `period` steps of its own inner optimizer,
then the ranks average their pseudo-gradients (how far each moved from the shared parameters)
and take one outer step, Nesterov momentum by default (docs/sync.md)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from ._common import Averager, FlatParameters


class DiLoCo:
    """Call :meth:`step` after each step of `inner_optimizer` (the rank's own optimizer over
    `module`, AdamW in the paper). Every `period` steps:

        delta   = mean over ranks of (shared - local)        # the pseudo-gradient
        buf     = outer_momentum * buf + delta
        update  = delta + outer_momentum * buf  (nesterov)   or  buf
        shared -= outer_lr * update
        local   = shared                                      # every rank, bit for bit

    which is torch's SGD(lr=outer_lr, momentum=outer_momentum, nesterov=nesterov) on the shared
    parameters with the pseudo-gradient as gradient. The shared starting point is group rank 0's
    parameters, broadcast when the object is made.

    With `fragments=k` the parameters are cut into k near-equal slices and the slices take turns:
    every period/k steps one slice is synchronised (each slice still every `period` steps), so
    each synchronisation moves 1/k of the model and the link is busy evenly. With `overlap=True`
    a slice's all-reduce runs during the next inner step (asynchronously) and its outer update is
    applied one step later, keeping that step's local progress on top of it: communication
    hides behind computation (streaming DiLoCo), at the price of ranks differing, after a
    synchronisation, by that one step (the shared parameters stay identical).

    With `compression` the pseudo-gradients are averaged by zcoll's compressed all-reduce with
    error feedback (the group as for PeriodicAverager: a zcoll group with that codec, or None to
    make one over the default group). `bytes_sent` counts what this rank sent; `rounds` the
    synchronisations (of a slice, with fragments)."""

    def __init__(self, module: torch.nn.Module, inner_optimizer: torch.optim.Optimizer, period: int,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9, nesterov: bool = True,
                 group: dist.ProcessGroup | None = None, compression: str | None = None,
                 error_feedback: bool = True, fragments: int = 1, overlap: bool = False):
        if period < 1:
            raise ValueError(f"period must be at least 1, got {period}")
        if not 1 <= fragments <= period:
            raise ValueError(f"fragments must be between 1 and period ({period}), got {fragments}")
        if period % fragments:
            raise ValueError(f"period ({period}) must be a multiple of fragments ({fragments}): each fragment "
                             f"is synchronised every period steps, one every period/fragments steps")
        if outer_lr <= 0 or not 0 <= outer_momentum < 1:
            raise ValueError(f"outer_lr must be > 0 and outer_momentum in [0, 1), got {outer_lr}, {outer_momentum}")
        if nesterov and outer_momentum == 0:
            raise ValueError("nesterov needs outer_momentum > 0")
        self.module, self.inner_optimizer, self.period = module, inner_optimizer, period
        self.outer_lr, self.outer_momentum, self.nesterov = outer_lr, outer_momentum, nesterov
        self.fragments, self.overlap = fragments, overlap
        self.flat = FlatParameters(module)
        self.slices = self.flat.slices(fragments)
        self.averager = Averager(group, compression, error_feedback)
        self.shared = self.averager.shared_start(self.flat)
        self.momentum = torch.zeros_like(self.shared)
        self.steps = 0
        self.rounds = 0
        self._pending = None  # overlap: (slice index, the averager's handle, local at the start)

    @property
    def group(self) -> dist.ProcessGroup:
        return self.averager.group

    @property
    def bytes_sent(self) -> int:
        return self.averager.bytes_sent

    def step(self) -> bool:
        """Counts an inner step; synchronises a slice when one is due (and, with overlap, applies
        the slice started one step before). Returns whether a synchronisation started."""
        self.steps += 1
        if self._pending is not None:
            self._finish()
        every = self.period // self.fragments
        if self.steps % every:
            return False
        index = (self.steps // every - 1) % self.fragments
        self._synchronise(index)
        return True

    def _synchronise(self, index: int) -> None:
        lo, hi = self.slices[index]
        local = self.flat.gather()[lo:hi]
        delta = self.shared[lo:hi] - local
        handle = self.averager.start(delta, f"fragment{index}")
        if self.overlap:
            self._pending = (index, handle, local)
            return
        self._outer(lo, hi, self.averager.finish(handle))
        self._apply(lo, hi, None)

    def _finish(self) -> None:
        index, handle, local_then = self._pending
        self._pending = None
        lo, hi = self.slices[index]
        self._outer(lo, hi, self.averager.finish(handle))
        self._apply(lo, hi, local_then)

    def _outer(self, lo: int, hi: int, delta: torch.Tensor) -> None:
        """SGD with (Nesterov) momentum on the shared slice, the averaged pseudo-gradient as the
        gradient."""
        buf = self.momentum[lo:hi]
        if self.outer_momentum:
            buf.mul_(self.outer_momentum).add_(delta)
            update = delta.add(buf, alpha=self.outer_momentum) if self.nesterov else buf
        else:
            update = delta
        self.shared[lo:hi].sub_(update, alpha=self.outer_lr)
        self.rounds += 1

    def _apply(self, lo: int, hi: int, local_then: torch.Tensor | None) -> None:
        """The slice's parameters become the shared ones (plus, with overlap, the local progress
        made while the all-reduce ran)."""
        v = self.flat.gather()
        v[lo:hi] = self.shared[lo:hi] if local_then is None else self.shared[lo:hi] + (v[lo:hi] - local_then)
        self.flat.scatter(v)

    def flush(self) -> None:
        """Applies a synchronisation still in flight (overlap); state_dict() calls it."""
        if self._pending is not None:
            self._finish()

    def state_dict(self) -> dict:
        self.flush()
        return {"steps": self.steps, "rounds": self.rounds, "shared": self.shared.clone(),
                "momentum": self.momentum.clone(), "averager": self.averager.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["shared"].numel() != self.flat.numel:
            raise ValueError(f"the checkpoint holds {state['shared'].numel()} parameters, the module "
                             f"{self.flat.numel}")
        self._pending = None
        self.steps, self.rounds = int(state["steps"]), int(state["rounds"])
        self.shared = state["shared"].clone().to(torch.float32)
        self.momentum = state["momentum"].clone().to(torch.float32)
        self.averager.load_state_dict(state["averager"])
