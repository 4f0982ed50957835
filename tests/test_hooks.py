"""zcoll.hooks: DDP's gradients through the compressed all-reduce with error feedback."""
from datetime import timedelta

import numpy as np
import pytest
from multiproc import run_ranks


def ranks_ddp(rank, world, store, codec, steps):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    import torch.distributed as dist
    import zcoll
    import zcoll.hooks
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=codec, compress_min_bytes=0))
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(512, 32, generator=gen)
    labels = (data @ torch.randn(32, 4, generator=gen)).argmax(dim=1)
    shard = slice(rank * 512 // world, (rank + 1) * 512 // world)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    ddp = DDP(model)
    state = zcoll.hooks.ErrorFeedbackState()
    ddp.register_comm_hook(state, zcoll.hooks.compressed_allreduce_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.2)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(data[shard]), labels[shard])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    saved = state.state_dict()
    restored = zcoll.hooks.ErrorFeedbackState()
    restored.load_state_dict(saved)
    params = [p.detach().numpy().copy() for p in model.parameters()]
    dist.destroy_process_group()
    residual_norm = float(sum(e.norm() for e in state.residuals.values()))
    same = all(torch.equal(restored.residuals[i], e) for i, e in state.residuals.items())
    return losses, params, residual_norm, same


@pytest.mark.timeout(200)
@pytest.mark.parametrize("codec", ["int8", "int4"])
def test_ddp_hook_trains_with_error_feedback(codec):
    res = run_ranks(ranks_ddp, 2, codec, 30, timeout=150)
    losses, params0, residual_norm, same = res[0]
    assert losses[-1] < 0.7 * losses[0], losses            # it learns
    assert residual_norm > 0 and same                      # feedback state is kept, and saves/loads
    for a, b in zip(params0, res[1][1]):                   # every rank applied the same update
        np.testing.assert_array_equal(a, b)


def ranks_no_compression(rank, world, store):
    import torch

    import torch.distributed as dist
    import zcoll.hooks
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    try:
        backend.allreduce_with_feedback(torch.ones(4), torch.zeros(4), True)
        return "no error"
    except Exception as e:  # noqa: BLE001
        return str(e)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(100)
def test_hook_needs_compression_on():
    res = run_ranks(ranks_no_compression, 2, timeout=60)
    assert all("compression is off for this group" in msg for msg in res.values()), res
