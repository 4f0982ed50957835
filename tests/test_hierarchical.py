"""The two-level schedules (csrc/algorithms/hierarchical, docs/arithmetic.md §4) over the "auto"
transport (shm inside a host, tcp or ucx between hosts) equal zcoll.reference's hierarchical all_reduce
bit for bit, for even and uneven hosts, every dtype and op, every algorithm inside and between
hosts, compressed (every codec, with error feedback) and not. The hosts are simulated: each rank
is told its host (host_of), so one machine runs them all; tests/test_multihost.py runs real
hosts in network namespaces."""
import numpy as np
import pytest
from contract_cases import seed_of
from multiproc import run_ranks
from transports import ucx_missing

from zcoll import reference as R

# (host of each rank): even, uneven both ways, interleaved ranks, three hosts
TOPOLOGIES = [(0, 0, 1, 1), (0, 0, 0, 1), (0, 1, 1), (0, 1, 0, 1), (0, 0, 1, 1, 2, 2)]
DTYPES = ("float32", "float16", "bfloat16", "int32", "float64")
OPS = ("sum", "avg", "max")
INTRA = ("ring", "twoshot")
INTER = ("ring", "tree", "oneshot", "twoshot")
SIZES = (0, 5, 1000, 20000)
CODECS = ("fp16", "bf16", "int8", "int4")
UCX_MISSING = ucx_missing()
NEEDS_UCX = pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING)


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


def ranks_others(rank, world, store, hosts, cases):
    import torch  # noqa: F401

    from zcoll import _C
    t = _C.Transport("auto", store, "hiero", rank, world, timeout=60, host_of=list(hosts))
    out = []
    for seq, (coll, dtype, op, m, intra, inter, codec) in enumerate(cases):
        counts = [m + (r % 2) if coll == "reduce_scatter" else m for r in range(world)]  # uneven slices
        if coll == "reduce":
            x = data_for(dtype, world, m, seq)[rank].copy()
            t.hierarchical(x, "reduce", root=seq % world, dtype=dtype, op=op, intra=intra, inter=inter, seq=seq,
                           chunk_bytes=2048)
        elif coll == "reduce_scatter":
            x = data_for(dtype if codec is None else "float32", world, sum(counts), seq)[rank].copy()
            if codec is None:
                t.hierarchical(x, "reduce_scatter", counts=counts, dtype=dtype, op=op, intra=intra, inter=inter,
                               seq=seq, chunk_bytes=2048)
            else:
                t.hierarchical_compressed(x, "reduce_scatter", counts, codec, op=op, intra=intra, inter=inter,
                                          block=64, seed=3, step=seq, seq=seq, chunk_bytes=1024)
            lo = sum(counts[:rank])
            x = x[lo:lo + counts[rank]].copy()
        else:  # all_gather: every rank's slice placed, the rest a sentinel
            parts = data_for(dtype if codec is None else "float32", world, max(counts), seq)
            x = np.zeros(sum(counts), parts[0].dtype)
            lo = sum(counts[:rank])
            x[lo:lo + counts[rank]] = parts[rank][:counts[rank]]
            if codec is None:
                t.hierarchical(x, "all_gather", counts=counts, dtype=dtype, seq=seq, chunk_bytes=2048)
            else:
                t.hierarchical_compressed(x, "all_gather", counts, codec, block=64, seed=3, step=seq, seq=seq,
                                          chunk_bytes=1024)
        out.append(x)
    return out


