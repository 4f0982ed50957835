"""Random soak of zcoll's collectives and point-to-point against a reference every rank computes
itself, with no communication.

    python bench/soak.py [--ops 10000] [--nproc 3] [--transport shm|tcp] [--seed 0]
                         [--timeout 900] [--kinds all_reduce,broadcast,...] [--first I] [--json FILE]

Every rank draws the same sequence of operations from --seed: op i is planned from a generator
seeded with (seed, i) alone, and rank r's input to it from (seed, i, r), so each rank knows every
other rank's input and computes the expected result of every op locally (and any op can be
replayed on its own: --first I --ops 1). The ops, at random:

  all_reduce              SUM / MAX / MIN / PRODUCT on ints, SUM / AVG / MAX / MIN on floats;
                          sometimes a 0-dim tensor or a non-contiguous (transposed) view
  broadcast, reduce       random root, random op
  all_gather, all_gather_into_tensor (flat or stacked output), reduce_scatter_tensor
  all_to_all_single       random uneven split sizes, with zero rows to or from some ranks (some
                          ranks send or receive nothing), or equal splits (no split sizes)
  all_to_all              lists of tensors, some empty
  gather, scatter         random root
  barrier
  send_recv               one pair, blocking send / recv, tagged, sometimes from any source
  exchange                isend / irecv along a random permutation (every rank at once)
  batch                   batch_isend_irecv, every rank to every other, random sizes (some empty)

Sizes from empty (numel 0) to 64 KiB, about 1 op in 60 up to 4 MiB; dtypes float32, float64,
int32, int64, bfloat16. Reduced values are small integers (bfloat16: |x| <= 16) so every result is
exact; AVG is the contract's (docs/arithmetic.md): the exact sum divided by p in the accumulation
type, rounded once. Some collectives are issued with async_op=True and waited a few ops later.

A wrong result is recorded (op, rank, first differing element) and the soak goes on; an
exception stops that rank (the group is out of step after it) and is reported with its op. The
ranks run under a hard --timeout; on a hang every rank's current op is printed. Exit status 1 if
any op was wrong, any rank raised or the run timed out.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import random
import sys
import time
import traceback
import warnings
from collections import Counter
from datetime import timedelta

KINDS = {  # kind: weight
    "all_reduce": 20, "broadcast": 8, "reduce": 7, "all_gather": 6, "all_gather_into_tensor": 7,
    "reduce_scatter_tensor": 7, "all_to_all_single": 9, "all_to_all": 6, "gather": 5, "scatter": 5,
    "barrier": 3, "send_recv": 7, "exchange": 4, "batch": 3,
}
P2P = ("send_recv", "exchange", "batch")
DTYPES = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "bfloat16": 2}
INT_OPS = ("sum", "max", "min", "product")
FLOAT_OPS = ("sum", "avg", "max", "min")
SMALL_MAX = 64 << 10
BIG_MAX = 4 << 20


# ---- the plan: the same on every rank -----------------------------------------------------------

def pick_numel(rng: random.Random, itemsize: int, big_ok: bool = True) -> int:
    u = rng.random()
    if u < 0.08:
        return 0
    if u < 0.18:
        return rng.randint(1, 17)
    hi = BIG_MAX if big_ok and u > 0.983 else SMALL_MAX
    lo = SMALL_MAX if hi == BIG_MAX else itemsize
    nbytes = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return max(1, nbytes // itemsize)


def pick_shape(rng: random.Random, n: int) -> tuple:
    """1-D, or 2-D (rows, cols) where n has a divisor that makes a sensible one."""
    if n > 1 and rng.random() < 0.3:
        for cols in rng.sample((2, 3, 4, 5, 7, 8, 16, 64), 8):
            if n % cols == 0:
                return (n // cols, cols)
    return (n,)


def split_matrix(rng: random.Random, world: int, max_rows: int) -> list[list[int]]:
    """rows[i][j]: rows rank i sends to rank j; zeros at random, sometimes a whole row (a rank
    sends nothing) or a whole column (a rank receives nothing)."""
    m = [[0 if rng.random() < 0.3 else rng.randint(1, max_rows) for _ in range(world)] for _ in range(world)]
    if rng.random() < 0.3:
        m[rng.randrange(world)] = [0] * world
    if rng.random() < 0.3:
        j = rng.randrange(world)
        for row in m:
            row[j] = 0
    return m


def plan(seed: int, i: int, world: int, kinds: dict) -> dict:
    """Op i of the soak: everything about it except the data (see `data`)."""
    rng = random.Random(f"zcoll-soak/{seed}/{i}")
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    dtype = rng.choice(list(DTYPES))
    item = DTYPES[dtype]
    spec = {"i": i, "kind": kind, "dtype": dtype}
    is_int = dtype.startswith("int")
    if kind in ("all_reduce", "reduce", "reduce_scatter_tensor"):
        spec["op"] = rng.choice(INT_OPS if is_int else FLOAT_OPS)
    if kind in ("broadcast", "reduce", "gather", "scatter"):
        spec["root"] = rng.randrange(world)
    if kind in ("all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor", "gather", "scatter"):
        big_ok = kind not in ("scatter",)
        n = pick_numel(rng, item, big_ok)
        if kind in ("all_gather", "all_gather_into_tensor", "gather") and n * item > SMALL_MAX:
            n //= world  # the output is world x the input
        spec["shape"] = pick_shape(rng, n)
        if kind in ("all_reduce", "broadcast") and n == 1 and rng.random() < 0.5:
            spec["shape"] = ()
        if kind == "all_reduce" and len(spec["shape"]) == 2 and rng.random() < 0.5:
            spec["transposed"] = True
        if kind == "all_gather_into_tensor":
            spec["stacked"] = rng.random() < 0.5
    elif kind == "reduce_scatter_tensor":
        n = pick_numel(rng, item) // world
        spec["shape"] = pick_shape(rng, n)  # the output; the input is world x it along dim 0
    elif kind in ("all_to_all_single", "all_to_all"):
        n = pick_numel(rng, item, big_ok=False)
        cols = rng.choice((1, 1, 3, 16, 64))
        max_rows = max(1, n // (cols * world))
        if kind == "all_to_all_single" and rng.random() < 0.2:
            k = rng.randint(0, max_rows)
            spec["rows"] = [[k] * world for _ in range(world)]
            spec["equal"] = True  # no split sizes: torch splits dim 0 evenly
        else:
            spec["rows"] = split_matrix(rng, world, max_rows)
        spec["cols"] = cols
    elif kind == "send_recv":
        a, b = rng.sample(range(world), 2)
        spec.update(src=a, dst=b, tag=rng.choice((0, i % 100000)), any_source=rng.random() < 0.25)
        spec["shape"] = pick_shape(rng, pick_numel(rng, item))
        if spec["any_source"]:
            spec["tag"] = 200000 + i % 100000  # no other op's messages carry it
    elif kind == "exchange":
        perm = list(range(world))
        rng.shuffle(perm)
        spec["perm"] = perm  # rank r sends to perm[r] (none where perm[r] == r)
        spec["numel"] = [pick_numel(rng, item) for _ in range(world)]
        spec["tag"] = i % 100000
    elif kind == "batch":
        spec["numel"] = [[0 if a == b else (0 if rng.random() < 0.2 else pick_numel(rng, item, big_ok=False))
                          for b in range(world)] for a in range(world)]
        spec["order_seed"] = rng.randrange(1 << 30)
    # some collectives are left in flight and waited a few ops later
    spec["defer"] = kind not in P2P and kind != "barrier" and rng.random() < 0.15
    return spec


def describe(spec: dict) -> str:
    keys = [k for k in spec if k not in ("i", "kind", "defer", "order_seed")]
    parts = [f"{k}={spec[k]}" for k in keys]
    if spec.get("defer"):
        parts.append("async")
    return f"#{spec['i']} {spec['kind']}(" + ", ".join(parts) + ")"


# ---- the data and the reference -----------------------------------------------------------------

def value_range(dtype: str, op: str | None) -> tuple[int, int]:
    if op == "product":
        return -3, 3
    if dtype == "bfloat16":
        return -16, 16  # every partial sum of up to 16 ranks is exact in bfloat16
    if dtype == "int32":
        return (-2**20, 2**20) if op else (-2**31, 2**31 - 1)
    if dtype == "int64":
        return (-2**40, 2**40) if op else (-2**62, 2**62)
    return -1000, 1000


def data(seed, spec, rank, numel, salt=0):
    import numpy as np
    import torch

    lo, hi = value_range(spec["dtype"], spec.get("op"))
    g = np.random.default_rng([seed, spec["i"], rank, salt])
    return torch.from_numpy(g.integers(lo, hi, numel, endpoint=True, dtype=np.int64)).to(getattr(torch, spec["dtype"]))


def reduce_ref(xs: list, op: str, dtype):
    """The contract's result for inputs that are small integers: the exact reduction in the
    accumulation type (float32 for bfloat16), AVG divided once by p there, rounded once."""
    import torch

    acc = torch.float32 if dtype == torch.bfloat16 else dtype
    s = torch.stack([x.to(acc) for x in xs])
    if op in ("sum", "avg"):
        out = s.sum(0, dtype=acc)
        if op == "avg":
            out = out / torch.full_like(out, len(xs))  # IEEE division, element by element
    elif op == "product":
        out = s.prod(0, dtype=acc)
    elif op == "max":
        out = s.amax(0)
    else:
        out = s.amin(0)
    return out.to(dtype)


def mismatch(got, want, what="") -> str | None:
    import torch

    if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
        return f"{what}shape/dtype {tuple(got.shape)} {got.dtype}, want {tuple(want.shape)} {want.dtype}"
    if torch.equal(got, want):
        return None
    diff = (got != want).reshape(-1).nonzero()
    k = int(diff[0])
    return (f"{what}{len(diff)} of {want.numel()} elements differ; first at flat index {k}: "
            f"got {got.reshape(-1)[k].item()}, want {want.reshape(-1)[k].item()}")


def first(*results):
    return next((r for r in results if r), None)


TORCH_OPS = {}


def execute(spec, rank, world, seed, dist):
    """Issues op `spec` on this rank; returns (works to wait for, check() -> None or a message)."""
    import torch

    if not TORCH_OPS:
        TORCH_OPS.update(sum=dist.ReduceOp.SUM, avg=dist.ReduceOp.AVG, max=dist.ReduceOp.MAX,
                         min=dist.ReduceOp.MIN, product=dist.ReduceOp.PRODUCT)
    kind, dtype, i = spec["kind"], getattr(torch, spec["dtype"]), spec["i"]
    is_async = spec["defer"]
    shape = tuple(spec.get("shape", ()))
    numel = math.prod(shape)

    def inp(r, n=None, salt=0, shp=None):
        return data(seed, spec, r, numel if n is None else n, salt).reshape(shape if shp is None else shp)

    def sentinel(shp):
        return torch.full(shp, -7, dtype=dtype)

    def done(work):
        return [work] if work is not None else []

    if kind == "all_reduce":
        if spec.get("transposed"):
            x = inp(rank, shp=shape[::-1]).t()
            want = reduce_ref([inp(r, shp=shape[::-1]).t() for r in range(world)], spec["op"], dtype)
        else:
            x = inp(rank)
            want = reduce_ref([inp(r) for r in range(world)], spec["op"], dtype)
        w = dist.all_reduce(x, op=TORCH_OPS[spec["op"]], async_op=is_async)
        return done(w), lambda: mismatch(x, want)
    if kind == "broadcast":
        root = spec["root"]
        x = inp(rank) if rank == root else sentinel(shape)
        w = dist.broadcast(x, src=root, async_op=is_async)
        return done(w), lambda: mismatch(x, inp(root))
    if kind == "reduce":
        root = spec["root"]
        x = inp(rank)
        w = dist.reduce(x, dst=root, op=TORCH_OPS[spec["op"]], async_op=is_async)
        if rank != root:
            return done(w), lambda: None  # what a non-root holds afterwards is unspecified
        return done(w), lambda: mismatch(x, reduce_ref([inp(r) for r in range(world)], spec["op"], dtype))
    if kind == "all_gather":
        outs = [sentinel(shape) for _ in range(world)]
        w = dist.all_gather(outs, inp(rank), async_op=is_async)
        return done(w), lambda: first(*(mismatch(outs[r], inp(r), f"output[{r}]: ") for r in range(world)))
    if kind == "all_gather_into_tensor":
        out_shape = (world, *shape) if spec["stacked"] else ((world * shape[0], *shape[1:]) if shape else (world,))
        out = sentinel(out_shape)
        w = dist.all_gather_into_tensor(out, inp(rank), async_op=is_async)
        return done(w), lambda: mismatch(out, torch.stack([inp(r) for r in range(world)]).reshape(out_shape))
    if kind == "reduce_scatter_tensor":
        in_shape = (world * shape[0], *shape[1:])
        out = sentinel(shape)
        w = dist.reduce_scatter_tensor(out, inp(rank, n=world * numel, shp=in_shape), op=TORCH_OPS[spec["op"]],
                                       async_op=is_async)

        def check():
            full = reduce_ref([inp(r, n=world * numel, shp=in_shape) for r in range(world)], spec["op"], dtype)
            return mismatch(out, full[rank * shape[0]:(rank + 1) * shape[0]])
        return done(w), check
    if kind in ("all_to_all_single", "all_to_all"):
        rows, cols = spec["rows"], spec["cols"]

        def as2d(t, n_rows):
            return t.reshape(n_rows, cols) if cols > 1 else t.reshape(n_rows)

        def src_input(r):
            n_rows = sum(rows[r])
            return as2d(data(seed, spec, r, n_rows * cols), n_rows)

        def want_from(j):  # what rank j sends to this rank
            start = sum(rows[j][:rank])
            return src_input(j)[start:start + rows[j][rank]]

        if kind == "all_to_all_single":
            out = sentinel((sum(rows[j][rank] for j in range(world)), *((cols,) if cols > 1 else ())))
            if spec.get("equal"):
                w = dist.all_to_all_single(out, src_input(rank), async_op=is_async)
            else:
                w = dist.all_to_all_single(out, src_input(rank), [rows[j][rank] for j in range(world)], rows[rank],
                                           async_op=is_async)
            return done(w), lambda: mismatch(out, torch.cat([want_from(j) for j in range(world)]))
        mine = src_input(rank)
        ins = list(torch.split(mine, rows[rank]))
        ins = [t.clone() for t in ins]  # contiguous tensors of their own
        outs = [sentinel((rows[j][rank], *((cols,) if cols > 1 else ()))) for j in range(world)]
        w = dist.all_to_all(outs, ins, async_op=is_async)
        return done(w), lambda: first(*(mismatch(outs[j], want_from(j), f"output[{j}]: ") for j in range(world)))
    if kind == "gather":
        root = spec["root"]
        outs = [sentinel(shape) for _ in range(world)] if rank == root else None
        w = dist.gather(inp(rank), outs, dst=root, async_op=is_async)
        if rank != root:
            return done(w), lambda: None
        return done(w), lambda: first(*(mismatch(outs[r], inp(r), f"output[{r}]: ") for r in range(world)))
    if kind == "scatter":
        root = spec["root"]
        parts = [inp(root, salt=j + 1) for j in range(world)]
        out = sentinel(shape)
        w = dist.scatter(out, parts if rank == root else None, src=root, async_op=is_async)
        return done(w), lambda: mismatch(out, parts[rank])
    if kind == "barrier":
        w = dist.barrier(async_op=is_async)
        return done(w), lambda: None
    if kind == "send_recv":
        src, dst, tag = spec["src"], spec["dst"], spec["tag"]
        if rank == src:
            dist.send(inp(src), dst, tag=tag)
        elif rank == dst:
            got = sentinel(shape)
            sender = dist.recv(got, None if spec["any_source"] else src, tag=tag)
            return [], lambda: first(mismatch(got, inp(src)),
                                     None if sender == src else f"recv returned sender {sender}, want {src}")
        return [], lambda: None
    if kind == "exchange":
        perm, ns, tag = spec["perm"], spec["numel"], spec["tag"]
        inv = perm.index(rank)
        works = []
        got = None
        if inv != rank:
            got = sentinel((ns[inv],))
            works.append(dist.irecv(got, inv, tag=tag))
        if perm[rank] != rank:
            works.append(dist.isend(inp(rank, n=ns[rank], shp=(ns[rank],)), perm[rank], tag=tag))
        return works, lambda: None if got is None else mismatch(got, inp(inv, n=ns[inv], shp=(ns[inv],)))
    if kind == "batch":
        ns = spec["numel"]
        ops, gots = [], {}
        for peer in range(world):
            if peer == rank:
                continue
            ops.append(dist.P2POp(dist.isend, inp(rank, n=ns[rank][peer], salt=peer, shp=(ns[rank][peer],)), peer))
            gots[peer] = sentinel((ns[peer][rank],))
            ops.append(dist.P2POp(dist.irecv, gots[peer], peer))
        random.Random(spec["order_seed"] * 101 + rank).shuffle(ops)
        works = dist.batch_isend_irecv(ops) if ops else []
        return list(works), lambda: first(*(mismatch(gots[p], inp(p, n=ns[p][rank], salt=rank, shp=(ns[p][rank],)),
                                                     f"from rank {p}: ") for p in sorted(gots)))
    raise ValueError(kind)


# ---- one rank -----------------------------------------------------------------------------------

def rank_main(rank, world, port, settings, progress, results):
    try:
        import torch
        import torch.distributed as dist

        import zcoll  # noqa: F401  (registers the backend)

        warnings.filterwarnings("ignore", message=".*is deprecated", category=FutureWarning)
        torch.set_num_threads(1)
        store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=60))
        store.set(f"arrived/{rank}", "1")  # all spawned before the group's timeout starts to count
        store.wait([f"arrived/{r}" for r in range(world)], timedelta(seconds=120))
        dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=settings["pg_timeout"]))
        dist.barrier()
        seed, kinds = settings["seed"], settings["kinds"]
        wrong, count, pending = [], Counter(), []
        error = None
        start = time.perf_counter()

        where = [settings["first"]]  # the op being issued or waited for

        def settle():
            for spec, works, check in pending:
                where[0] = spec["i"]
                for w in works:
                    w.wait()
                msg = check()
                if msg:
                    wrong.append((spec["i"], describe(spec), msg))
            pending.clear()

        i = settings["first"]
        try:
            for i in range(settings["first"], settings["first"] + settings["ops"]):
                progress[rank] = i
                spec = plan(seed, i, world, kinds)
                if spec["kind"] in P2P or len(pending) >= 3:
                    settle()
                where[0] = i
                works, check = execute(spec, rank, world, seed, dist)
                pending.append((spec, works, check))
                if not spec["defer"]:
                    settle()
                count[spec["kind"]] += 1
            progress[rank] = i + 1
            settle()
            dist.barrier()
        except Exception as e:  # noqa: BLE001  (reported with the op; the group is out of step now)
            spec = plan(seed, where[0], world, kinds)
            in_flight = [describe(s) for s, _, _ in pending if s["i"] != where[0]]
            error = {"op": where[0], "describe": describe(spec), "type": type(e).__name__, "message": str(e)[:4000],
                     "in_flight": in_flight, "traceback": traceback.format_exc()[-3000:]}
        seconds = time.perf_counter() - start
        results.put(("done", rank, {"ops": sum(count.values()), "by_kind": dict(count), "wrong": wrong,
                                    "error": error, "seconds": seconds}))
        results.close()
        results.join_thread()  # flushed before os._exit
        if error is None:
            dist.destroy_process_group()
        os._exit(0)  # after an error the group cannot be torn down in order
    except BaseException:  # noqa: BLE001
        results.put(("crash", rank, traceback.format_exc()))
        results.close()
        results.join_thread()


# ---- the parent ---------------------------------------------------------------------------------

def soak(args, kinds) -> dict:
    import torch.distributed as dist

    os.environ["ZCOLL_TRANSPORT"] = args.transport  # the spawned ranks inherit it
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    progress = ctx.Array("q", [args.first] * args.nproc, lock=False)
    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    settings = {"seed": args.seed, "ops": args.ops, "first": args.first, "kinds": kinds, "pg_timeout": args.pg_timeout}
    t0 = time.perf_counter()
    procs = [ctx.Process(target=rank_main, args=(r, args.nproc, server.port, settings, progress, results), daemon=True)
             for r in range(args.nproc)]
    for p in procs:
        p.start()
    out, crashes = {}, {}
    deadline = time.monotonic() + args.timeout
    timed_out = None
    last_print = time.monotonic()
    try:
        while len(out) + len(crashes) < args.nproc:
            try:
                status, rank, value = results.get(timeout=1.0)
                (out if status == "done" else crashes)[rank] = value
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if now > deadline:
                timed_out = {r: int(progress[r]) for r in range(args.nproc) if r not in out and r not in crashes}
                break
            for r, p in enumerate(procs):
                if r not in out and r not in crashes and p.exitcode not in (None, 0):
                    try:  # it may have reported just before dying
                        status, rank, value = results.get(timeout=2.0)
                        (out if status == "done" else crashes)[rank] = value
                    except queue.Empty:
                        crashes[r] = f"exited with code {p.exitcode} without reporting"
            if args.progress and now - last_print > args.progress:
                last_print = now
                print(f"  ... {time.perf_counter() - t0:.0f} s: ops done per rank "
                      f"{[int(progress[r]) - args.first for r in range(args.nproc)]}", file=sys.stderr, flush=True)
    finally:
        for p in procs:
            p.join(timeout=5 if timed_out is None and not crashes else 0.1)
            if p.is_alive():
                p.kill()
                p.join(5)
    wall = time.perf_counter() - t0
    wrong = sorted({(i, d, r, m) for r, rep in out.items() for i, d, m in rep["wrong"]})
    errors = [dict(rep["error"], rank=r) for r, rep in sorted(out.items()) if rep["error"]]
    ops_done = min((rep["ops"] for rep in out.values()), default=0) if len(out) == args.nproc else \
        min(int(progress[r]) - args.first for r in range(args.nproc))
    by_kind = Counter(out[0]["by_kind"]) if 0 in out else Counter()
    wrong_kind = Counter(plan(args.seed, i, args.nproc, kinds)["kind"] for i in {w[0] for w in wrong})
    return {"transport": args.transport, "nproc": args.nproc, "seed": args.seed, "first": args.first,
            "ops_requested": args.ops, "ops": ops_done, "ops_wrong": len({w[0] for w in wrong}),
            "wrong": [{"op": i, "describe": d, "rank": r, "message": m} for i, d, r, m in wrong],
            "errors": errors, "crashes": crashes,
            "timed_out": None if timed_out is None else
            {r: {"op": i, "describe": describe(plan(args.seed, i, args.nproc, kinds))} for r, i in timed_out.items()},
            "seconds": max((rep["seconds"] for rep in out.values()), default=float("nan")), "wall_seconds": wall,
            "by_kind": dict(by_kind), "wrong_by_kind": dict(wrong_kind)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=10000)
    ap.add_argument("--nproc", type=int, default=3)
    ap.add_argument("--transport", choices=("shm", "tcp"), default="shm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0, help="index of the first op (replay op I: --first I --ops 1)")
    ap.add_argument("--kinds", default="all", help=f"comma-separated subset of: {', '.join(KINDS)}")
    ap.add_argument("--timeout", type=float, default=900.0, help="hard limit in seconds for the whole run")
    ap.add_argument("--pg-timeout", type=float, default=120.0, help="the group's timeout (seconds)")
    ap.add_argument("--progress", type=float, default=0.0, help="print progress every this many seconds (stderr)")
    ap.add_argument("--show", type=int, default=5, help="how many wrong ops to print")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.nproc < 2:
        ap.error("--nproc must be at least 2")
    kinds = dict(KINDS) if args.kinds == "all" else {k: KINDS[k] for k in args.kinds.split(",")}

    res = soak(args, kinds)
    print(f"soak: zcoll over {res['transport']}, {res['nproc']} ranks, seed {res['seed']}, ops "
          f"{args.first}..{args.first + args.ops - 1}")
    print(f"{'ops run':>8} {'ops wrong':>10} {'errors':>7} {'seconds':>8} {'wall s':>7}")
    print(f"{res['ops']:>8} {res['ops_wrong']:>10} {len(res['errors']) + len(res['crashes']):>7} "
          f"{res['seconds']:>8.1f} {res['wall_seconds']:>7.1f}")
    if res["by_kind"]:
        print("  per kind (ops run / wrong): " + ", ".join(
            f"{k} {res['by_kind'].get(k, 0)}/{res['wrong_by_kind'].get(k, 0)}" for k in kinds))
    for w in res["wrong"][:args.show]:
        print(f"WRONG on rank {w['rank']}: {w['describe']}: {w['message']}")
    if len(res["wrong"]) > args.show:
        print(f"... and {len(res['wrong']) - args.show} more wrong (rank, op) results")
    for e in res["errors"]:
        print(f"ERROR on rank {e['rank']} at {e['describe']}: {e['type']}: {e['message']}")
        if e["in_flight"]:
            print(f"  still in flight on that rank: {'; '.join(e['in_flight'])}")
    for r, tb in sorted(res["crashes"].items()):
        print(f"CRASH of rank {r}:\n{tb}")
    if res["timed_out"]:
        print(f"TIMEOUT after {args.timeout:g} s; ranks still running and their current op:")
        for r, t in sorted(res["timed_out"].items()):
            print(f"  rank {r}: {t['describe']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    bad = res["ops_wrong"] or res["errors"] or res["crashes"] or res["timed_out"] or res["ops"] < args.ops
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
