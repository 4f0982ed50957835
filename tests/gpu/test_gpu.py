"""The GPU check (tests/gpu/run.sh; docs/architecture.md, "GPU check"): zcoll's device path on
real CUDA tensors. Without CUDA the whole module is skipped at collection, so the CPU suite
collects it in no time.

Ranks share the GPUs (rank r on GPU r mod the GPU count): zcoll stages device tensors through
host memory, so several ranks may share one GPU (NCCL would refuse).

- Every collective (every all_reduce op, a spread of dtypes, non-contiguous and large tensors,
  async works and their futures, point-to-point) on CUDA tensors equals the same collective on
  CPU tensors bit for bit, at 2 and 4 ranks.
- The compressed all_reduce / reduce_scatter_tensor / all_gather_into_tensor and the
  error-feedback all-reduce on CUDA tensors (codec kernels on the GPU) equal zcoll.reference
  bit for bit, and the log shows they ran on the device.
- DDP on a CUDA model trains, with DDP's own all-reduce and with zcoll's compressed hook.
- A collective's completion does not wait for compute the caller queued on its stream after
  the call (a long torch.cuda._sleep): zcoll's device work runs on a stream of its own.
"""
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False): tests/gpu/run.sh runs this on a GPU machine",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the house helpers
from multiproc import run_ranks  # noqa: E402

from zcoll import reference as R  # noqa: E402

FLOATS = ("float32", "float64", "float16", "bfloat16")
INTS = ("int8", "uint8", "int16", "int32", "int64")


@pytest.fixture(autouse=True)
def zcoll_built_with_cuda():
    """A zcoll built without CUDA refuses CUDA tensors: a build problem, not a skip."""
    import zcoll
    info = zcoll.build_info()
    if not info["cuda"]:
        pytest.fail("this zcoll was built without CUDA (no nvcc at build time, or ZCOLL_CUDA=off): rebuild it "
                    "with nvcc on the PATH (tests/gpu/run.sh builds with ZCOLL_CUDA=on)")


def init(rank, world, store, **options):
    """This rank's GPU (shared when there are fewer GPUs than ranks) and the default zcoll group."""
    import torch.distributed as dist

    import zcoll
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=120),
                            pg_options=zcoll.Options(**options) if options else None)
    return device


