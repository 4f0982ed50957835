"""Local ranks for the bench scripts: run a function as N spawned processes around a TCPStore
served by the caller, with a deadline, and collect what each rank returns."""
from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from datetime import timedelta

import torch.distributed as dist


def _rank_entry(target, rank, world, port, settings, results):
    try:
        store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=60))
        results.put(("ok", rank, target(rank, world, store, settings)))
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        results.put(("error", rank, traceback.format_exc()))


def launch(target, settings: dict, nproc: int, timeout: float) -> dict:
    """Runs target(rank, world, store, settings) in `nproc` spawned processes; returns {rank:
    result}. A failing rank, or none reporting by `timeout` seconds, raises (and every rank still
    running is killed). `target` must be importable by the children (a module-level function)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    procs = [ctx.Process(target=_rank_entry, args=(target, r, nproc, server.port, settings, results),
                         daemon=True)
             for r in range(nproc)]
    for p in procs:
        p.start()
    out = {}
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while len(out) < nproc:
            try:
                status, rank, value = results.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ranks {sorted(set(range(nproc)) - set(out))} did not finish "
                                       f"within {timeout} s") from None
                dead = [r for r, p in enumerate(procs) if r not in out and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
                continue
            if status != "ok":
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            out[rank] = value
        finished = True
    finally:
        for p in procs:  # after a failure the others may wait for the failed rank forever
            p.join(timeout=max(0.1, min(30.0, deadline - time.monotonic())) if finished else 0.1)
            if p.is_alive():
                p.kill()
                p.join(5)
    return out
