"""The device-tensor path (docs/architecture.md, "Device tensors"), on machines without a GPU.

- The staged compressed schedules (algorithms/compressed.h, staged*), whose codec work a CUDA
  stream runs, here run on the emulated codec device: every kernel body through the CUDA grid
  emulator, every copy a memcpy. They equal zcoll.reference's two-shot bit for bit, residuals
  included, and send exactly the host schedules' messages: a group mixing both agrees.
- The backend with ZCOLL_TEST_DEVICE_PATH=1 treats CPU tensors as device tensors: every
  collective goes through host staging (copies in, run, copies back), and the compressed ones
  through the emulated device. Results equal the host path's.
"""
from datetime import timedelta

import numpy as np
import pytest
from multiproc import run_ranks
from test_compressed_native import CODECS, inputs_for

from zcoll import reference as R


def ranks_staged(rank, world, store, kind, cases, device_ranks):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport(kind, store, "staged", rank, world, timeout=60)
    on_device = rank in device_ranks
    out = []
    for seq, (coll, codec, op, n, feedback) in enumerate(cases):
        kw = dict(block=64, seed=9, step=seq, seq=seq, chunk_bytes=1024, emulated_device=on_device)
        e = inputs_for(world, n, f"e{seq}")[rank] * np.float32(1e-2) if feedback else None
        if coll == "ar":
            x = inputs_for(world, n, seq)[rank].copy()
            tr.compressed_all_reduce(x, codec, op, "twoshot", residual=e, **kw)
        elif coll == "rs":
            x = inputs_for(world, n, seq)[rank].copy()
            tr.compressed_reduce_scatter(x, [n // world] * world, codec, op, "twoshot", residual=e, **kw)
            x = x[rank * (n // world):(rank + 1) * (n // world)].copy()
        else:
            m = n // world
            x = np.zeros(n, np.float32)
            x[rank * m:(rank + 1) * m] = inputs_for(world, m, seq)[rank]
            tr.compressed_all_gather(x, [m] * world, codec, **kw)
        out.append((x, e))
    return out


def staged_cases(world):
    n = world * 700 + 0  # uneven blocks: 700 is not a multiple of the 64-element block
    cases = [(coll, codec, op, n, fb) for coll in ("ar", "rs") for codec in CODECS for op in ("sum", "avg")
             for fb in (False, True)]
    cases += [("ag", codec, None, n, False) for codec in CODECS]
    cases += [("ar", "int8", "sum", 0, False), ("ar", "int4", "avg", 5, True)]
    return cases


def check_staged(kind, world, device_ranks):
    cases = staged_cases(world)
    res = run_ranks(ranks_staged, world, kind, cases, device_ranks, timeout=250)
    for i, (coll, codec, op, n, fb) in enumerate(cases):
        kw = dict(codec=codec, block=64, seed=9, step=i)
        if fb:
            kw["residuals"] = [inputs_for(world, n, f"e{i}")[r] * np.float32(1e-2) for r in range(world)]
        if coll == "ag":
            want, new = R.all_gather(inputs_for(world, n // world, i), **kw), None
        else:
            fn = R.all_reduce if coll == "ar" else R.reduce_scatter
            got = fn(inputs_for(world, n, i), op, "twoshot", **kw)
            want, new = got if fb else (got, None)
        for r in range(world):
            x, e = res[r][i]
            np.testing.assert_array_equal(x.view(np.uint32), want[r].view(np.uint32), err_msg=f"{cases[i]} rank {r}")
            if fb:
                np.testing.assert_array_equal(e.view(np.uint32), new[r].view(np.uint32),
                                              err_msg=f"{cases[i]} rank {r} residual")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_staged_schedules_equal_reference(world):
    check_staged("shm", world, device_ranks=range(world))


@pytest.mark.timeout(300)
def test_staged_schedules_over_tcp_and_mixed_with_host_ranks():
    """Ranks 0 and 2 run the device schedule, 1 the host one: the same messages, the same bits."""
    check_staged("tcp", 3, device_ranks={0, 2})


def test_staged_schedules_are_two_shot_only():
    import torch  # noqa: F401

    from test_schedules_native import DictStore
    from zcoll import _C
    tr = _C.Transport("shm", DictStore(), "alone-staged", 0, 1)
    x = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="on a device, only the twoshot schedule runs"):
        tr.compressed_all_reduce(x, "int8", "sum", "ring", emulated_device=True)


# ---- the backend's device path (ZCOLL_TEST_DEVICE_PATH=1) ------------------------------------

def every_collective(rank, world, compression):
    """Runs every collective on small deterministic tensors; returns {name: numpy result}."""
    import torch
    import torch.distributed as dist

    def data(n, salt, dtype=torch.float32):
        g = torch.Generator().manual_seed(1000 * salt + rank)
        return (torch.randn(n, generator=g) * 4).round().to(dtype)  # integers: exact sums

    out = {}
    t = data(1000, 1)
    dist.all_reduce(t)
    out["all_reduce"] = t
    t = data(999, 2, torch.float16)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    out["all_reduce_avg_f16"] = t
    t = torch.arange(12, dtype=torch.int32).reshape(3, 4) + rank
    dist.all_reduce(t.t(), op=dist.ReduceOp.MAX)  # non-contiguous
    out["all_reduce_max_strided"] = t
    ts = [data(100, 3), data(7, 4)]
    dist.all_reduce_coalesced(ts)
    out["all_reduce_coalesced"] = torch.cat(ts)
    t = data(300, 5) if rank == 1 else torch.zeros(300)
    dist.broadcast(t, src=1)
    out["broadcast"] = t
    outs = [torch.empty(50) for _ in range(world)]
    dist.all_gather(outs, data(50, 6))
    out["all_gather"] = torch.cat(outs)
    big = torch.empty(world * 800)
    dist.all_gather_into_tensor(big, data(800, 7))
    out["all_gather_into_tensor"] = big
    o = torch.empty(600)
    dist.reduce_scatter_tensor(o, data(600 * world, 8))
    out["reduce_scatter_tensor"] = o
    o = torch.empty(40)
    dist.reduce_scatter(o, [data(40, 9 + q) for q in range(world)])
    out["reduce_scatter"] = o
    t = data(64, 20)
    dist.reduce(t, dst=0)
    out["reduce"] = t
    g = [torch.empty(10) for _ in range(world)] if rank == 2 else None
    dist.gather(data(10, 21), gather_list=g, dst=2)
    out["gather"] = torch.cat(g) if g else torch.zeros(0)
    s = torch.empty(10)
    dist.scatter(s, [data(10, 22 + q) for q in range(world)] if rank == 0 else None, src=0)
    out["scatter"] = s
    a = torch.empty(world * 6)
    dist.all_to_all_single(a, data(world * 6, 30))
    out["all_to_all_single"] = a
    al = [torch.empty(3) for _ in range(world)]
    dist.all_to_all(al, [data(3, 31 + q) for q in range(world)])
    out["all_to_all"] = torch.cat(al)
    dist.barrier()
    if compression != "none":
        import zcoll.hooks
        state = zcoll.hooks.ErrorFeedbackState()
        backend = dist.group.WORLD._get_backend(torch.device("cpu"))
        for step in range(3):
            x = data(2000, 40 + step)
            backend.allreduce_with_feedback(x, state.residual_for(0, 2000), True).wait()
            out[f"feedback{step}"] = x
        out["residual"] = state.residuals[0]
    return {k: v.float().numpy() for k, v in out.items()}


def ranks_backend(rank, world, store, device_path, compression):
    import os
    if device_path:
        os.environ["ZCOLL_TEST_DEVICE_PATH"] = "1"
        os.environ["ZCOLL_DEBUG"] = "INFO"  # the test checks which path ran
    os.environ["ZCOLL_ALGO"] = "allreduce:twoshot,reduce_scatter:twoshot"  # the device path's schedule
    import torch.distributed as dist
    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=compression, compress_min_bytes=1024,
                                                     compress_block=64))
    try:
        return every_collective(rank, world, compression)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("compression", ["none", "int8", "fp16"])
def test_backend_device_path_equals_host_path(compression, capfd):
    world = 3
    host = run_ranks(ranks_backend, world, False, compression, timeout=200)
    capfd.readouterr()
    device = run_ranks(ranks_backend, world, True, compression, timeout=200)
    log = capfd.readouterr().err
    for coll in ("allreduce", "reduce_scatter", "allgather"):  # the codec work ran on the (emulated) device
        assert (f"{coll}/{compression} on cpu" in log) == (compression != "none"), log
    for r in range(world):
        assert host[r].keys() == device[r].keys()
        for name, want in host[r].items():
            np.testing.assert_array_equal(device[r][name].view(np.uint32), want.view(np.uint32),
                                          err_msg=f"{compression} rank {r} {name}")
    if compression == "none":  # integer-valued data: the exact sums, so the comparison means something
        assert np.array_equal(host[0]["all_reduce"], host[1]["all_reduce"])
    else:
        assert np.abs(host[0]["residual"]).sum() > 0  # the feedback path really ran compressed
