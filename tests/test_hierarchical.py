"""The two-level schedules (csrc/algorithms/hierarchical, docs/arithmetic.md §4) over the "auto"
transport (shm inside a host, tcp between hosts) equal zcoll.reference's hierarchical all_reduce
bit for bit, for even and uneven hosts, every dtype and op, every algorithm inside and between
hosts, compressed (every codec, with error feedback) and not. The hosts are simulated: each rank
is told its host (host_of), so one machine runs them all; tests/test_multihost.py runs real
hosts in network namespaces."""
import numpy as np
import pytest
from contract_cases import seed_of
from multiproc import run_ranks

from zcoll import reference as R

# (host of each rank): even, uneven both ways, interleaved ranks, three hosts
TOPOLOGIES = [(0, 0, 1, 1), (0, 0, 0, 1), (0, 1, 1), (0, 1, 0, 1), (0, 0, 1, 1, 2, 2)]
DTYPES = ("float32", "float16", "bfloat16", "int32", "float64")
OPS = ("sum", "avg", "max")
INTRA = ("ring", "twoshot")
INTER = ("ring", "tree", "oneshot", "twoshot")
SIZES = (0, 5, 1000, 20000)
CODECS = ("fp16", "bf16", "int8", "int4")


def data_for(dtype, world, n, salt):
    rng = np.random.default_rng(seed_of("hier", dtype, world, n, salt))
    if dtype.startswith("int"):
        return [rng.integers(-1000, 1000, n).astype(dtype) for _ in range(world)]
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(world)]
    if dtype == "bfloat16":
        return [R.float32_to_bf16_bits(x) for x in xs]
    return [x.astype(dtype) for x in xs]


def storage(dtype):
    return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)


def intra_of(hosts, rank, mixed):
    """The intra-host algorithm rank `rank` runs: one for all, or alternating by host."""
    order = list(dict.fromkeys(hosts))
    return INTRA[order.index(hosts[rank]) % 2] if mixed else "ring"


def ranks_exact(rank, world, store, hosts, cases):
    import torch  # noqa: F401

    from zcoll import _C
    t = _C.Transport("auto", store, "hier", rank, world, timeout=60, host_of=list(hosts))
    out = [t.name]
    for seq, (dtype, op, inter, n, mixed) in enumerate(cases):
        x = data_for(dtype, world, n, seq)[rank].copy()
        t.hierarchical_all_reduce(x, dtype, op, intra_of(hosts, rank, mixed), inter, seq=seq, chunk_bytes=4096)
        out.append(x)
    return out


def host_index(hosts):
    order = list(dict.fromkeys(hosts))
    return [order.index(h) for h in hosts]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts", TOPOLOGIES, ids=lambda h: "".join(map(str, h)))
def test_hierarchical_all_reduce_equals_reference(hosts):
    world = len(hosts)
    cases = [(dtype, op, inter, n, mixed) for dtype in DTYPES for op in OPS for inter in INTER
             for n in SIZES for mixed in (False, True)
             if not (op == "max" and inter != "ring") and not (dtype != "float32" and n == 20000)]
    res = run_ranks(ranks_exact, world, hosts, cases, timeout=280)
    order = list(dict.fromkeys(hosts))
    for i, (dtype, op, inter, n, mixed) in enumerate(cases):
        intra = [INTRA[h % 2] if mixed else "ring" for h in range(len(order))]
        kw = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
        want = R.all_reduce(data_for(dtype, world, n, i), op, inter, hosts=list(hosts), intra=intra, **kw)[0]
        for rank in range(world):
            got = res[rank][i + 1]
            assert res[rank][0] == "shm+tcp"
            np.testing.assert_array_equal(got.view(storage(dtype)), want.reshape(-1).view(storage(dtype)),
                                          err_msg=f"hosts {hosts} rank {rank}: {dtype} {op} inter {inter} n={n}")


