"""The shared-memory transport (csrc/transport/shm) between real processes: exact bytes in
rings, all-to-all, framing checks, dead peers, timeouts, and nothing left in /dev/shm."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
from multiproc import run_ranks


def transport(rank, world, store, **kw):
    import torch  # noqa: F401

    from zcoll import _C
    kw.setdefault("timeout", 30.0)
    return _C.Transport("shm", store, "test", rank, world, **kw)


def payload(src, dst, nbytes, salt=0):
    return np.random.default_rng([src, dst, nbytes, salt]).integers(0, 256, nbytes, dtype=np.uint8)


def ring_exchange(rank, world, store, sizes, ring_bytes):
    t = transport(rank, world, store, shm_ring_bytes=ring_bytes)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    for i, n in enumerate(sizes):
        out = payload(rank, nxt, n)
        got = np.empty(n, np.uint8)
        r = t.irecv(prv, i, got)
        s = t.isend(nxt, i, out)
        t.wait(s)
        t.wait(r)
        assert np.array_equal(got, payload(prv, rank, n)), f"message {i} ({n} bytes) corrupted"
    return t.name


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_ring_exchange(world):
    # a 64 KiB ring forces wrap-around and back-pressure for the larger messages
    sizes = [0, 1, 24, 4095, 65536, 1 << 20] + ([16 << 20] if world <= 4 else [])
    res = run_ranks(ring_exchange, world, sizes, 1 << 16, timeout=100)
    assert set(res.values()) == {"shm"}


def all_to_all(rank, world, store):
    t = transport(rank, world, store)
    reqs, bufs = [], {}
    for peer in range(world):  # self included
        bufs[peer] = np.empty(1000 + peer, np.uint8)
        reqs.append(t.irecv(peer, 7, bufs[peer]))
    sends = [payload(rank, peer, 1000 + rank) for peer in range(world)]
    for peer in range(world):
        reqs.append(t.isend(peer, 7, sends[peer]))
    for r in reversed(reqs):  # any wait order completes: every wait progresses everything
        t.wait(r)
    for peer in range(world):
        assert np.array_equal(bufs[peer], payload(peer, rank, 1000 + peer))


@pytest.mark.timeout(60)
def test_all_to_all_including_self():
    run_ranks(all_to_all, 4)


def many_small(rank, world, store):
    t = transport(rank, world, store, shm_ring_bytes=4096)
    peer = 1 - rank
    if rank == 0:
        msgs = [np.full(i % 50, i % 256, np.uint8) for i in range(2000)]
        ids = [t.isend(peer, i, m) for i, m in enumerate(msgs)]
        for i in ids:
            t.wait(i)
    else:
        for i in range(2000):
            got = np.empty(i % 50, np.uint8)
            t.wait(t.irecv(peer, i, got))
            assert (got == i % 256).all()


@pytest.mark.timeout(60)
def test_many_small_messages_in_order():
    run_ranks(many_small, 2)


def mismatch(rank, world, store):
    t = transport(rank, world, store)
    if rank == 0:
        t.wait(t.isend(1, 5, np.zeros(16, np.uint8)))
        return "sent"
    t.wait(t.irecv(0, 6, np.zeros(16, np.uint8)))


@pytest.mark.timeout(60)
def test_tag_mismatch_is_a_clear_error():
    res = run_ranks(mismatch, 2, allow_failure=True)
    assert res[0] == "sent"
    assert "expected a message of 16 bytes with tag 0x6 from rank 0, got 16 bytes with tag 0x5" in res[1]
    assert "same collectives" in res[1]


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
    assert "rank 1" in msg and "has exited" in msg and "recv 8 B from rank 1" in msg
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


def aborted(rank, world, store):
    t = transport(rank, world, store)
    t.abort("group destroyed")
    try:
        t.wait(t.irecv((rank + 1) % world, 0, np.zeros(8, np.uint8)), timeout=10)
    except RuntimeError as e:
        return str(e)


@pytest.mark.timeout(60)
def test_abort_makes_wait_raise():
    res = run_ranks(aborted, 2)
    assert all("group destroyed" in m for m in res.values())


def _zcoll_segments():
    return sorted(p.name for p in Path("/dev/shm").glob("zcoll-*"))


def idle(rank, world, store):
    transport(rank, world, store)
    if rank == 1:
        os._exit(0)  # no destructor: the segments must already be unlinked


@pytest.mark.timeout(60)
def test_nothing_left_in_dev_shm():
    before = _zcoll_segments()
    run_ranks(idle, 3, allow_failure=True)
    run_ranks(ring_exchange, 2, [100], 1 << 16)
    assert _zcoll_segments() == before
