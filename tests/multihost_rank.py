"""One rank of tests/test_multihost.py, run in its host's network namespace under its host's
hostname: joins a zcoll group as a user would (an init URL, no MASTER_ADDR, no
ZCOLL_SOCKET_IFNAME), runs every collective, checks each against zcoll.reference bit for bit,
and prints one JSON line: {"ok": ..., "transport": ..., "host_of": ..., "problems": [...]} or,
when the group cannot be made, {"error": type, "message": ..., "seconds": ...}."""
import argparse
import json
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

import zcoll
from zcoll import _C
from zcoll import reference as R

ap = argparse.ArgumentParser()
ap.add_argument("--init", default="env://")
ap.add_argument("--rank", type=int, help="default: RANK (torchrun)")
ap.add_argument("--world", type=int, help="default: WORLD_SIZE (torchrun)")
ap.add_argument("--timeout", type=float, default=60)
ap.add_argument("--fault", default="", help="die:<rank> (it exits after a barrier), silence:<host> (its "
                "ranks park and the test cuts the host's link) or mismatch:<rank> (it all-reduces a tensor "
                "of another size); the others run an all-reduce and report its error")
args = ap.parse_args()
rank = args.rank if args.rank is not None else int(os.environ["RANK"])
world = args.world if args.world is not None else int(os.environ["WORLD_SIZE"])



def report(obj):
    """One JSON line in one write: ranks that share a stdout (torchrun's) never interleave."""
    os.write(1, (json.dumps(obj) + "\n").encode())


start = time.monotonic()
try:
    dist.init_process_group("zcoll", init_method=args.init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=args.timeout))
except Exception as e:  # noqa: BLE001  (the test asserts on the type and the message)
    report({"error": [f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__],
            "message": str(e).split("\n")[0], "seconds": time.monotonic() - start})
    sys.exit(0)

backend = dist.group.WORLD._get_backend(torch.device("cpu"))
host_of = list(backend.host_of)
most = max(host_of.count(h) for h in host_of)  # ranks on the busiest host (the tuner's contention)
problems = []

if args.fault:
    kind, who = args.fault.split(":")
    who = int(who)
    store = dist.distributed_c10d._get_default_store()
    while isinstance(store, dist.PrefixStore):  # the init URL's TCPStore itself: the test reads it
        store = store.underlying_store
    dist.barrier()
    if kind == "die" and rank == who:
        store.set("death", repr(time.time()))
        os._exit(3)
    if kind == "silence":
        if host_of[rank] == who:
            store.set(f"parked/{rank}", "1")
            time.sleep(120)  # the test cuts this host off and kills it
            os._exit(0)
        store.wait(["cut"], timedelta(seconds=60))
    start = time.time()
    try:
        dist.all_reduce(torch.ones(128 if kind == "mismatch" and rank == who else 256))
        report({"error": None})
    except Exception as e:  # noqa: BLE001
        report({"error": type(e).__name__, "message": str(e).split("\n")[0], "t_error": time.time(),
                "waited": time.time() - start})
    os._exit(0)


def inputs(n, salt, dtype=np.float32):
    return [np.random.default_rng([r, n, salt]).standard_normal(n).astype(dtype) for r in range(world)]


def check(name, got, want):
    if not np.array_equal(np.asarray(got).view(np.uint8), np.asarray(want).view(np.uint8)):
        problems.append(name)


# all_reduce: the tuner's hierarchical (or flat, one rank per host) schedule, as the reference says
for salt, (n, op) in enumerate([(1000, "sum"), (200_000, "avg"), (3_000_000, "sum")]):
    xs = inputs(n, salt)
    x = torch.from_numpy(xs[rank].copy())
    dist.all_reduce(x, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.AVG)
    if backend.transport.startswith("shm+"):
        tuned = [_C.tune_two_level(x.nbytes, host_of, r) for r in range(world)]
        intra = [tuned[host_of.index(h)][0] for h in range(max(host_of) + 1)]
        want = R.all_reduce(xs, op, tuned[0][1], hosts=host_of, intra=intra)[0]
    else:
        want = R.all_reduce(xs, op, _C.tune("allreduce", x.nbytes, world, backend.transport, most)[0])[0]
    check(f"all_reduce {op} {n}", x.numpy(), want)

# copies: all_gather, all_gather_into_tensor, broadcast, all_to_all_single, p2p
parts = [torch.empty(5, dtype=torch.int64) for _ in range(world)]
dist.all_gather(parts, torch.arange(5) + 10 * rank)
check("all_gather", np.stack([p.numpy() for p in parts]), np.stack([np.arange(5) + 10 * r for r in range(world)]))
flat = torch.empty(world * 4)
dist.all_gather_into_tensor(flat, torch.full((4,), float(rank)))
check("all_gather_into_tensor", flat.numpy(), np.repeat(np.arange(world, dtype=np.float32), 4))
b = torch.full((7,), float(rank))
dist.broadcast(b, src=world - 1)
check("broadcast", b.numpy(), np.full(7, world - 1, np.float32))
a2a = torch.empty(world, dtype=torch.int32)
dist.all_to_all_single(a2a, torch.arange(world, dtype=torch.int32) + 100 * rank)
check("all_to_all_single", a2a.numpy(), (np.arange(world) * 100 + rank).astype(np.int32))
got = torch.empty(3)
reqs = [dist.isend(torch.full((3,), float(rank)), (rank + 1) % world), dist.irecv(got, (rank - 1) % world)]
for req in reqs:
    req.wait()
check("send/recv", got.numpy(), np.full(3, (rank - 1) % world, np.float32))

# reduce_scatter_tensor and reduce: two levels where the hosts allow (the reference says which)
two_level = backend.transport.startswith("shm+")
even = len({host_of.count(h) for h in host_of}) == 1


def tuned(collective, nbytes):
    """(intra per host, inter) of the tuner's two-level choice."""
    per_rank = [_C.tune_two_level(nbytes, host_of, r, collective) for r in range(world)]
    return [per_rank[host_of.index(h)][0] for h in range(max(host_of) + 1)], per_rank[0][1]


xs = inputs(world * 1000, 7)
out = torch.empty(1000)
dist.reduce_scatter_tensor(out, torch.from_numpy(xs[rank].copy()), op=dist.ReduceOp.AVG)
if two_level and even:
    intra, inter = tuned("reduce_scatter", xs[0].nbytes)
    want = R.reduce_scatter(xs, "avg", inter, hosts=host_of, intra=intra)
else:
    want = R.reduce_scatter(xs, "avg", _C.tune("reduce_scatter", xs[0].nbytes, world, backend.transport, most)[0])
check("reduce_scatter_tensor", out.numpy(), want[rank])
xs = inputs(5000, 8)
y = torch.from_numpy(xs[rank].copy())
dist.reduce(y, dst=world - 1)
if rank == world - 1:
    if two_level:
        intra, inter = tuned("reduce", xs[0].nbytes)
        want = R.reduce(xs, world - 1, "sum", inter, hosts=host_of, intra=intra)
    else:
        want = R.reduce(xs, world - 1, "sum", _C.tune("reduce", xs[0].nbytes, world, backend.transport, most)[0])
    check("reduce", y.numpy(), want)
dist.barrier()

report({"ok": not problems, "problems": problems, "transport": backend.transport, "host_of": host_of,
        "topology": backend.topology})
dist.destroy_process_group()