OTHER_CASES = [("reduce_scatter", dtype, op, m, intra, inter, None) for dtype in ("float32", "bfloat16", "int32")
               for op in ("sum", "avg") for m in (0, 3, 2000) for intra in INTRA for inter in ("ring", "twoshot")] + \
              [("reduce_scatter", "float32", op, m, "ring", inter, codec) for codec in CODECS
               for op in ("sum", "avg") for m in (5, 3000) for inter in ("ring", "twoshot")] + \
              [("all_gather", dtype, "sum", m, "ring", "ring", None) for dtype in ("float32", "float16", "int64")
               for m in (0, 7, 3000)] + \
              [("all_gather", "float32", "sum", m, "ring", "ring", codec) for codec in CODECS for m in (9, 3000)] + \
              [("reduce", dtype, op, m, intra, inter, None) for dtype in ("float32", "float16", "int64")
               for op in ("sum", "avg", "max") for m in (1, 5000) for intra in ("tree", "oneshot")
               for inter in ("tree", "oneshot")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts", [(0, 0, 1, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0, 1)], ids=lambda h: "".join(map(str, h)))
def test_hierarchical_reduce_scatter_all_gather_reduce_equal_reference(hosts):
    """Equally many ranks per host for reduce_scatter and all_gather (any for reduce)."""
    from zcoll.reference.hierarchical import even, host_ranks
    world = len(hosts)
    cases = [c for c in OTHER_CASES if c[0] == "reduce" or even(host_ranks(list(hosts), world))]
    res = run_ranks(ranks_others, world, hosts, cases, timeout=280)
    for i, (coll, dtype, op, m, intra, inter, codec) in enumerate(cases):
        counts = [m + (r % 2) if coll == "reduce_scatter" else m for r in range(world)]
        kw = {"dtype": "bfloat16"} if dtype == "bfloat16" and codec is None else {}
        if codec is not None:
            kw.update(codec=codec, block=64, seed=3, step=i)
            dtype = "float32"
        if coll == "reduce":
            want = {i % world: R.reduce(data_for(dtype, world, m, i), i % world, op, inter, hosts=list(hosts),
                                        intra=intra, **kw)}
        elif coll == "reduce_scatter":
            outs = R.reduce_scatter(data_for(dtype, world, sum(counts), i), op, inter, counts=counts,
                                    hosts=list(hosts), intra=intra, **kw)
            want = dict(enumerate(outs))
        else:
            parts = data_for(dtype, world, max(counts), i)
            want = dict(enumerate(R.all_gather([parts[r][:counts[r]] for r in range(world)], hosts=list(hosts), **kw)))
        for rank, w in want.items():
            got = res[rank][i]
            np.testing.assert_array_equal(got.view(storage(dtype)), np.asarray(w).reshape(-1).view(storage(dtype)),
                                          err_msg=f"hosts {hosts} rank {rank}: {coll} {dtype} {op} m={m} "
                                                  f"{intra}/{inter} {codec}")


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


def ranks_backend(rank, world, store, hosts, compression, net):
    import os
    from datetime import timedelta
    os.environ["ZCOLL_HOSTID"] = f"node-{hosts[rank]}"
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(compression=compression, compress_min_bytes=0, net=net))
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
    # the other collectives in two levels: reduce-scatter and all-gather (equally many ranks per
    # host), reduce, broadcast, barrier
    rs = torch.empty(3000)
    dist.reduce_scatter_tensor(rs, torch.from_numpy(data_for("float32", world, world * 3000, 50)[rank].copy()))
    ag = torch.empty(world * 700)
    dist.all_gather_into_tensor(ag, torch.from_numpy(data_for("float32", world, 700, 51)[rank].copy()))
    red = torch.from_numpy(data_for("float32", world, 4000, 52)[rank].copy())
    dist.reduce(red, dst=1, op=dist.ReduceOp.AVG)
    bc = torch.full((999,), float(rank))
    dist.broadcast(bc, src=world - 1)
    dist.barrier()
    out.append((rs.numpy().copy(), ag.numpy().copy(), red.numpy().copy() if rank == 1 else None, bc.numpy().copy()))
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts,compression,net", [
    ((0, 0, 1, 1), "none", "tcp"), ((0, 0, 0, 1), "none", "tcp"), ((0, 0, 1, 1), "int8", "tcp"),
    ((0, 1, 1), "bf16", "tcp"),
    pytest.param((0, 0, 1, 1), "none", "ucx", marks=NEEDS_UCX), pytest.param((0, 1, 1), "int8", "ucx", marks=NEEDS_UCX)],
    ids=["2x2", "3+1", "2x2-int8", "1+2-bf16", "2x2-ucx", "1+2-int8-ucx"])
