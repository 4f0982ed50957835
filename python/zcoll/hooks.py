"""DDP communication hooks: compressed gradient all-reduce with error feedback.

    import zcoll.hooks
    state = zcoll.hooks.ErrorFeedbackState()          # or ErrorFeedbackState(process_group=pg)
    ddp.register_comm_hook(state, zcoll.hooks.compressed_allreduce_hook)
    ...
    torch.save({"model": ddp.state_dict(), "ef": state.state_dict()}, path)   # and load_state_dict

The group must be a zcoll group with compression on (``zcoll.Options(compression="int8")`` or
``ZCOLL_COMPRESS``). Each bucket's gradient is averaged by the compressed all-reduce of
docs/compression.md; what compression lost this step (the rank's residual) is added back into
the bucket's next gradient, so over steps nothing is lost (docs/arithmetic.md §6).

The hook compresses every bucket, whatever its size: ``compress_min_bytes`` (which keeps small
tensors of plain all-reduces exact) does not apply to it. Buckets must be float32, float16 or
bfloat16 (others raise TypeError); in a group of one rank a bucket is left as it is.
"""
import torch
import torch.distributed as dist


class ErrorFeedbackState:
    """One float32 residual per DDP bucket (by bucket index). A bucket whose size changes (DDP
    rebuilds its buckets after the first iteration) starts again from zero."""

    def __init__(self, process_group: dist.ProcessGroup | None = None):
        self.process_group = process_group
        self.residuals: dict[int, torch.Tensor] = {}

    def residual_for(self, index: int, numel: int, device: torch.device | None = None) -> torch.Tensor:
        e = self.residuals.get(index)
        if e is not None and device is not None and e.device != device:
            e = e.to(device)  # restored from a checkpoint saved on another device
            self.residuals[index] = e
        if e is None or e.numel() != numel:
            e = torch.zeros(numel, dtype=torch.float32, device=device)
            self.residuals[index] = e
        return e

    def state_dict(self) -> dict:
        return {"residuals": {i: e.clone() for i, e in self.residuals.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.residuals = {int(i): e.clone().to(torch.float32).contiguous() for i, e in state["residuals"].items()}


def _zcoll_backend(group, device: torch.device):
    backend = (group or dist.group.WORLD)._get_backend(device)
    if not hasattr(backend, "allreduce_with_feedback"):
        raise RuntimeError("compressed_allreduce_hook needs a zcoll process group "
                           f"(got {type(backend).__name__})")
    return backend


# (No postponed annotations in this module: DDP checks that the hook's return annotation is
# exactly torch.futures.Future[torch.Tensor].)
def compressed_allreduce_hook(state: ErrorFeedbackState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: the bucket's averaged gradient through zcoll's compressed all-reduce with
    error feedback (``state`` keeps the residuals)."""
    buffer = bucket.buffer()
    residual = state.residual_for(bucket.index(), buffer.numel(), buffer.device)
    work = _zcoll_backend(state.process_group, buffer.device).allreduce_with_feedback(buffer, residual, True)
    return work.get_future().then(lambda fut: fut.value()[0])
