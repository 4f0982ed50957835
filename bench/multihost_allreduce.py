"""All-reduce across hosts with several ranks each: a network namespace per host (its own
hostname), its link to the bridge limited with `tc ... tbf rate 1gbit` in both directions, ranks
joining by tcp:// init as users do (no MASTER_ADDR, no ZCOLL_SOCKET_IFNAME). Side by side in one
run, interleaved call by call: gloo, zcoll's flat ring over all ranks (ZCOLL_ALGO=allreduce:ring),
zcoll's default (hierarchical: shm inside a host, the network between), and the default with
int8 and int4 between hosts. Median seconds per float32 all-reduce, against the link bound of
the hierarchical schedule (each host sends (H-1)/H * 2 * n bytes over its link).

    python bench/multihost_allreduce.py [--hosts 2] [--per-host 2] [--mib 32,64] [--rate 1gbit]
                                        [--iters 5]

Needs root, iproute2 (ip, tc) and unshare; only the namespaces' own addresses are ever
targeted, and everything it creates is removed on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from shaped_allreduce import make_hosts  # noqa: E402

BRIDGE, SUBNET, NAMES = "zcbm0", "10.231.81", "zcoll-m"
CONFIGS = ["gloo", "flat ring", "default", "default int8", "default int4"]


def rate_bits(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, scale in units.items():
        if rate.lower().endswith(unit):
            return float(rate[: -len(unit)]) * scale
    return float(rate)


def worker(args):
    import numpy as np
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", init_method=args.init, rank=args.rank, world_size=args.world,
                            timeout=timedelta(seconds=600))
    groups = {
        "gloo": dist.new_group(backend="gloo", timeout=timedelta(seconds=600)),
        "flat ring": dist.new_group(backend="zcoll", pg_options=zcoll.Options(algo="allreduce:ring")),
        "default": dist.group.WORLD,
        "default int8": dist.new_group(backend="zcoll", pg_options=zcoll.Options(compression="int8")),
        "default int4": dist.new_group(backend="zcoll", pg_options=zcoll.Options(compression="int4")),
    }
    rows = []
    for mib in map(int, args.mib.split(",")):
        x = torch.randn(mib << 18, generator=torch.Generator().manual_seed(args.rank))
        exact = None
        times = {name: [] for name in CONFIGS}
        errors = {}
        for it in range(args.iters + 1):  # the first round warms up
            for name in CONFIGS:
                y = x.clone()
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(y, group=groups[name])
                seconds = time.perf_counter() - t0
                if it:
                    times[name].append(seconds)
                if name == "gloo" and exact is None:
                    exact = y.double()
                elif it == 1 and name.endswith(("int8", "int4")):
                    errors[name] = float((y.double() - exact).norm() / exact.norm())
        for name in CONFIGS:
            # the slowest rank's time is the collective's
            t = torch.tensor([float(np.median(times[name]))], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            rows.append({"mib": mib, "config": name, "seconds": t.item(), "relerr": errors.get(name)})
    if args.rank == 0:
        print(json.dumps({"rows": rows, "topology": dist.group.WORLD._get_backend(torch.device("cpu")).topology}),
              flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--per-host", type=int, default=2)
    ap.add_argument("--mib", default="32,64")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--bridge", default=BRIDGE, help=argparse.SUPPRESS)  # tests run beside real runs
    ap.add_argument("--subnet", default=SUBNET, help=argparse.SUPPRESS)
    ap.add_argument("--names", default=NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        return worker(args)
    if os.geteuid() != 0:
        sys.exit("multihost_allreduce.py needs root (network namespaces, tc, unshare)")
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still remove the namespaces
    world = args.hosts * args.per_host
    namespaces, undo = make_hosts(args.hosts, args.rate, args.bridge, args.subnet, args.names)
    start = time.monotonic()
    try:
        init = f"tcp://{args.subnet}.10:{random.randint(20000, 40000)}"  # rank 0 (host 0) runs the store
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "ZCOLL_", "GLOO_"))}
        env["GLOO_SOCKET_IFNAME"] = "eth0"  # gloo would otherwise pick the hostname's address
        procs = []
        for rank in range(world):
            h = rank // args.per_host
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", namespaces[h], "unshare", "--uts", "sh", "-c", f'hostname host{h} && exec "$0" "$@"',
                 sys.executable, __file__, "--mib", args.mib, "--iters", str(args.iters), "--rank", str(rank),
                 "--world", str(world), "--init", init],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        try:
            outs = [p.communicate(timeout=3000) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
            if p.returncode != 0:
                sys.exit(f"rank {rank} failed:\n{err[-3000:]}")
        report = json.loads(outs[0][0].strip().splitlines()[-1])
    finally:
        undo()
    link = rate_bits(args.rate)
    h = args.hosts
    print(f"float32 all-reduce, {report['topology']}, each host's link {args.rate} (tbf, both directions); "
          f"median of {args.iters} interleaved calls, the slowest rank's; run took {time.monotonic() - start:.0f} s")
    print(f"{'MiB':>4} {'config':>13} {'seconds':>8} {'x flat':>7} {'x default':>9} {'of bound':>9} {'relerr':>9}")
    for mib in map(int, args.mib.split(",")):
        rows = {r["config"]: r for r in report["rows"] if r["mib"] == mib}
        bound = (h - 1) / h * 2 * (mib << 20) * 8 / link
        for name in CONFIGS:
            r = rows[name]
            err = f"{r['relerr']:9.2e}" if r["relerr"] is not None else f"{'':>9}"
            print(f"{mib:>4} {name:>13} {r['seconds']:8.3f} {rows['flat ring']['seconds'] / r['seconds']:7.2f} "
                  f"{rows['default']['seconds'] / r['seconds']:9.2f} {bound / r['seconds']:9.2f} {err}")
        print(f"{mib:>4} {'link bound':>13} {bound:8.3f}")


if __name__ == "__main__":
    main()
