"""Run a function as `world` real processes (spawned, each with a torch TCPStore client), with a
hard timeout: a hang fails the test fast and no child outlives it. The store's server lives in
the parent, so it outlasts any rank that finishes (or dies) early."""
from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import traceback
from datetime import timedelta


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_server():
    """A TCPStore server on a free loopback port, for ranks to connect to as clients."""
    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)


def _child(target, rank, world, port, results, args):
    try:
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=60))
        results.put(("ok", rank, target(rank, world, store, *args)))
    except BaseException:  # noqa: BLE001  (the parent re-raises it with the rank attached)
        results.put(("error", rank, traceback.format_exc()))


class RankFailed(AssertionError):
    def __init__(self, failures: dict[int, str]):
        self.failures = failures
        super().__init__("\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(failures.items())))


def run_ranks(target, world: int, *args, timeout: float = 60.0, allow_failure: bool = False):
    """Runs target(rank, world, store, *args) in `world` processes; returns {rank: result}.

    A rank that raises makes this raise RankFailed naming every failing rank (with
    allow_failure, failures are returned as {rank: RankFailed-text} entries instead). A rank
    that has not reported by the timeout is killed and the call raises TimeoutError.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    server = store_server()
    port = server.port
    procs = [ctx.Process(target=_child, args=(target, r, world, port, results, args), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    out, failures = {}, {}
    deadline = time.monotonic() + timeout
    try:
        while len(out) + len(failures) < world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(world)) - set(out) - set(failures))
                raise TimeoutError(f"ranks {missing} did not finish within {timeout} s")
            try:
                status, rank, value = results.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs)
                        if not p.is_alive() and r not in out and r not in failures]
                for r in dead:  # exited without reporting (os._exit, crash): give the queue a moment
                    try:
                        status, rank, value = results.get(timeout=1.0)
                    except queue.Empty:
                        failures[r] = f"exited with code {procs[r].exitcode} without reporting"
                        continue
                    (out if status == "ok" else failures)[rank] = value
                continue
            (out if status == "ok" else failures)[rank] = value
    finally:
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
    del server
    if failures and not allow_failure:
        raise RankFailed(failures)
    return {**out, **failures}
