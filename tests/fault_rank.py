"""One rank of a fault scenario (tests/test_failures.py, bench/death_to_error.py).

Every rank joins a group of --world through the parent's TCPStore, runs --scenario, and prints
one JSON line: what it saw (the error's type and message, when it raised, when the next
collective raised) or its results. Rank --victim is the one that dies, stops or lags, as the
scenario says; it records the moment it dies under the store key "death".
"""
import argparse
import json
import os
import signal
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--rank", type=int, required=True)
p.add_argument("--world", type=int, required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--scenario", required=True)
p.add_argument("--victim", type=int, default=1)
p.add_argument("--how", choices=("exit", "sigkill"), default="exit")
p.add_argument("--backend", default="zcoll")
p.add_argument("--timeout", type=float, default=30.0)
args = p.parse_args()
rank, world, victim = args.rank, args.world, args.victim
if args.backend == "zcoll":
    import zcoll  # noqa: F401  (registers the backend)


def report(obj):
    """One JSON line in one write."""
    obj["rank"] = rank
    os.write(1, (json.dumps(obj) + "\n").encode())


def die(store):
    store.set("death", repr(time.time()))
    if args.how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


def failure(e, since=None):
    return {"error": type(e).__name__, "message": str(e).split("\n")[0][:4000], "t_error": time.time(),
            "waited": None if since is None else time.time() - since}


store = dist.TCPStore("127.0.0.1", args.port, None, False, timedelta(seconds=60))
timeout = timedelta(seconds=args.timeout)
scenario = args.scenario

if scenario in ("bootstrap", "shm_bootstrap") and rank == victim:
    # zcoll exits once its liveness is up / once its shm segment is published
    os.environ["ZCOLL_TEST_FAULT"] = "exit_in_" + scenario
    store.set("death", repr(time.time()))
try:
    dist.init_process_group(args.backend, store=store, rank=rank, world_size=world, timeout=timeout)
except Exception as e:  # noqa: BLE001
    report(failure(e))
    sys.exit(0)


def small():
    return torch.ones(256)


def next_collective():
    """After a failure: the next collective must raise too, and fast."""
    start = time.time()
    try:
        dist.all_reduce(small())
    except Exception as e:  # noqa: BLE001
        return {"next_error": type(e).__name__, "next_seconds": time.time() - start}
    return {"next_error": None, "next_seconds": time.time() - start}


def survive(fn):
    start = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        out = failure(e, start)
        out.update(next_collective())
        report(out)
        return
    report({"error": None})


if scenario in ("idle", "forked"):
    dist.barrier()
    if rank == victim:
        if scenario == "forked" and os.fork() == 0:  # a child (a DataLoader worker) outlives it
            time.sleep(60)
            os._exit(0)
        die(store)
    time.sleep(0.5)
    survive(lambda: dist.all_reduce(small()))

elif scenario == "small":
    def loop():
        for i in range(100000):
            if rank == victim and i == 50:
                dist.all_reduce(small(), async_op=True)
                die(store)
            dist.all_reduce(small())
    survive(loop)

elif scenario == "large":
    big = torch.ones(16 << 20)  # 64 MiB of float32
    dist.barrier()
    if rank == victim:
        dist.all_reduce(big, async_op=True)
        time.sleep(0.01)
        die(store)
    survive(lambda: dist.all_reduce(big))

elif scenario == "p2p":
    dist.barrier()
    if rank == victim:
        time.sleep(0.2)
        die(store)
    survive(lambda: dist.recv(small(), src=victim))

elif scenario == "stopped":  # the parent stops the victim (SIGSTOP) once it says "stopping"
    dist.barrier()
    if rank == victim:
        store.set("stopping", "1")
        time.sleep(3600)
    store.wait(["stopping"])
    time.sleep(0.3)
    survive(lambda: dist.all_reduce(small()))

elif scenario == "behind":  # the victim is alive but late to the collective
    dist.all_reduce(small())
    others = [f"reported/{r}" for r in range(world) if r != victim]
    if rank == victim:
        store.wait(others, timedelta(seconds=120))
        report({"error": None})
    else:
        start = time.time()
        try:
            dist.all_reduce(small())
            report({"error": None})
        except Exception as e:  # noqa: BLE001
            report(failure(e, start))
        store.set(f"reported/{rank}", "1")
        store.wait(others, timedelta(seconds=120))  # nobody leaves while another still surveys
    os._exit(0)  # the group is broken: no orderly teardown

elif scenario == "train":  # healthy work with idle gaps (PID namespaces, strangers)
    total = 0.0
    for i in range(6):
        t = torch.full((1000,), float(rank + i))
        dist.all_reduce(t)
        total += float(t[0])
        if i % 2:
            time.sleep(0.3)
    big = torch.arange(1 << 18, dtype=torch.float32)  # 1 MiB: single copy where it is allowed
    dist.all_reduce(big)
    obj = [None] * world
    dist.all_gather_object(obj, os.getpid())
    report({"error": None, "total": total, "pids": obj, "big_ok": bool(torch.equal(big, torch.arange(1 << 18) * world)),
            "single_copy": zcoll.shared_memory()["collectives"] if args.backend == "zcoll" else None})

elif scenario == "roots":  # ranks disagree on the root of a broadcast
    t = torch.full((8,), float(rank))
    survive(lambda: dist.broadcast(t, src=0 if rank == 0 else 1))

elif scenario == "shrink":  # the victim dies mid-training; the others shrink and go on
    steps_before = 0
    try:
        for i in range(1000):
            if rank == victim and i == 5:
                die(store)
            dist.all_reduce(small())
            steps_before += 1
    except Exception as e:  # noqa: BLE001
        err = failure(e)
    start = time.time()
    dist.distributed_c10d.shrink_group([victim])
    shrink_seconds = time.time() - start
    t = torch.full((4,), float(rank))
    dist.all_reduce(t)
    survivors = [r for r in range(world) if r != victim]
    report({"error": err["error"], "message": err["message"], "steps_before": steps_before,
            "shrink_seconds": shrink_seconds, "new_rank": dist.get_rank(), "new_world": dist.get_world_size(),
            "sum": float(t[0]), "want": float(sum(survivors))})
    dist.destroy_process_group()
    sys.exit(0)

elif scenario == "checksum":  # collectives with ZCOLL_CHECKSUM=1 (and maybe a corrupting link)
    def work():
        results = []
        for n in (0, 7, 1000, 300_000):
            t = torch.arange(n, dtype=torch.float64) + rank  # float64: every sum below is exact
            dist.all_reduce(t)
            results.append(float(t.sum()))
            out = [torch.empty(n, dtype=torch.float64) for _ in range(world)]
            dist.all_gather(out, torch.full((n,), float(rank), dtype=torch.float64))
            results.append(float(sum(o.sum() for o in out)))
            b = torch.full((n,), float(rank), dtype=torch.float64)
            dist.broadcast(b, src=world - 1)
            results.append(float(b.sum()))
        report({"error": None, "results": results})
    try:
        work()
    except Exception as e:  # noqa: BLE001
        report(failure(e))

else:
    raise SystemExit(f"unknown scenario {scenario}")

os._exit(0)  # after a failure the group cannot be torn down in order: leave at once
