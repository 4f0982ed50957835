"""Compressed all-reduce on shaped links: every rank in its own network namespace, joined by veth
pairs on a bridge, each link limited with `tc ... tbf rate 1gbit` in both directions; zcoll
forced to tcp. Side by side in one run: zcoll uncompressed / bf16 / int8 / int4 (ring and
two-shot) and gloo, median seconds per float32 all-reduce, speed-up over zcoll uncompressed and
effective bus bandwidth (uncompressed bytes moved per rank, 2(p-1)/p * size, over time).

    python bench/shaped_allreduce.py [--world 4] [--mib 64] [--rate 1gbit] [--iters 3]
                                     [--codecs none,bf16,int8,int4] [--algos ring,twoshot]

Needs root and iproute2 (ip, tc); only the namespaces' own addresses are ever targeted, and
everything it creates is removed on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

BRIDGE, SUBNET = "zcbs0", "10.231.78"


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)


def make_hosts(world: int, rate: str | None, bridge: str = BRIDGE, subnet: str = SUBNET, names: str = "zcoll-b"):
    """A bridge (`subnet`.1) and one namespace per rank (`subnet`.10+i on its eth0); with `rate`,
    tbf on both ends of every veth. Returns (namespaces, undo); on failure removes what it made
    and re-raises. tests/test_netns.py uses it too."""
    made, tag = [], os.getpid() % 10000

    def undo():
        for kind, name in reversed(made):
            sh("ip", kind, "del", name, check=False)

    def tbf(dev):  # the link's rate: the host end shapes traffic in, eth0 inside shapes it out
        return ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]

    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        made.append(("link", bridge))
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        namespaces = []
        for i in range(world):
            ns, veth = f"{names}{tag}-{i}", f"zcv{bridge[-2:]}{tag}{i}"
            sh("ip", "netns", "add", ns)
            made.append(("netns", ns))
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            made.append(("link", veth))
            sh("ip", "link", "set", veth, "master", bridge)
            sh("ip", "link", "set", veth, "up")
            inside = [["ip", "addr", "add", f"{subnet}.{10 + i}/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                      ["ip", "link", "set", "lo", "up"]]
            if rate:
                sh(*tbf(veth))
                inside.append(tbf("eth0"))
            for cmd in inside:
                sh("ip", "netns", "exec", ns, *cmd)
            namespaces.append(ns)
    except BaseException:
        undo()
        raise
    return namespaces, undo


def run_ranks(commands: list[list[str]], envs: list[dict], timeout: float):
    """Runs one process per rank (`commands[r]` with `envs[r]`), killing them all on a timeout or
    an error; exits naming the first rank that failed, else returns rank 0's result: the JSON of
    the last line it printed. The shaped benches share it (bench/ucx_bench.py, ...)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for cmd, env in zip(commands, envs)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for r, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            sys.exit(f"rank {r} failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def worker(args):
    import numpy as np
    import torch
    import torch.distributed as dist

    import zcoll
    from zcoll.timing import median_seconds
    store = dist.TCPStore(f"{SUBNET}.1", args.port, None, False, timedelta(seconds=120))
    dist.init_process_group("zcoll", store=store, rank=args.rank, world_size=args.world,
                            timeout=timedelta(seconds=300), pg_options=zcoll.Options(transport="tcp"))
    x = torch.ones(args.mib << 18)
    rows = []
    configs = [(c, a) for c in args.codecs.split(",") for a in args.algos.split(",")] + [("gloo", "-")]
    for codec, algo in configs:
        if codec == "gloo":
            group = dist.new_group(backend="gloo", timeout=timedelta(seconds=300))
        else:
            group = dist.new_group(backend="zcoll", timeout=timedelta(seconds=300), pg_options=zcoll.Options(
                transport="tcp", compression=codec, algo=f"allreduce:{algo}"))
        dist.barrier()
        seconds = median_seconds(lambda: dist.all_reduce(x, group=group), args.iters, 1)
        rows.append({"codec": codec, "algo": algo, "seconds": seconds})
    if args.rank == 0:
        print(json.dumps(rows), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    del np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--codecs", default="none,bf16,int8,int4")
    ap.add_argument("--algos", default="ring,twoshot")
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        return worker(args)
    if os.geteuid() != 0:
        sys.exit("shaped_allreduce.py needs root (network namespaces, tc)")
    import signal

    import torch.distributed as dist
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still remove the namespaces
    hosts, undo = make_hosts(args.world, args.rate)
    try:
        server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=120), wait_for_workers=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "ZCOLL_"))}
        env["MASTER_ADDR"] = f"{SUBNET}.1"
        env["GLOO_SOCKET_IFNAME"] = "eth0"  # gloo would otherwise pick the hostname's address
        base = [sys.executable, __file__, "--world", str(args.world), "--mib", str(args.mib), "--iters",
                str(args.iters), "--codecs", args.codecs, "--algos", args.algos, "--port", str(server.port)]
        start = time.monotonic()
        rows = run_ranks([["ip", "netns", "exec", ns, *base, "--rank", str(r)] for r, ns in enumerate(hosts)],
                         [env] * len(hosts), 1800)
    finally:
        undo()
    nbytes = args.mib << 20
    bus = 2 * (args.world - 1) / args.world * nbytes
    base_s = {r["algo"]: r["seconds"] for r in rows if r["codec"] == "none"}
    print(f"{args.mib} MiB float32 all-reduce, {args.world} ranks in network namespaces, links {args.rate} "
          f"(tbf, both directions), zcoll over tcp; median of {args.iters}; run took {time.monotonic() - start:.0f} s")
    print(f"{'backend':>8} {'codec':>6} {'algo':>8} {'seconds':>9} {'vs none':>8} {'busbw Gbit/s':>13}")
    for r in rows:
        ref = base_s.get(r["algo"]) or base_s.get("ring")
        speed = f"{ref / r['seconds']:8.2f}" if ref and r["codec"] != "gloo" else f"{'':>8}"
        print(f"{'gloo' if r['codec'] == 'gloo' else 'zcoll':>8} {'-' if r['codec'] == 'gloo' else r['codec']:>6} "
              f"{r['algo']:>8} {r['seconds']:9.3f} {speed} {bus * 8 / r['seconds'] / 1e9:13.2f}")


if __name__ == "__main__":
    main()
