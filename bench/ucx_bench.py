"""zcoll over UCX next to zcoll's own tcp (docs/ucx.md), side by side in one run.

shaped (root): one rank per network namespace, every link `tbf`-shaped (default 1 Gbit, both
directions); float32 all-reduce from 4 KiB to 64 MiB over zcoll tcp, zcoll ucx (UCX_TLS=tcp
unless set) and gloo, interleaved per size: median seconds, ucx's time over tcp's and bus
bandwidth as a fraction of the link rate.

loopback: two processes on this host, nothing shaped: 4 KiB ping-pong latency (half the round
trip) and 64 MiB streaming bandwidth at the transport level, zcoll tcp vs zcoll ucx, next to
ucx_perftest's tag_lat / tag_bw for the same UCX transport (the engine's floor).

    python bench/ucx_bench.py shaped [--world 2] [--rate 1gbit] [--sizes 4096,...] [--iters 5]
    python bench/ucx_bench.py loopback [--iters 5]

Needs the UCX transport (pip install libucx-cu12 before building zcoll). shaped needs root and
iproute2; only the namespaces' own addresses are targeted, and they are removed on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from shaped_allreduce import make_hosts, run_ranks  # noqa: E402  (what every shaped bench shares)

BRIDGE, SUBNET = "zcbu0", "10.231.83"
SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
LINK_RATES = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def rate_bits(rate: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)", rate.lower())
    if not m:
        sys.exit(f"--rate {rate!r}: expected a tc rate such as 1gbit or 500mbit")
    return float(m.group(1)) * LINK_RATES[m.group(2)]


# ---- shaped: all-reduce across namespaces ------------------------------------------------------

def shaped_worker(args):
    import torch
    import torch.distributed as dist

    import zcoll
    from zcoll.timing import median_seconds
    store = dist.TCPStore(f"{args.subnet}.1", args.port, None, False, timedelta(seconds=120))
    dist.init_process_group("zcoll", store=store, rank=args.rank, world_size=args.world,
                            timeout=timedelta(seconds=300), pg_options=zcoll.Options(transport="tcp"))
    groups = {"zcoll tcp": dist.group.WORLD,
              "zcoll ucx": dist.new_group(backend="zcoll", pg_options=zcoll.Options(transport="ucx")),
              "gloo": dist.new_group(backend="gloo")}
    transports = {name: g._get_backend(torch.device("cpu")).transport for name, g in groups.items() if "zcoll" in name}
    rows = []
    for nbytes in args.sizes:
        x = torch.ones(nbytes // 4)
        for name, group in groups.items():  # interleaved per size: the same machine state for each
            dist.barrier()
            seconds = median_seconds(lambda: dist.all_reduce(x, group=group), args.iters, 1)
            rows.append({"bytes": nbytes, "backend": name, "seconds": seconds})
    if args.rank == 0:
        print(json.dumps({"rows": rows, "transports": transports}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def shaped(args):
    if os.geteuid() != 0:
        sys.exit("ucx_bench.py shaped needs root (network namespaces, tc)")
    import torch.distributed as dist
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still remove the namespaces
    link = rate_bits(args.rate)
    hosts, undo = make_hosts(args.world, args.rate, args.bridge, args.subnet, "zcoll-u")
    start = time.monotonic()
    try:
        server = dist.TCPStore(f"{args.subnet}.1", 0, None, True, timedelta(seconds=120), wait_for_workers=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "ZCOLL_"))}
        env.update(MASTER_ADDR=f"{args.subnet}.1", GLOO_SOCKET_IFNAME="eth0")
        env.setdefault("UCX_TLS", "tcp")
        base = [sys.executable, __file__, "shaped", "--world", str(args.world), "--iters", str(args.iters),
                "--sizes", ",".join(map(str, args.sizes)), "--subnet", args.subnet, "--port", str(server.port)]
        result = run_ranks([["ip", "netns", "exec", ns, *base, "--rank", str(r)] for r, ns in enumerate(hosts)],
                           [env] * len(hosts), 1800)
    finally:
        undo()
    rows = result["rows"]
    p = args.world
    print(f"float32 all-reduce, {p} ranks, one per network namespace, links {args.rate} (tbf, both directions); "
          f"zcoll transports {result['transports']}, UCX_TLS={env['UCX_TLS']}; median of {args.iters}; "
          f"run took {time.monotonic() - start:.0f} s")
    print(f"{'bytes':>10} {'tcp s':>10} {'ucx s':>10} {'gloo s':>10} {'ucx/tcp':>8} {'tcp link':>9} "
          f"{'ucx link':>9} {'gloo link':>9}")
    table = []
    for nbytes in args.sizes:
        t = {r["backend"]: r["seconds"] for r in rows if r["bytes"] == nbytes}
        bus = 2 * (p - 1) / p * nbytes * 8  # bits each rank sends (and receives) in a ring
        frac = {k: bus / v / link for k, v in t.items()}
        table.append({"bytes": nbytes, **{f"{k} s": v for k, v in t.items()}, "ucx/tcp": t["zcoll ucx"] / t["zcoll tcp"],
                      **{f"{k} link": v for k, v in frac.items()}})
        print(f"{nbytes:>10} {t['zcoll tcp']:>10.5f} {t['zcoll ucx']:>10.5f} {t['gloo']:>10.5f} "
              f"{t['zcoll ucx'] / t['zcoll tcp']:>8.3f} {frac['zcoll tcp']:>9.1%} {frac['zcoll ucx']:>9.1%} "
              f"{frac['gloo']:>9.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": "shaped", "rate": args.rate, "world": p, "rows": table}, indent=1))


# ---- loopback: the transports themselves, and ucx_perftest ------------------------------------

def loopback_worker(args):
    import numpy as np
    import torch
    import torch.distributed as dist

    from zcoll import _C
    from zcoll.config import ucx_library
    store = dist.TCPStore("127.0.0.1", args.port, None, False, timedelta(seconds=120))
    rank, peer = args.rank, 1 - args.rank
    out = {}
    for kind in ("tcp", "ucx"):
        t = _C.Transport(kind, store, f"loop-{kind}", rank, 2, timeout=60.0,
                         ucx_library=ucx_library() if kind == "ucx" else "")
        small = np.ones(4096, np.uint8)
        lat = []
        for _ in range(args.iters):  # ping-pong: half the round trip, median over batches
            n = 1000
            t0 = time.perf_counter()
            for _ in range(n):
                if rank == 0:
                    t.wait(t.isend(peer, 1, small))
                    t.wait(t.irecv(peer, 2, small))
                else:
                    t.wait(t.irecv(peer, 1, small))
                    t.wait(t.isend(peer, 2, small))
            lat.append((time.perf_counter() - t0) / n / 2)
        big = np.ones(64 << 20, np.uint8)
        ack = np.zeros(1, np.uint8)
        window = 4
        bw = []
        for _ in range(args.iters):  # streaming: `window` messages in flight, then an ack
            t0 = time.perf_counter()
            if rank == 0:
                for r in [t.isend(peer, 3, big) for _ in range(window)]:
                    t.wait(r)
                t.wait(t.irecv(peer, 4, ack))
            else:
                for r in [t.irecv(peer, 3, big) for _ in range(window)]:
                    t.wait(r)
                t.wait(t.isend(peer, 4, ack))
            bw.append(window * big.nbytes / (time.perf_counter() - t0))
        out[kind] = {"latency_us": float(np.median(lat)) * 1e6, "bandwidth_gbs": float(np.median(bw)) / 1e9}
        del t
    if rank == 0:
        print(json.dumps(out), flush=True)
    del torch


def perftest(test: str, size: int, iters: int, env: dict) -> float | None:
    """ucx_perftest's figure for `test`: tag_lat -> median one-way latency (us), tag_bw -> overall
    bandwidth (GB/s); None where ucx_perftest is not found."""
    import importlib.util
    spec = importlib.util.find_spec("libucx")
    wheel = Path(spec.origin).parent if spec else None
    exe = str(wheel / "bin" / "ucx_perftest") if wheel and (wheel / "bin" / "ucx_perftest").exists() \
        else shutil.which("ucx_perftest")
    if exe is None:
        return None
    env = dict(env)
    if wheel:
        env["LD_LIBRARY_PATH"] = f"{wheel / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [exe, "-t", test, "-s", str(size), "-n", str(iters), "-p", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(50):  # the server listens within moments
            client = subprocess.run([exe, "127.0.0.1", *cmd[1:]], capture_output=True, text=True, env=env, timeout=120)
            if client.returncode == 0:
                break
            time.sleep(0.1)
        else:
            return None
    finally:
        server.wait(timeout=60) if server.poll() is None else None
    final = [line for line in client.stdout.splitlines() if line.startswith("Final:")][-1].split()
    # Final: iterations, latency 50%ile/average/overall (us), bandwidth average/overall (MiB/s), ...
    return float(final[2]) if test == "tag_lat" else float(final[6]) * (1 << 20) / 1e9


def loopback(args):
    import torch.distributed as dist
    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=120), wait_for_workers=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZCOLL_")}
    env.setdefault("UCX_TLS", "tcp")
    base = [sys.executable, __file__, "loopback", "--iters", str(args.iters), "--port", str(server.port)]
    got = run_ranks([[*base, "--rank", str(r)] for r in range(2)], [env] * 2, 900)
    got["ucx_perftest"] = {"latency_us": perftest("tag_lat", 4096, 10000, env),
                           "bandwidth_gbs": perftest("tag_bw", 64 << 20, 20, env)}
    print(f"2 processes on this host, UCX_TLS={env['UCX_TLS']}; zcoll medians of {args.iters} batches")
    print(f"{'':>14} {'4 KiB latency us':>17} {'64 MiB GB/s':>12}")
    for name, key in (("zcoll tcp", "tcp"), ("zcoll ucx", "ucx"), ("ucx_perftest", "ucx_perftest")):
        lat, bw = got[key]["latency_us"], got[key]["bandwidth_gbs"]
        print(f"{name:>14} {'n/a' if lat is None else f'{lat:.1f}':>17} {'n/a' if bw is None else f'{bw:.2f}':>12}")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": "loopback", **got}, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("shaped", "loopback"))
    ap.add_argument("--world", type=int, default=2, help="shaped: ranks, one per namespace (default 2)")
    ap.add_argument("--rate", default="1gbit", help="shaped: each link's tbf rate (default 1gbit)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="shaped: all-reduce sizes in bytes")
    ap.add_argument("--iters", type=int, default=5, help="timed calls (shaped) or batches (loopback) per point")
    ap.add_argument("--json", metavar="FILE", help="write the table as JSON")
    ap.add_argument("--bridge", default=BRIDGE, help=f"shaped: the bridge to make (default {BRIDGE})")
    ap.add_argument("--subnet", default=SUBNET, help=f"shaped: the /24 of the namespaces (default {SUBNET})")
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    if any(s <= 0 or s % 4 for s in args.sizes):
        ap.error("--sizes: positive multiples of 4 bytes (float32 elements)")
    if args.rank is not None:
        return shaped_worker(args) if args.mode == "shaped" else loopback_worker(args)
    return shaped(args) if args.mode == "shaped" else loopback(args)


if __name__ == "__main__":
    main()
