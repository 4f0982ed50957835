"""Compressed all-reduce through torch.distributed (zcoll.Options(compression=...) /
ZCOLL_COMPRESS): results equal zcoll.reference's compressed all_reduce bit for bit, with the
collective's sequence number as the rounding step; what must stay exact stays exact."""
from datetime import timedelta

import numpy as np
import pytest
from multiproc import run_ranks

from zcoll import reference as R


def ranks_compressed(rank, world, store, codec, algo, min_bytes):
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=codec, algo=algo, compress_min_bytes=min_bytes,
                                                     compress_block=64))
    out = []
    for seq, (dtype, op, n) in enumerate(CASES):
        x = torch.from_numpy(data(rank, n, seq)).to(getattr(torch, dtype))
        dist.all_reduce(x, op={"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX,
                               "premul_sum": dist._make_nccl_premul_sum(0.5)}[op])
        out.append(x.view(torch.int16).numpy().copy() if dtype == "bfloat16" else x.numpy().copy())
    dist.destroy_process_group()
    return out


def data(rank, n, salt):
    return np.random.default_rng([rank, n, salt]).standard_normal(n).astype(np.float32)


# (dtype, op, n): compressed ones first, then what must stay exact
CASES = [("float32", "sum", 5000), ("float32", "avg", 3000), ("bfloat16", "sum", 4000), ("float16", "avg", 4000),
         ("float32", "premul_sum", 2500), ("float32", "sum", 100), ("float64", "sum", 5000), ("float32", "max", 5000)]
COMPRESSED = 5  # the first five; then below the size threshold, float64, and MAX


def expected(world, i, codec, algo):
    import torch

    from zcoll import _C
    dtype, op, n = CASES[i]
    xs = [torch.from_numpy(data(r, n, i)).to(getattr(torch, dtype)) for r in range(world)]
    if dtype == "bfloat16":
        arrays, kw = [x.view(torch.int16).numpy().view(np.uint16) for x in xs], {"dtype": "bfloat16"}
    else:
        arrays, kw = [x.numpy() for x in xs], {}
    premul = 0.5 if op == "premul_sum" else None
    if i >= COMPRESSED:
        used = algo or _C.tune("allreduce", xs[0].numel() * xs[0].element_size(), world, "shm")[0]
        return R.all_reduce(arrays, op, used, premul=premul, **kw)[0]
    used = algo or _C.tune_compressed(codec, xs[0].numel() * xs[0].element_size(), world, "shm", block=64)[0]
    return R.all_reduce(arrays, op, used, codec=codec, block=64, seed=0, step=i, premul=premul, **kw)[0]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world,codec,algo", [(2, "int8", None), (3, "int4", "ring"), (3, "bf16", "twoshot"),
                                              (4, "fp16", None), (2, "int4", "twoshot")])
def test_compressed_allreduce_equals_reference(world, codec, algo):
    res = run_ranks(ranks_compressed, world, codec, algo, 1024, timeout=150)
    for i, (dtype, op, n) in enumerate(CASES):
        want = expected(world, i, codec, algo)
        want_bits = want.view(np.int16) if dtype == "bfloat16" else want
        for r in range(world):  # finite data: the bits must match exactly
            np.testing.assert_array_equal(res[r][i], want_bits, err_msg=f"{codec} {algo} p={world} rank {r} {CASES[i]}")


def test_exact_cases_really_are_exact():
    """Guard the test above: the last three cases must differ from any compressed result."""
    want = expected(2, COMPRESSED, "int8", None)
    lossy = R.all_reduce([data(r, 100, COMPRESSED) for r in range(2)], "sum", "ring", codec="int8", block=64,
                         step=COMPRESSED)[0]
    assert not np.array_equal(want, lossy)


def test_options_validate_compression(monkeypatch):
    from zcoll.config import Options
    with pytest.raises(ValueError, match="compression='int2'"):
        Options(compression="int2").resolved()
    with pytest.raises(ValueError, match="compress_block must be a multiple of 16"):
        Options(compression="int8", compress_block=20).resolved()
    with pytest.raises(ValueError, match="a compressed all-reduce runs ring, twoshot or hierarchical"):
        Options(compression="int8", algo="tree").resolved()
    monkeypatch.setenv("ZCOLL_COMPRESS", "INT4")
    monkeypatch.setenv("ZCOLL_COMPRESS_MIN_BYTES", "0")
    o = Options().resolved()
    assert (o.compression, o.compress_min_bytes, o.compress_block) == ("int4", 0, 256)
    monkeypatch.setenv("ZCOLL_COMPRESS", "zip")
    with pytest.raises(ValueError, match="ZCOLL_COMPRESS='zip'"):
        Options().resolved()


def ranks_fsdp_traffic(rank, world, store, codec, dtype):
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=codec, compress_min_bytes=1024, compress_block=64))
    m = 2000
    t = getattr(torch, dtype)
    full = torch.from_numpy(data(rank, world * m, 0)).to(t)
    shard = torch.empty(m, dtype=t)
    dist.reduce_scatter_tensor(shard, full, op=dist.ReduceOp.AVG)            # seq 0
    gathered = torch.empty(world * m, dtype=t)
    dist.all_gather_into_tensor(gathered, torch.from_numpy(data(rank, m, 1)).to(t))  # seq 1
    listed = [torch.empty(m, dtype=t) for _ in range(world)]
    dist.all_gather(listed, torch.from_numpy(data(rank, m, 2)).to(t))        # seq 2: list form stays exact
    dist.destroy_process_group()
    bits = (lambda x: x.view(torch.int16).numpy().copy()) if dtype == "bfloat16" else (lambda x: x.numpy().copy())
    return bits(shard), bits(gathered), [bits(x) for x in listed]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world,codec,dtype", [(2, "int8", "float32"), (3, "int4", "bfloat16"), (4, "fp16", "float32")])
def test_compressed_reduce_scatter_and_all_gather_into_tensor(world, codec, dtype):
    """FSDP's traffic: reduce_scatter_tensor and all_gather_into_tensor compress (and equal the
    reference with the sequence number as step); the list all_gather stays exact."""
    import torch

    from zcoll import _C
    res = run_ranks(ranks_fsdp_traffic, world, codec, dtype, timeout=150)
    m = 2000
    t = getattr(torch, dtype)

    def arrays(salt, n):
        xs = [torch.from_numpy(data(r, n, salt)).to(t) for r in range(world)]
        return [x.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else x.numpy() for x in xs]

    kw = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
    item = 2 if dtype == "bfloat16" else 4
    algo = _C.tune_compressed(codec, world * m * item, world, "shm", block=64)[0]
    rs = R.reduce_scatter(arrays(0, world * m), "avg", algo, codec=codec, block=64, step=0, **kw)
    ag = R.all_gather(arrays(1, m), codec=codec, block=64, step=1, **kw)[0]
    exact = np.concatenate(arrays(2, m))
    as_bits = (lambda a: a.view(np.int16)) if dtype == "bfloat16" else (lambda a: a)
    for r in range(world):
        shard, gathered, listed = res[r]
        np.testing.assert_array_equal(shard, as_bits(rs[r]))
        np.testing.assert_array_equal(gathered, as_bits(ag))
        np.testing.assert_array_equal(np.concatenate(listed), as_bits(exact))
    assert not np.array_equal(as_bits(ag), as_bits(np.concatenate(arrays(1, m))))  # it really was lossy