def bits(t) -> np.ndarray:
    """The tensor's bytes, on the host (bit-for-bit comparisons of any dtype)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().copy()


# ---- every collective: CUDA tensors equal CPU tensors -----------------------------------------

def every_collective(rank, world, device):
    """Runs every collective on tensors on `device` (the same inputs whatever the device);
    returns {case: bytes of this rank's result}."""
    import torch.distributed as dist
    R_ = dist.ReduceOp

    def data(n, salt, dtype="float32"):
        g = torch.Generator().manual_seed(7919 * salt + rank)
        if dtype in FLOATS:
            x = torch.randn(n, generator=g) * 3
        elif dtype == "bool":
            x = torch.randint(0, 2, (n,), generator=g)
        elif dtype in ("int8", "uint8"):
            x = torch.randint(-128 if dtype == "int8" else 0, 128 if dtype == "int8" else 256, (n,), generator=g)
        else:
            x = torch.randint(-1000, 1000, (n,), generator=g)
        return x.to(getattr(torch, dtype)).to(device)

    out, salt = {}, 0

    def nxt():
        nonlocal salt
        salt += 1
        return salt

    ops = {"sum": R_.SUM, "prod": R_.PRODUCT, "min": R_.MIN, "max": R_.MAX, "avg": R_.AVG,
           "band": R_.BAND, "bor": R_.BOR, "bxor": R_.BXOR}
    for dtype in (*FLOATS, *INTS):
        names = ["sum", "prod", "min", "max"] + (["avg"] if dtype in FLOATS else ["band", "bor", "bxor"])
        for name in names:
            t = data(1000, nxt(), dtype)
            dist.all_reduce(t, op=ops[name])
            out[f"all_reduce {name} {dtype}"] = bits(t)
    for name in ("max", "min"):
        t = data(333, nxt(), "bool")
        dist.all_reduce(t, op=ops[name])
        out[f"all_reduce {name} bool"] = bits(t)
    if hasattr(dist, "_make_nccl_premul_sum"):
        for dtype in ("float32", "bfloat16"):
            t = data(2000, nxt(), dtype)
            dist.all_reduce(t, op=dist._make_nccl_premul_sum(0.5))
            out[f"all_reduce premul_sum {dtype}"] = bits(t)
    big = data(1 << 22, nxt())  # 16 MiB: many chunks through the pipeline and the staging
    dist.all_reduce(big)
    out["all_reduce sum 16MiB"] = bits(big)
    big = data(1 << 21, nxt(), "bfloat16")
    dist.all_reduce(big, op=R_.AVG)
    out["all_reduce avg bf16 4MiB"] = bits(big)
    m = (torch.arange(12, dtype=torch.int32, device=device).reshape(3, 4) + rank)
    dist.all_reduce(m.t(), op=R_.MAX)  # non-contiguous
    out["all_reduce max strided"] = bits(m)
    s = data(2001, nxt())
    dist.all_reduce(s[::2])  # every other element
    out["all_reduce sum step 2"] = bits(s)
    # async works, their futures and a then() on them
    t = data(5000, nxt())
    work = dist.all_reduce(t, async_op=True)
    work.wait()
    out["all_reduce async"] = bits(t)
    t = data(5000, nxt())
    doubled = dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0] * 2).wait()
    out["all_reduce future then"] = bits(doubled)
    for root in (0, world - 1):
        for dtype in ("float32", "bfloat16", "int64"):
            t = data(3001, nxt(), dtype) if rank == root else torch.zeros(3001, dtype=getattr(torch, dtype),
                                                                          device=device)
            dist.broadcast(t, src=root)
            out[f"broadcast root {root} {dtype}"] = bits(t)
        for name in ("sum", "max"):
            t = data(999, nxt())
            dist.reduce(t, dst=root, op=ops[name])
            if rank == root:  # elsewhere the tensor's contents are undefined
                out[f"reduce {name} root {root}"] = bits(t)
    for dtype in ("float32", "int8"):
        outs = [torch.empty(500, dtype=getattr(torch, dtype), device=device) for _ in range(world)]
        dist.all_gather(outs, data(500, nxt(), dtype))
        out[f"all_gather {dtype}"] = bits(torch.cat(outs))
    for dtype in ("float32", "bfloat16"):
        whole = torch.empty(world * 800, dtype=getattr(torch, dtype), device=device)
        dist.all_gather_into_tensor(whole, data(800, nxt(), dtype))
        out[f"all_gather_into_tensor {dtype}"] = bits(whole)
    o = torch.empty(400, device=device)
    dist.reduce_scatter(o, [data(400, nxt() + 100 * q) for q in range(world)])
    out["reduce_scatter"] = bits(o)
    for name, dtype in (("sum", "float32"), ("avg", "bfloat16"), ("max", "int32")):
        o = torch.empty(600, dtype=getattr(torch, dtype), device=device)
        dist.reduce_scatter_tensor(o, data(600 * world, nxt(), dtype), op=ops[name])
        out[f"reduce_scatter_tensor {name} {dtype}"] = bits(o)
    root = world - 1
    g = [torch.empty(10, device=device) for _ in range(world)] if rank == root else None
    dist.gather(data(10, nxt()), gather_list=g, dst=root)
    if g:
        out["gather"] = bits(torch.cat(g))
    s = torch.empty(10, device=device)
    base = nxt()
    dist.scatter(s, [data(10, base + 100 * q) for q in range(world)] if rank == 0 else None, src=0)
    out["scatter"] = bits(s)
    a = torch.empty(world * 6, device=device)
    dist.all_to_all_single(a, data(world * 6, nxt()))
    out["all_to_all_single"] = bits(a)
    # uneven: rank r sends (r + q) % 3 + 1 rows of 5 to rank q
    send_rows = [(rank + q) % 3 + 1 for q in range(world)]
    recv_rows = [(q + rank) % 3 + 1 for q in range(world)]
    src = data(sum(send_rows) * 5, nxt()).reshape(-1, 5)
    dst = torch.empty(sum(recv_rows), 5, device=device)
    dist.all_to_all_single(dst, src, output_split_sizes=recv_rows, input_split_sizes=send_rows)
    out["all_to_all_single uneven"] = bits(dst)
    al = [torch.empty(3, device=device) for _ in range(world)]
    base = nxt()
    dist.all_to_all(al, [data(3, base + 100 * q) for q in range(world)])
    out["all_to_all"] = bits(torch.cat(al))
    # point-to-point: a ring of isend/irecv, blocking pairs, and a batch
    nxt_rank, prv_rank = (rank + 1) % world, (rank - 1) % world
    x, y = data(4097, nxt()), torch.empty(4097, device=device)
    works = [dist.isend(x, nxt_rank), dist.irecv(y, prv_rank)]
    for w in works:
        w.wait()
    out["isend/irecv ring"] = bits(y)
    x, y = data(1 << 20, nxt(), "bfloat16"), torch.empty(1 << 20, dtype=torch.bfloat16, device=device)
    if rank % 2 == 0:
        dist.send(x, nxt_rank)
        dist.recv(y, prv_rank)
    else:
        dist.recv(y, prv_rank)
        dist.send(x, nxt_rank)
    out["send/recv bf16 2MiB"] = bits(y)
    x, y = data(5, nxt(), "int64"), torch.empty(5, 3, dtype=torch.int64, device=device)
    ops_ = [dist.P2POp(dist.isend, x, nxt_rank), dist.P2POp(dist.irecv, y.t()[1], prv_rank)]  # a strided receive
    for w in dist.batch_isend_irecv(ops_):
        w.wait()
    out["batch_isend_irecv strided"] = bits(y.t()[1])  # (the other columns hold whatever was there)
    dist.barrier()
    torch.cuda.synchronize()
    return out