def ranks_compressed(rank, world, store, hosts, cases):
    import torch  # noqa: F401

    from zcoll import _C
    t = _C.Transport("auto", store, "hierc", rank, world, timeout=60, host_of=list(hosts))
    out = []
    for seq, (codec, op, inter, n, feedback) in enumerate(cases):
        x = data_for("float32", world, n, seq)[rank].copy()
        res = np.random.default_rng([rank, seq]).standard_normal(n).astype(np.float32) * 0.01 if feedback else None
        t.hierarchical_compressed_all_reduce(x, codec, op, "twoshot" if seq % 2 else "ring", inter, block=64,
                                             seed=5, step=seq, seq=seq, chunk_bytes=1024, residual=res)
        out.append((x, res))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts", [(0, 0, 1, 1), (0, 0, 0, 1)], ids=lambda h: "".join(map(str, h)))
def test_hierarchical_compressed_all_reduce_equals_reference(hosts):
    """Only the stage between hosts is encoded; residuals feed back what each rank encoded."""
    world = len(hosts)
    cases = [(codec, op, inter, n, feedback) for codec in CODECS for op in ("sum", "avg")
             for inter in ("ring", "twoshot") for n in (0, 77, 5000) for feedback in (False, True)]
    res = run_ranks(ranks_compressed, world, hosts, cases, timeout=280)
    for i, (codec, op, inter, n, feedback) in enumerate(cases):
        xs = data_for("float32", world, n, i)
        residuals = ([np.random.default_rng([r, i]).standard_normal(n).astype(np.float32) * 0.01
                      for r in range(world)] if feedback else None)
        want = R.all_reduce(xs, op, inter, hosts=list(hosts), intra="twoshot" if i % 2 else "ring", codec=codec,
                            block=64, seed=5, step=i, residuals=residuals)
        outs, new_res = want if feedback else (want, None)
        for rank in range(world):
            got, got_res = res[rank][i]
            where = f"hosts {hosts} rank {rank}: {codec} {op} inter {inter} n={n} feedback={feedback}"
            np.testing.assert_array_equal(got.view(np.uint32), outs[rank].view(np.uint32), err_msg=where)
            if feedback:
                np.testing.assert_array_equal(got_res.view(np.uint32), new_res[rank].view(np.uint32), err_msg=where)


def test_reference_hierarchical_error_is_one_encode_per_stage():
    """The compressed error of the hierarchical all-reduce does not grow with ranks per host:
    only the host partials are encoded (docs/compression.md)."""
    n = 1 << 14
    errs = []
    for per_host in (1, 2, 4):
        hosts = [h for h in range(2) for _ in range(per_host)]
        xs = data_for("float32", len(hosts), n, 0)
        exact = np.sum([x.astype(np.float64) for x in xs], axis=0)
        got = R.all_reduce(xs, "sum", "twoshot", hosts=hosts, codec="int8", seed=1)[0]
        errs.append(np.linalg.norm(got - exact) / np.linalg.norm(exact))
    assert max(errs) < 1.3 * min(errs), errs


# ---------------------------------------------------------------------------------------------
# through torch: init_process_group("zcoll") on ranks told their hosts by ZCOLL_HOSTID

BACKEND_CASES = [("float32", "sum", 100), ("float32", "avg", 300_000), ("bfloat16", "sum", 5000),
                 ("float16", "avg", 70_000), ("int64", "sum", 2000), ("float64", "max", 9000)]


def ranks_backend(rank, world, store, hosts, compression):
    import os
    from datetime import timedelta
    os.environ["ZCOLL_HOSTID"] = f"node-{hosts[rank]}"
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=compression, compress_min_bytes=0))
    ops = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX}
    out = [dist.group.WORLD._get_backend(torch.device("cpu")).transport]
    for i, (dtype, op, n) in enumerate(BACKEND_CASES):
        if compression != "none" and (dtype.startswith("int") or op == "max"):
            continue
        x = torch.from_numpy(data_for(dtype, world, n, i)[rank].copy())
        if dtype == "bfloat16":
            x = x.view(torch.bfloat16)
        dist.all_reduce(x, op=ops[op])
        out.append(x.view(torch.uint16).numpy().copy() if dtype == "bfloat16" else x.numpy().copy())
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts,compression", [((0, 0, 1, 1), "none"), ((0, 0, 0, 1), "none"),
                                               ((0, 0, 1, 1), "int8"), ((0, 1, 1), "bf16")],
                         ids=["2x2", "3+1", "2x2-int8", "1+2-bf16"])
