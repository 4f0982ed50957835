"""Local SGD: every rank trains on its own, and every `period` optimizer steps the ranks average
their parameters (docs/sync.md)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from ._common import Averager, FlatParameters


class PeriodicAverager:
    """Averages a module's parameters over a group every `period` calls of :meth:`step` (call it
    after each optimizer step), after `warmup_steps` steps at which it averages every time (as
    torch's PostLocalSGD does, to start from a common point).

    A round averages what each rank's parameters moved since the last round (its delta from the
    parameters all ranks shared then) and adds that mean to the shared parameters: the mean of
    the ranks' parameters, computed on the small deltas. The shared starting point is group
    rank 0's parameters, broadcast when the averager is made.

    With `compression` ("fp16", "bf16", "int8" or "int4") the deltas' average runs through
    zcoll's compressed all-reduce, with error feedback across rounds unless
    `error_feedback=False` (what one round's compression lost is added to the next round's
    delta, so over rounds nothing is lost); the group must then be a zcoll group with that
    codec, or None (one is made over the default group: every rank of it must construct the
    averager). Without compression any group works (zcoll or gloo). With `optimizer`, its
    floating-point state (momentum buffers, Adam's moments) is averaged at the same rounds.

    After every round all ranks hold the same parameters, bit for bit, compressed or not.
    `bytes_sent` counts what this rank has sent; `rounds` how many averages ran."""

    def __init__(self, module: torch.nn.Module, period: int, group: dist.ProcessGroup | None = None,
                 compression: str | None = None, error_feedback: bool = True,
                 optimizer: torch.optim.Optimizer | None = None, warmup_steps: int = 0):
        if period < 1:
            raise ValueError(f"period must be at least 1, got {period}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.module, self.period, self.warmup_steps = module, period, warmup_steps
        self.optimizer = optimizer
        self.flat = FlatParameters(module)
        self.averager = Averager(group, compression, error_feedback)
        self.steps = 0
        self.rounds = 0
        # The parameters every rank shared at the last round: rank 0's to begin with.
        self.anchor = self.averager.shared_start(self.flat)

    @property
    def group(self) -> dist.ProcessGroup:
        return self.averager.group

    @property
    def bytes_sent(self) -> int:
        return self.averager.bytes_sent

    def due(self) -> bool:
        """Whether the next :meth:`step` averages."""
        n = self.steps + 1
        return n <= self.warmup_steps or (n - self.warmup_steps) % self.period == 0

    def step(self) -> bool:
        """Counts an optimizer step; averages when one is due. Returns whether it averaged."""
        due = self.due()
        self.steps += 1
        if due:
            self.average()
        return due

    def average(self) -> None:
        """Averages now, whatever the step count (every rank must call it together)."""
        delta = self.flat.gather().sub_(self.anchor)
        self.averager.average(delta, "params")
        self.anchor.add_(delta)
        self.flat.scatter(self.anchor)
        if self.optimizer is not None:
            self._average_optimizer_state()
        self.rounds += 1

    def _average_optimizer_state(self) -> None:
        tensors = [t for p in self.flat.params for t in self.optimizer.state.get(p, {}).values()
                   if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0]
        if not tensors:
            return
        v = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
        self.averager.average(v, "optimizer")
        at = 0
        with torch.no_grad():
            for t in tensors:
                t.copy_(v[at:at + t.numel()].view_as(t))
                at += t.numel()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "rounds": self.rounds, "anchor": self.anchor.clone(),
                "averager": self.averager.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["anchor"].numel() != self.flat.numel:
            raise ValueError(f"the checkpoint holds {state['anchor'].numel()} parameters, the module "
                             f"{self.flat.numel}")
        self.steps, self.rounds = int(state["steps"]), int(state["rounds"])
        self.anchor = state["anchor"].clone().to(torch.float32)
        self.averager.load_state_dict(state["averager"])