def test_backend_runs_the_hierarchical_all_reduce(hosts, compression, net):
    """ZCOLL_HOSTID splits one machine into hosts: the group takes shm+tcp (or shm+ucx) and the
    tuner's hierarchical all-reduce, equal to the reference bit for bit (compressed: between hosts
    only)."""
    from zcoll import _C
    world = len(hosts)
    res = run_ranks(ranks_backend, world, hosts, compression, net, timeout=280)
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
            inter = _C.tune_compressed(compression, nbytes // most, hosts_n, "tcp", ranks_per_host=most)[0]
            kw.update(codec=compression, seed=0, step=seq)  # each collective its own rounding stream
        want = R.all_reduce(data_for(dtype, world, n, i), op, inter, hosts=list(hosts), intra=intra, **kw)[0]
        seq += 1
        for rank in range(world):
            got = res[rank][seq]
            assert res[rank][0] == f"shm+{net}"
            np.testing.assert_array_equal(got.reshape(-1).view(storage(dtype)), want.reshape(-1).view(storage(dtype)),
                                          err_msg=f"hosts {hosts} rank {rank}: {dtype} {op} n={n} {compression}")
    # reduce-scatter and all-gather: two levels with equally many ranks per host, compressed only
    # between hosts; reduce, broadcast: two levels (copies for broadcast)
    even = len({index.count(h) for h in index}) == 1
    rs_in = data_for("float32", world, world * 3000, 50)
    tuned = [_C.tune_two_level(rs_in[0].nbytes, index, r, "reduce_scatter") for r in range(world)]
    intra = [tuned[index.index(h)][0] for h in range(max(index) + 1)]
    kw = {}
    if compression != "none":
        most = max(index.count(h) for h in set(index))
        kw = dict(codec=compression, seed=0, step=seq)
        inter = _C.tune_compressed(compression, rs_in[0].nbytes // most, max(index) + 1, "tcp", ranks_per_host=most)[0]
    else:
        inter = tuned[0][1]
    if even:
        rs_want = R.reduce_scatter(rs_in, "sum", inter, hosts=list(hosts), intra=intra, **kw)
    else:  # flat, over every rank
        most = max(index.count(h) for h in set(index))  # the flat schedule's ranks on the busiest host
        flat = (_C.tune_compressed(compression, rs_in[0].nbytes, world, "shm+tcp", ranks_per_host=most)
                if compression != "none" else _C.tune("reduce_scatter", rs_in[0].nbytes, world, "shm+tcp", most))[0]
        rs_want = R.reduce_scatter(rs_in, "sum", flat, **kw)
    seq += 1  # the all-gather is the next collective
    ag_in = data_for("float32", world, 700, 51)
    ag_kw = dict(codec=compression, seed=0, step=seq) if compression != "none" else {}
    ag_want = R.all_gather(ag_in, hosts=list(hosts) if even else None, **ag_kw)[0]
    red_in = data_for("float32", world, 4000, 52)
    tuned = [_C.tune_two_level(red_in[0].nbytes, index, r, "reduce") for r in range(world)]
    red_want = R.reduce(red_in, 1, "avg", tuned[0][1], hosts=list(hosts),
                        intra=[tuned[index.index(h)][0] for h in range(max(index) + 1)])
    for rank in range(world):
        rs, ag, red, bc = res[rank][-1]
        where = f"hosts {hosts} rank {rank} {compression}"
        np.testing.assert_array_equal(rs.view(np.uint32), rs_want[rank].view(np.uint32), err_msg=f"{where}: reduce_scatter")
        np.testing.assert_array_equal(ag.view(np.uint32), ag_want.view(np.uint32), err_msg=f"{where}: all_gather")
        if rank == 1:
            np.testing.assert_array_equal(red.view(np.uint32), red_want.view(np.uint32), err_msg=f"{where}: reduce")
        assert (bc == world - 1).all(), where


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
    inter = _C.tune_compressed("int4", nbytes // 2, 2, "tcp", ranks_per_host=2)[0]
    residuals = [np.zeros(40_000, np.float32) for _ in range(4)]
    for step in range(3):
        outs, residuals = R.all_reduce(data_for("float32", 4, 40_000, step), "avg", inter, hosts=list(hosts),
                                       intra=intra, codec="int4", seed=0, step=step, residuals=residuals)
        for rank in range(4):
            got, got_res = res[rank][step]
            np.testing.assert_array_equal(got.view(np.uint32), outs[rank].view(np.uint32), err_msg=f"step {step}")
            np.testing.assert_array_equal(got_res.view(np.uint32), residuals[rank].view(np.uint32))
        assert any(np.abs(r).sum() > 0 for r in residuals)


def ranks_blocks(rank, world, store, hosts, kind):
    import torch  # noqa: F401

    from zcoll import _C
    t = _C.Transport(kind, store, "hierb", rank, world, timeout=120, host_of=list(hosts))
    n = 2_500_000  # three blocks: on shm+tcp, stage 2 of one block runs beside stages 1 and 3 of others
    out = []
    for seq, (dtype, op) in enumerate([("float32", "sum"), ("bfloat16", "avg")]):
        x = data_for(dtype, world, n, seq)[rank].copy()
        t.hierarchical_all_reduce(x, dtype, op, "ring", "ring", seq=seq)
        out.append(x)
    x = data_for("float32", world, n, 9)[rank].copy()
    res = np.full(n, 0.001, np.float32)
    t.hierarchical_compressed_all_reduce(x, "int8", "avg", "twoshot", "ring", seed=2, step=5, seq=2, residual=res)
    out.append((x, res))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts,kind", [((0, 0, 1, 1), "auto"), ((0, 0, 0, 1), "auto"), ((0, 0, 1, 1), "tcp")],
                         ids=["2x2-pipelined", "3+1-pipelined", "2x2-tcp-in-order"])
def test_hierarchical_all_reduce_in_blocks_equals_reference(hosts, kind):
    """Tensors over 2^20 elements run block by block, the blocks pipelined over shm+tcp (two
    threads per rank) and in order over one transport: the same bits either way."""
    world = len(hosts)
    res = run_ranks(ranks_blocks, world, hosts, kind, timeout=280)
    n = 2_500_000
    for i, (dtype, op) in enumerate([("float32", "sum"), ("bfloat16", "avg")]):
        kw = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
        want = R.all_reduce(data_for(dtype, world, n, i), op, "ring", hosts=list(hosts), intra="ring", **kw)[0]
        for rank in range(world):
            np.testing.assert_array_equal(res[rank][i].view(storage(dtype)), want.view(storage(dtype)),
                                          err_msg=f"{hosts} {kind} rank {rank}: {dtype} {op}")
    outs, new_res = R.all_reduce(data_for("float32", world, n, 9), "avg", "ring", hosts=list(hosts), intra="twoshot",
                                 codec="int8", seed=2, step=5, residuals=[np.full(n, 0.001, np.float32)] * world)
    for rank in range(world):
        x, r = res[rank][2]
        np.testing.assert_array_equal(x.view(np.uint32), outs[rank].view(np.uint32), err_msg=f"{kind} rank {rank}")
        np.testing.assert_array_equal(r.view(np.uint32), new_res[rank].view(np.uint32), err_msg=f"{kind} rank {rank}")


def ranks_forced(rank, world, store, hosts):
    import os
    from datetime import timedelta
    os.environ["ZCOLL_HOSTID"] = f"node-{hosts[rank]}"
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    out = []
    for algo in ("allreduce:ring", "allreduce:hierarchical"):
        group = dist.new_group(backend="zcoll", pg_options=zcoll.Options(algo=algo))
        x = torch.from_numpy(data_for("float32", world, 300_000, 77)[rank].copy())
        dist.all_reduce(x, group=group)
        out.append(x.numpy().copy())
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(200)
def test_zcoll_algo_forces_the_flat_ring_or_the_two_levels():
    """ZCOLL_ALGO=allreduce:ring keeps the flat ring over all ranks; allreduce:hierarchical the
    two levels (with the tuner's algorithms inside them)."""
    from zcoll import _C
    hosts = (0, 0, 1, 1)
    res = run_ranks(ranks_forced, 4, hosts, timeout=180)
    xs = data_for("float32", 4, 300_000, 77)
    intra, inter, _ = _C.tune_two_level(xs[0].nbytes, host_index(hosts), 0)
    flat = R.all_reduce(xs, "sum", "ring")[0]
    two = R.all_reduce(xs, "sum", inter, hosts=list(hosts), intra=intra)[0]
    assert not np.array_equal(flat, two)  # the two orders differ somewhere: the check can fail
    for rank in range(4):
        np.testing.assert_array_equal(res[rank][0].view(np.uint32), flat.view(np.uint32))
        np.testing.assert_array_equal(res[rank][1].view(np.uint32), two.view(np.uint32))
