"""Where single copy pays on shm: 2 ranks exchange a message (each sends one to the other and
receives one, as a sendrecv does) through two shm transports in the same processes, one sending
everything through the rings and one reading large messages from the sender's memory
(ZCOLL_SHM_SINGLE_COPY_BYTES; csrc/transport/shm/shm_transport.cc), alternating per size so
that both see the same machine. Prints the median exchange time of each and their ratio; the
default threshold is where the ratio turns in single copy's favour.

    python bench/single_copy.py [--sizes 4K,16K,...] [--iters 200] [--bind]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from multiproc import run_ranks  # noqa: E402
from transports import open_transport  # noqa: E402


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


def exchange_times(t, peer, out, got, iters, tag):
    times = []
    for i in range(iters):
        start = time.perf_counter()
        r = t.irecv(peer, tag + i, got)
        s = t.isend(peer, tag + i, out)
        t.wait(s)
        t.wait(r)
        times.append(time.perf_counter() - start)
    return times


def rank_main(rank, world, store, sizes, iters, bind):
    if bind:
        os.sched_setaffinity(0, {rank % os.cpu_count()})
    rings = open_transport("shm", rank, world, store, prefix="rings", shm_single_copy_bytes=0)
    single = open_transport("shm", rank, world, store, prefix="single", shm_single_copy_bytes=1)
    peer = 1 - rank
    rows = []
    for n in sizes:
        out = np.full(n, rank, np.uint8)
        got = np.empty(n, np.uint8)
        reps = max(5, min(iters, (256 << 20) // max(n, 1)))
        med = {}
        for name, t in (("rings", rings), ("single", single)):
            exchange_times(t, peer, out, got, 3, 1 << 20)  # warm-up: rings allocated, pages mapped
        samples = {"rings": [], "single": []}
        for round_ in range(4):  # alternate, so both see the same moments of a noisy machine
            for name, t in (("rings", rings), ("single", single)):
                samples[name] += exchange_times(t, peer, out, got, max(1, reps // 4), (round_ + 2) << 20)
        for name in samples:
            med[name] = statistics.median(samples[name])
        assert np.all(got == peer)
        rows.append((n, med["rings"], med["single"]))
    assert single.shared_memory()["single_copy_messages"] > 0
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4K,16K,32K,64K,128K,256K,1M,4M,16M,64M")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--bind", action="store_true", help="pin rank r to core r")
    a = ap.parse_args()
    sizes = [parse_size(s) for s in a.sizes.split(",")]
    res = run_ranks(rank_main, 2, sizes, a.iters, a.bind, timeout=600)
    print(f"# 2 ranks, shm, {'bound' if a.bind else 'unbound'}: median time of one exchange (us)")
    print(f"# {'bytes':>10} {'rings':>10} {'single':>10} {'rings/single':>13}")
    for (n, r0, s0), (_, r1, s1) in zip(res[0], res[1]):
        rings, single = max(r0, r1) * 1e6, max(s0, s1) * 1e6
        print(f"  {n:>10} {rings:>10.1f} {single:>10.1f} {rings / single:>13.2f}")


if __name__ == "__main__":
    main()
