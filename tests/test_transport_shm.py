"""What only the shared-memory transport (csrc/transport/shm) does: dead peers found through
the liveness channels, timeouts, and nothing left in /dev/shm. Shared behaviour: tests/test_transport.py."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
from multiproc import run_ranks
from transports import open_transport, payload


def transport(rank, world, store, **kw):
    return open_transport("shm", rank, world, store, **kw)


def dies(rank, world, store):
    t = transport(rank, world, store)
    if rank == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        t.wait(t.irecv(1, 0, np.zeros(8, np.uint8)), timeout=20)
    except RuntimeError as e:
        return str(e), time.monotonic() - start
    return "no error", 0


@pytest.mark.timeout(60)
def test_dead_peer_detected_promptly():
    res = run_ranks(dies, 2, allow_failure=True)
    msg, seconds = res[0]
    assert "rank 1 died" in msg and "liveness connection closed" in msg and "recv 8 B from rank 1" in msg
    assert seconds < 5


def times_out(rank, world, store):
    t = transport(rank, world, store)
    if rank == 0:
        try:
            t.wait(t.irecv(1, 0, np.zeros(8, np.uint8)), timeout=0.5)
        except TimeoutError as e:
            result = str(e)
        store.set("done", "1")
        return result
    store.get("done")  # alive but silent until rank 0 has timed out


@pytest.mark.timeout(60)
def test_timeout_raises_timeout_error():
    res = run_ranks(times_out, 2)
    assert "rank 0 shm: timed out waiting on rank 1" in res[0]


def _zcoll_segments():
    return sorted(p.name for p in Path("/dev/shm").glob("zcoll-*"))


def exchange(rank, world, store):
    t = transport(rank, world, store)
    got = np.empty(100, np.uint8)
    t.wait(t.isend(1 - rank, 0, payload(rank, 1 - rank, 100)))
    t.wait(t.irecv(1 - rank, 0, got))
    assert np.array_equal(got, payload(1 - rank, rank, 100))


def idle(rank, world, store):
    transport(rank, world, store)
    if rank == 1:
        os._exit(0)  # no destructor: the segments must already be unlinked


@pytest.mark.timeout(60)
def test_nothing_left_in_dev_shm():
    before = _zcoll_segments()
    run_ranks(idle, 3, allow_failure=True)
    run_ranks(exchange, 2)
    assert _zcoll_segments() == before
