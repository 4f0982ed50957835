"""What the synchronisation strategies share: a module's parameters as one flat float32 buffer,
group averaging (exact, or compressed with error feedback on a zcoll group), and the count of
bytes each rank sends (docs/sync.md)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..config import COMPRESSIONS
from ..reference.codecs import encoded_bytes

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def group_of(group: dist.ProcessGroup | None) -> dist.ProcessGroup:
    if not dist.is_initialized():
        raise RuntimeError("zcoll.sync needs an initialised process group (dist.init_process_group)")
    return group if group is not None else dist.group.WORLD


def float_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The module's floating-point parameters in registration order (the same on every rank of
    the same model); raises where there are none."""
    params = [p for p in module.parameters() if p.dtype in FLOAT_DTYPES]
    if not params:
        raise ValueError(f"{type(module).__name__} has no floating-point parameters to synchronise")
    return params


class FlatParameters:
    """A module's floating-point parameters as one contiguous float32 vector: `gather()` copies
    them in, `scatter(v)` copies a vector back (cast to each parameter's dtype)."""

    def __init__(self, module: torch.nn.Module):
        self.params = float_parameters(module)
        self.numel = sum(p.numel() for p in self.params)
        self.device = self.params[0].device

    def gather(self, out: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.empty(self.numel, dtype=torch.float32, device=self.device) if out is None else out
        at = 0
        with torch.no_grad():
            for p in self.params:
                out[at:at + p.numel()].copy_(p.detach().reshape(-1))
                at += p.numel()
        return out

    def scatter(self, v: torch.Tensor) -> None:
        at = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(v[at:at + p.numel()].view_as(p))
                at += p.numel()

    def slices(self, count: int) -> list[tuple[int, int]]:
        """[start, end) of `count` near-equal fragments of the vector (streaming by fragments)."""
        if count < 1:
            raise ValueError(f"fragments must be at least 1, got {count}")
        base, extra = divmod(self.numel, count)
        out, at = [], 0
        for i in range(count):
            n = base + (1 if i < extra else 0)
            out.append((at, at + n))
            at += n
        return out


def ring_bytes(nbytes: int, world: int) -> int:
    """What each rank sends in a bandwidth-optimal all-reduce of `nbytes` (ring, two-shot, the
    hierarchical schedules across hosts): 2 (p - 1) / p of the tensor."""
    return 0 if world <= 1 else (2 * (world - 1) * nbytes) // world


class Averager:
    """Averages float32 vectors over a group: exactly (any backend), or through zcoll's
    compressed all-reduce with error feedback (a zcoll group with that codec, made over the
    whole default group when `group` is None). Counts the bytes this rank sends."""

    def __init__(self, group: dist.ProcessGroup | None, compression: str | None, error_feedback: bool = True):
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r}: expected None or one of {', '.join(COMPRESSIONS)}")
        self.compression = None if compression in (None, "none") else compression
        self.error_feedback = error_feedback
        if self.compression and group is None:
            from .. import Options
            group = dist.new_group(backend="zcoll", pg_options=Options(compression=self.compression,
                                                                       compress_min_bytes=0))
        self.group = group_of(group)
        self.world = dist.get_world_size(self.group)
        self.block = 256
        if self.compression:
            backend = self.group._get_backend(torch.device("cpu"))
            if not hasattr(backend, "allreduce_with_feedback"):
                raise ValueError(f"compression={self.compression!r} needs a zcoll group (got a "
                                 f"{type(backend).__name__}); pass group=None to make one")
            codec = backend.config.compression
            if codec != self.compression:
                raise ValueError(f"compression={self.compression!r}, but the group compresses with {codec!r}: "
                                 f"make it with zcoll.Options(compression={self.compression!r}) or pass group=None")
            self.block = backend.config.compress_block
        self.residuals: dict[str, torch.Tensor] = {}
        self.bytes_sent = 0

    def shared_start(self, flat: FlatParameters) -> torch.Tensor:
        """Group rank 0's parameters, broadcast and written into every rank's module: the common
        point the averaging strategies start from. Returns them as a float32 vector."""
        v = flat.gather()
        dist.broadcast(v, src=dist.get_global_rank(self.group, 0), group=self.group)
        flat.scatter(v)
        return v

    def average(self, v: torch.Tensor, key: str = "params") -> torch.Tensor:
        """Replaces `v` (float32, contiguous) by its mean over the group, in place; `key` names
        its error-feedback residual (one per distinct vector averaged)."""
        return self.finish(self.start(v, key))

    def start(self, v: torch.Tensor, key: str = "params"):
        """The same, started: returns a handle for :meth:`finish`, which waits and completes it
        (the all-reduce runs meanwhile, on the group's own thread)."""
        if self.world == 1:
            return (v, None, False)
        if not self.compression:
            return (v, dist.all_reduce(v, group=self.group, async_op=True), False)
        residual = self.residuals.get(key)
        if residual is None or residual.numel() != v.numel():
            residual = self.residuals[key] = torch.zeros_like(v)
        if not self.error_feedback:
            residual.zero_()
        work = self.group._get_backend(v.device).allreduce_with_feedback(v, residual, True)
        return (v, work, True)

    def finish(self, handle) -> torch.Tensor:
        v, work, compressed = handle
        if work is None:
            return v
        work.wait()
        if compressed:
            self.bytes_sent += ring_bytes(encoded_bytes(self.compression, v.numel(), self.block), self.world)
        else:
            v.div_(self.world)
            self.bytes_sent += ring_bytes(v.numel() * v.element_size(), self.world)
        return v

    def state_dict(self) -> dict:
        return {"residuals": {k: r.clone() for k, r in self.residuals.items()}, "bytes_sent": self.bytes_sent}

    def load_state_dict(self, state: dict) -> None:
        self.residuals = {k: r.clone().to(torch.float32).contiguous() for k, r in state["residuals"].items()}
        self.bytes_sent = int(state.get("bytes_sent", 0))