def test_backend_runs_the_hierarchical_all_reduce(hosts, compression):
    """ZCOLL_HOSTID splits one machine into hosts: the group takes shm+tcp and the tuner's
    hierarchical all-reduce, equal to the reference bit for bit (compressed: between hosts only)."""
    from zcoll import _C
    world = len(hosts)
    res = run_ranks(ranks_backend, world, hosts, compression, timeout=280)
    index = host_index(hosts)
    seq = 0
    for i, (dtype, op, n) in enumerate(BACKEND_CASES):
        if compression != "none" and (dtype.startswith("int") or op == "max"):
            continue
        nbytes = n * np.dtype(storage(dtype)).itemsize
        tuned = [_C.tune_two_level(nbytes, index, r) for r in range(world)]
        intra = [tuned[min(r for r in range(world) if index[r] == h)][0] for h in range(max(index) + 1)]
        inter = tuned[0][1]
        kw = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
        if compression != "none":
            hosts_n = max(index) + 1
            most = max(index.count(h) for h in range(hosts_n))
            inter = _C.tune_compressed(compression, nbytes // most, hosts_n)[0]
            kw.update(codec=compression, seed=0, step=seq)  # each collective its own rounding stream
        want = R.all_reduce(data_for(dtype, world, n, i), op, inter, hosts=list(hosts), intra=intra, **kw)[0]
        seq += 1
        for rank in range(world):
            got = res[rank][seq]
            assert res[rank][0] == "shm+tcp"
            np.testing.assert_array_equal(got.reshape(-1).view(storage(dtype)), want.reshape(-1).view(storage(dtype)),
                                          err_msg=f"hosts {hosts} rank {rank}: {dtype} {op} n={n} {compression}")


def ranks_feedback(rank, world, store, hosts):
    import os
    from datetime import timedelta
    os.environ["ZCOLL_HOSTID"] = f"node-{hosts[rank]}"
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression="int4"))
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    residual = torch.zeros(40_000)
    out = []
    for step in range(3):  # the residual carries over
        x = torch.from_numpy(data_for("float32", world, 40_000, step)[rank].copy())
        backend.allreduce_with_feedback(x, residual, average=True).wait()
        out.append((x.numpy().copy(), residual.numpy().copy()))
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(200)
def test_error_feedback_hook_path_on_two_levels():
    """zcoll.hooks' all-reduce with error feedback: only what each rank encodes between hosts
    feeds back, step after step, equal to the reference."""
    from zcoll import _C
    hosts = (0, 0, 1, 1)
    res = run_ranks(ranks_feedback, 4, hosts, timeout=180)
    nbytes = 40_000 * 4
    intra = _C.tune_two_level(nbytes, host_index(hosts), 0)[0]
    inter = _C.tune_compressed("int4", nbytes // 2, 2)[0]
    residuals = [np.zeros(40_000, np.float32) for _ in range(4)]
    for step in range(3):
        outs, residuals = R.all_reduce(data_for("float32", 4, 40_000, step), "avg", inter, hosts=list(hosts),
                                       intra=intra, codec="int4", seed=0, step=step, residuals=residuals)
        for rank in range(4):
            got, got_res = res[rank][step]
            np.testing.assert_array_equal(got.view(np.uint32), outs[rank].view(np.uint32), err_msg=f"step {step}")
            np.testing.assert_array_equal(got_res.view(np.uint32), residuals[rank].view(np.uint32))
        assert any(np.abs(r).sum() > 0 for r in residuals)