def ranks_every_collective(rank, world, store):
    import torch.distributed as dist
    device = init(rank, world, store)
    try:
        on_cpu = every_collective(rank, world, torch.device("cpu"))
        on_gpu = every_collective(rank, world, device)
        return on_cpu, on_gpu
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 4])
def test_every_collective_on_cuda_equals_cpu(world):
    res = run_ranks(ranks_every_collective, world, timeout=240)
    for r in range(world):
        on_cpu, on_gpu = res[r]
        assert on_gpu.keys() == on_cpu.keys()
        wrong = [name for name in on_cpu if not np.array_equal(on_gpu[name], on_cpu[name])]
        assert not wrong, f"rank {r}: CUDA results differ from CPU results in {wrong}"
    # the collectives really combined the ranks' data (not each rank's own input back)
    assert np.array_equal(res[0][1]["all_reduce sum float32"], res[1][1]["all_reduce sum float32"])


# ---- compressed collectives on the GPU: equal to the reference -----------------------------------

def gaussian(rank, n, salt):
    return np.random.default_rng([rank, n, salt]).standard_normal(n).astype(np.float32)


# (collective, dtype, op, elements): per-rank input sizes (all_gather: this rank's part)
COMPRESSED_CASES = [("ar", "float32", "sum", 5000), ("ar", "float32", "avg", 3001), ("ar", "bfloat16", "sum", 4000),
                    ("ar", "float16", "avg", 4000), ("ar", "float32", "premul_sum", 2500),
                    ("ar", "float32", "sum", 1 << 20), ("rs", "float32", "avg", 2000), ("rs", "bfloat16", "sum", 1500),
                    ("ag", "float32", None, 2000), ("ag", "bfloat16", None, 1000)]
FEEDBACK_STEPS, FEEDBACK_N = 3, 3000


def ranks_compressed(rank, world, store, codecs):
    import torch.distributed as dist

    import zcoll
    os.environ["ZCOLL_DEBUG"] = "INFO"  # rank 0 logs "allreduce/<codec> on cuda:0": the device path ran
    device = init(rank, world, store)
    results = {}
    try:
        for codec in codecs:
            group = dist.new_group(backend="zcoll", pg_options=zcoll.Options(
                compression=codec, compress_min_bytes=1024, compress_block=64))
            out = []  # one result per collective, in sequence order (the step of its rounding)
            for i, (coll, dtype, op, n) in enumerate(COMPRESSED_CASES):
                t = getattr(torch, dtype)
                if coll == "ar":
                    x = torch.from_numpy(gaussian(rank, n, i)).to(t).to(device)
                    rop = dist._make_nccl_premul_sum(0.5) if op == "premul_sum" else getattr(dist.ReduceOp, op.upper())
                    dist.all_reduce(x, op=rop, group=group)
                elif coll == "rs":
                    full = torch.from_numpy(gaussian(rank, world * n, i)).to(t).to(device)
                    x = torch.empty(n, dtype=t, device=device)
                    dist.reduce_scatter_tensor(x, full, op=getattr(dist.ReduceOp, op.upper()), group=group)
                else:
                    x = torch.empty(world * n, dtype=t, device=device)
                    dist.all_gather_into_tensor(x, torch.from_numpy(gaussian(rank, n, i)).to(t).to(device), group=group)
                out.append(bits(x))
            backend = group._get_backend(torch.device("cuda"))
            residual = torch.zeros(FEEDBACK_N, device=device)
            for step in range(FEEDBACK_STEPS):
                x = torch.from_numpy(gaussian(rank, FEEDBACK_N, 100 + step)).to(device)
                backend.allreduce_with_feedback(x, residual, True).wait()
                out.append(bits(x))
            out.append(bits(residual))
            results[codec] = out
            dist.destroy_process_group(group)
        torch.cuda.synchronize()
        return results
    finally:
        dist.destroy_process_group()


