"""Shared memory a zcoll group holds on one host, by group size: each rank's segments (both lanes:
collectives and point-to-point) after a workload of every collective, the worst case (every
pair's ring allocated), and what the rings took before they were sized to the group and
allocated per pair (p rings of 4 MiB per rank and lane, all allocated at creation).

    python bench/shm_footprint.py [--worlds 2,8,32,64] [--json F]

Every rank is a process on this host (oversubscribed where the cores are fewer); the /dev/shm
column is what the filesystem says the group holds (statvfs before and after, in the parent).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from datetime import timedelta

MiB = 1 << 20


def workload(rank: int, world: int, port: int, results) -> None:
    import torch
    import torch.distributed as dist

    import zcoll
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=300))
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=300),
                            pg_options=zcoll.Options(transport="shm"))
    fresh = zcoll.shared_memory()
    store.add("fresh", 1)  # every rank measured before any sends (a sender allocates its ring in us)
    while store.add("fresh", 0) < world:
        time.sleep(0.01)
    for n in (1024, 64 << 10, 4 << 20):  # 4 KiB, 256 KiB, 16 MiB of float32: the tuner's schedules
        x = torch.ones(n)
        dist.all_reduce(x)
        assert x[0].item() == world
    out = torch.empty(world * 16384)
    dist.all_to_all_single(out, torch.ones(world * 16384))
    dist.broadcast(torch.ones(1 << 20), 0)
    got = torch.empty(1 << 18)
    for r in [dist.isend(torch.ones(1 << 18), (rank + 1) % world), dist.irecv(got, (rank - 1) % world)]:
        r.wait()
    dist.barrier()
    results.put((rank, fresh, zcoll.shared_memory()))
    store.get("measured")  # hold the memory until the parent has looked at /dev/shm
    dist.destroy_process_group()


def shm_used() -> int:
    fs = os.statvfs("/dev/shm")
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def measure(world: int, timeout: float) -> dict:
    import torch.distributed as dist
    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=300), wait_for_workers=False)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    before = shm_used()
    procs = [ctx.Process(target=workload, args=(r, world, server.port, results), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    got, deadline = {}, time.monotonic() + timeout
    try:
        while len(got) < world:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError(f"{world} ranks: {len(got)} reported; exit codes {[p.exitcode for p in procs]}")
            try:
                rank, fresh, after = results.get(timeout=1.0)
            except Exception:  # noqa: BLE001  (queue.Empty: look at the processes again)
                continue
            got[rank] = (fresh, after)
        held = shm_used() - before
        server.set("measured", "1")
        for p in procs:
            p.join(max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    after = [a for _, a in got.values()]
    ring = after[0]["collectives"]["ring_bytes"]
    header = after[0]["collectives"]["bytes"] - after[0]["collectives"]["rings_allocated"] * ring
    per_rank = sorted(a["bytes"] for a in after)
    return {"world": world, "ring_bytes": ring,
            "fresh_bytes": max(f["bytes"] for f, _ in got.values()),
            "median_bytes": per_rank[len(per_rank) // 2], "max_bytes": per_rank[-1],
            "worst_bytes": 2 * (header + (world - 1) * ring),  # every peer's ring, both lanes
            "before_bytes": 2 * (header + world * (4 * MiB)),  # p rings of 4 MiB, allocated at creation
            "dev_shm_bytes": held}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="2,8,32,64")
    ap.add_argument("--timeout", type=float, default=900, help="per group size")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rows = [measure(int(w), args.timeout) for w in args.worlds.split(",") if w]
    print(f"shared memory per rank (both lanes) after all_reduce 4 KiB/256 KiB/16 MiB, all_to_all, broadcast, "
          f"send/recv; {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'ring':>9} {'at creation':>12} {'after (median)':>15} {'after (max)':>12} "
          f"{'worst case':>11} {'before':>10} {'/dev/shm, group':>16}")
    for r in rows:
        print(f"{r['world']:>5} {r['ring_bytes'] / 1024:>6.0f} KiB {r['fresh_bytes'] / MiB:>8.2f} MiB "
              f"{r['median_bytes'] / MiB:>11.2f} MiB {r['max_bytes'] / MiB:>8.2f} MiB {r['worst_bytes'] / MiB:>7.1f} MiB "
              f"{r['before_bytes'] / MiB:>6.0f} MiB {r['dev_shm_bytes'] / MiB:>12.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