def as_reference_arrays(world, n, salt, dtype):
    """The ranks' inputs as the reference takes them (bfloat16 as uint16 bits)."""
    xs = [torch.from_numpy(gaussian(r, n, salt)).to(getattr(torch, dtype)) for r in range(world)]
    if dtype == "bfloat16":
        return [x.view(torch.int16).numpy().view(np.uint16) for x in xs], {"dtype": "bfloat16"}
    return [x.numpy() for x in xs], {}


def reference_bits(a) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def expected_compressed(world, codec):
    """What every rank must hold after each of ranks_compressed's collectives: {rank: [bytes]}."""
    want = {r: [] for r in range(world)}
    kw = dict(codec=codec, block=64, seed=0)
    for step, (coll, dtype, op, n) in enumerate(COMPRESSED_CASES):
        if coll == "ar":
            arrays, d = as_reference_arrays(world, n, step, dtype)
            outs = R.all_reduce(arrays, op, "twoshot", premul=0.5 if op == "premul_sum" else None, step=step,
                                **kw, **d)
        elif coll == "rs":
            arrays, d = as_reference_arrays(world, world * n, step, dtype)
            outs = R.reduce_scatter(arrays, op, "twoshot", step=step, **kw, **d)
        else:
            arrays, d = as_reference_arrays(world, n, step, dtype)
            outs = R.all_gather(arrays, step=step, **kw, **d)
        for r in range(world):
            want[r].append(reference_bits(outs[r]))
    residuals = [np.zeros(FEEDBACK_N, np.float32) for _ in range(world)]
    for k in range(FEEDBACK_STEPS):
        step = len(COMPRESSED_CASES) + k
        xs = [gaussian(r, FEEDBACK_N, 100 + k) for r in range(world)]
        outs, residuals = R.all_reduce(xs, "avg", "twoshot", step=step, residuals=residuals, **kw)
        for r in range(world):
            want[r].append(reference_bits(outs[r]))
    for r in range(world):
        want[r].append(reference_bits(residuals[r]))
    return want


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world,codecs", [(2, ("int8", "bf16")), (4, ("int4", "fp16"))])
def test_compressed_on_cuda_equals_reference(world, codecs, capfd):
    res = run_ranks(ranks_compressed, world, codecs, timeout=240)
    log = capfd.readouterr().err
    names = [f"{c} {d} {o or ''} n={n}" for c, d, o, n in COMPRESSED_CASES]
    names += [f"feedback step {k}" for k in range(FEEDBACK_STEPS)] + ["feedback residual"]
    for codec in codecs:
        for what in ("allreduce", "reduce_scatter", "allgather"):
            assert f"{what}/{codec} on cuda" in log, f"{what}/{codec} did not run on the device:\n{log[-3000:]}"
        want = expected_compressed(world, codec)
        for r in range(world):
            got = res[r][codec]
            wrong = [names[i] for i in range(len(names)) if not np.array_equal(got[i], want[r][i])]
            assert not wrong, f"{codec} p={world} rank {r}: differs from the reference in {wrong}"


# ---- DDP on a CUDA model ---------------------------------------------------------------------

def ranks_ddp(rank, world, store, codec, steps):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import zcoll.hooks
    device = init(rank, world, store, **({"compression": codec, "compress_min_bytes": 0} if codec else {}))
    try:
        gen = torch.Generator().manual_seed(0)
        data = torch.randn(512, 32, generator=gen)
        labels = (data @ torch.randn(32, 4, generator=gen)).argmax(dim=1)
        shard = slice(rank * 512 // world, (rank + 1) * 512 // world)
        data, labels = data[shard].to(device), labels[shard].to(device)
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).to(device)
        ddp = DDP(model, device_ids=[device.index])
        state = None
        if codec:
            state = zcoll.hooks.ErrorFeedbackState()
            ddp.register_comm_hook(state, zcoll.hooks.compressed_allreduce_hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.2)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(data), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        params = [bits(p) for p in model.parameters()]
        residual = float(sum(e.norm() for e in state.residuals.values())) if state else None
        on_gpu = state is None or all(e.is_cuda for e in state.residuals.values())
        return losses, params, residual, on_gpu
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("codec", [None, "int8"])
def test_ddp_on_a_cuda_model(codec):
    res = run_ranks(ranks_ddp, 2, codec, 30, timeout=150)
    losses, params0, residual, on_gpu = res[0]
    assert losses[-1] < 0.7 * losses[0], losses  # it learns
    for a, b in zip(params0, res[1][1]):  # every rank applied the same update
        np.testing.assert_array_equal(a, b)
    if codec:
        assert residual > 0 and on_gpu  # the error feedback ran, its state on the GPU


# ---- completion does not wait for the caller's later compute -----------------------------------

SLEEP_MS = 3000  # the compute queued after each collective; the collectives themselves take ms


def ranks_later_compute(rank, world, store):
    import torch.distributed as dist

    import zcoll
    device = init(rank, world, store)
    try:
        lossy = dist.new_group(backend="zcoll", pg_options=zcoll.Options(compression="int8", compress_min_bytes=0))
        # torch.cuda._sleep spins for a number of GPU clock cycles: measure the cycles of a ms
        torch.cuda._sleep(1000)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(50_000_000)
        end.record()
        end.synchronize()
        cycles = int(50_000_000 / start.elapsed_time(end) * SLEEP_MS)
        n = 1 << 20
        nxt, prv = (rank + 1) % world, (rank - 1) % world

        def all_reduce():
            x = torch.ones(n, device=device)
            return dist.all_reduce(x, async_op=True), lambda: bool((x == world).all())

        def reduce_scatter():
            x, o = torch.ones(n * world, device=device), torch.empty(n, device=device)
            return dist.reduce_scatter_tensor(o, x, async_op=True), lambda: bool((o == world).all())

        def recv():
            x, y = torch.full((n,), float(rank), device=device), torch.empty(n, device=device)
            sent = dist.isend(x, nxt)
            got = dist.irecv(y, prv)
            return got, lambda: sent.wait() and bool((y == prv).all())

        def all_reduce_int8():
            x = torch.ones(n, device=device)
            return (dist.all_reduce(x, group=lossy, async_op=True),
                    lambda: bool(torch.allclose(x, torch.full_like(x, world), rtol=1e-2)))

        def reduce_scatter_int8():
            x, o = torch.ones(n * world, device=device), torch.empty(n, device=device)
            return (dist.reduce_scatter_tensor(o, x, group=lossy, async_op=True),
                    lambda: bool(torch.allclose(o, torch.full_like(o, world), rtol=1e-2)))

        cases = [all_reduce, reduce_scatter, recv, all_reduce_int8, reduce_scatter_int8]
        out = {}
        for case in cases:
            torch.cuda.synchronize()
            dist.barrier()  # both ranks issue the collective together
            work, check = case()
            torch.cuda._sleep(cycles)  # the caller's compute, queued after the call
            t0 = time.monotonic()
            while not work.is_completed() and time.monotonic() - t0 < 3 * SLEEP_MS / 1000:
                time.sleep(0.0005)
            elapsed = time.monotonic() - t0
            busy = not torch.cuda.current_stream().query()  # the sleep still runs
            work.wait()
            torch.cuda.synchronize()
            out[case.__name__] = (elapsed, busy, check())
        return out
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(200)
def test_completion_does_not_wait_for_later_compute_on_the_stream():
    res = run_ranks(ranks_later_compute, 2, timeout=150)
    for r, cases in res.items():
        for name, (elapsed, busy, correct) in cases.items():
            assert correct, f"rank {r} {name}: wrong result"
            assert busy and elapsed < SLEEP_MS / 1000 / 2, (
                f"rank {r} {name}: the work completed after {elapsed:.3f} s, the caller's {SLEEP_MS} ms of "
                f"later compute {'still running' if busy else 'already done'}: completion waited for it")
