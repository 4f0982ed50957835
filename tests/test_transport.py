"""Behaviour every transport shares (csrc/transport/transport.h), between real processes, for
shm, tcp and ucx alike (ucx skipped, with the reason, where no UCX library loads): exact bytes in rings far larger than any buffer, all-to-all including self,
FIFO order, framing checks, and abort from another thread."""
import threading
import time

import numpy as np
import pytest
from multiproc import run_ranks
from transports import open_transport, payload, ucx_missing

UCX_MISSING = ucx_missing()
NEEDS_UCX = pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING)
KINDS = ["shm", "tcp", pytest.param("ucx", marks=NEEDS_UCX)]
# shm with a small ring: every larger message wraps around and waits for the reader
SMALL_RING = {"shm_ring_bytes": 1 << 16}


def transport(rank, world, store, kind, **kw):
    return open_transport(kind, rank, world, store, **kw)


def ring_exchange(rank, world, store, kind, sizes):
    t = transport(rank, world, store, kind, **SMALL_RING)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    for i, n in enumerate(sizes):
        out = payload(rank, nxt, n)
        got = np.empty(n, np.uint8)
        r = t.irecv(prv, 0x100 + i, got)
        s = t.isend(nxt, 0x100 + i, out)
        t.wait(s)  # send first: a big send completes only if this wait also drains the recv
        t.wait(r)
        assert np.array_equal(got, payload(prv, rank, n)), f"message {i} ({n} bytes) corrupted"
    return t.name


@pytest.mark.timeout(120)
# 8 ranks (oversubscribed 4x) on shm only: over tcp they add connection setup time, no coverage
@pytest.mark.parametrize("kind,world", [pytest.param(k, w, marks=NEEDS_UCX if k == "ucx" else ())
                                        for k in ("shm", "tcp", "ucx") for w in (2, 3, 4)] + [("shm", 8)])
def test_ring_exchange(kind, world):
    sizes = [0, 1, 24, 4095, 65536, 1 << 20] + ([64 << 20] if world == 2 else [16 << 20] if world <= 4 else [])
    res = run_ranks(ring_exchange, world, kind, sizes, timeout=100)
    assert set(res.values()) == {kind}


def all_to_all(rank, world, store, kind):
    t = transport(rank, world, store, kind)
    bufs = {peer: np.empty(1000 + 37 * peer, np.uint8) for peer in range(world)}
    reqs = [t.irecv(peer, 7, bufs[peer]) for peer in range(world)]  # self included
    sends = [payload(rank, peer, 1000 + 37 * rank) for peer in range(world)]
    reqs += [t.isend(peer, 7, sends[peer]) for peer in range(world)]
    for r in reversed(reqs):  # any wait order completes: every wait progresses everything
        t.wait(r)
    for peer in range(world):
        assert np.array_equal(bufs[peer], payload(peer, rank, 1000 + 37 * peer))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_all_to_all_including_self(kind):
    run_ranks(all_to_all, 4, kind)


def many_small(rank, world, store, kind):
    t = transport(rank, world, store, kind, shm_ring_bytes=4096)
    peer = 1 - rank
    n = 3000
    if rank == 0:  # all queued before any wait: frames are gathered many per sendmsg
        msgs = [np.full(i % 50, i % 256, np.uint8) for i in range(n)]
        ids = [t.isend(peer, (i << 8) | 0x5, m) for i, m in enumerate(msgs)]
        t.wait(ids[-1])  # FIFO: the last done means all done
        for i in ids:
            t.wait(i)
    else:  # half posted up front (scattered many per recvmsg), then one at a time
        bufs = [np.empty(i % 50, np.uint8) for i in range(n)]
        ids = [t.irecv(peer, (i << 8) | 0x5, bufs[i]) for i in range(n // 2)]
        for i in reversed(ids):
            t.wait(i)
        for i in range(n // 2, n):
            t.wait(t.irecv(peer, (i << 8) | 0x5, bufs[i]))
        for i, b in enumerate(bufs):
            assert (b == i % 256).all(), f"message {i} out of order or corrupted"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_many_small_messages_in_order(kind):
    run_ranks(many_small, 2, kind)


def mismatch(rank, world, store, kind):
    t = transport(rank, world, store, kind)
    if rank == 0:
        t.wait(t.isend(1, 5, np.zeros(16, np.uint8)))
        return "sent"
    t.wait(t.irecv(0, 6, np.zeros(16, np.uint8)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_tag_mismatch_is_a_clear_error(kind):
    res = run_ranks(mismatch, 2, kind, allow_failure=True)
    assert res[0] == "sent"
    assert f"RuntimeError: rank 1 {kind}: rank 0 sent tag 0x5 of 16 bytes where tag 0x6 of 16 bytes was " \
           "expected (collectives differ across ranks?)" in res[1]


def aborted(rank, world, store, kind):
    t = transport(rank, world, store, kind)
    peer = 1 - rank
    blocked = t.irecv(peer, 0, np.zeros(8, np.uint8))
    if rank == 0:  # abort from another thread wakes a wait that sleeps (poll() / naps)
        threading.Timer(0.3, t.abort, args=("group destroyed",)).start()
    start = time.monotonic()
    with pytest.raises(RuntimeError) as during:
        t.wait(blocked, timeout=20)
    elapsed = time.monotonic() - start
    if rank == 1:  # the peer learns of the abort at once instead of timing out
        return str(during.value), None, elapsed
    with pytest.raises(RuntimeError) as after:  # and every later wait, even on a new request
        t.wait(t.isend(peer, 1, np.zeros(8, np.uint8)), timeout=20)
    return str(during.value), str(after.value), elapsed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_abort_makes_wait_raise_here_and_at_the_peer(kind):
    res = run_ranks(aborted, 2, kind)
    during, after, elapsed = res[0]
    assert f"{kind}: aborted: group destroyed" in during and "group destroyed" in after
    assert elapsed < 5
    during, _, elapsed = res[1]
    peer_learns = {"shm": "rank 0 gave up: group destroyed", "tcp": "connection to rank 0 lost",
                   "ucx": "rank 0 gave up: group destroyed"}[kind]
    assert peer_learns in during, during
    assert elapsed < 5


def consume_pieces(rank, world, store, kind, sizes):
    t = transport(rank, world, store, kind, shm_ring_bytes=4096)  # shm: most messages wrap, many times
    out = []
    for i, n in enumerate(sizes):
        if rank == 0:
            t.wait(t.isend(1, 0x200 + i, payload(0, 1, n, i)))
        else:
            out.append(t.recv_pieces(0, 0x200 + i, n))
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_consumed_receive_hands_out_ordered_aligned_pieces(kind):
    """irecvConsume (what the schedules reduce from): pieces come in order, cover the payload
    exactly once, and every piece boundary is 8-byte aligned, so no element is ever split."""
    sizes = [0, 1, 7, 8, 4095, 4096, 10_001, 1 << 20]
    res = run_ranks(consume_pieces, 2, kind, sizes, timeout=100)
    for i, (n, (data, pieces)) in enumerate(zip(sizes, res[1])):
        assert data == payload(0, 1, n, i).tobytes(), f"{n} bytes corrupted"
        at = 0
        for off, size in pieces:
            assert off == at and size > 0, (n, pieces)
            assert off % 8 == 0, (n, pieces)
            at += size
        assert at == n
        if kind == "shm" and n > 4096:
            assert len(pieces) > 1, "a message larger than the ring arrives in pieces"


def polled(rank, world, store, kind):
    t = transport(rank, world, store, kind, **SMALL_RING)
    n = 1 << 20  # larger than the small shm ring: test() must keep moving it
    if rank == 1:
        store.get("may-send")
        t.wait(t.isend(0, 3, payload(1, 0, n)))
        return None
    got = np.empty(n, np.uint8)
    r = t.irecv(1, 3, got)
    before = [t.test(r) for _ in range(100)]  # nothing sent yet: never complete, never blocks
    store.set("may-send", "1")
    deadline = time.monotonic() + 20
    while not t.test(r):
        assert time.monotonic() < deadline, "test() never completed the receive"
    assert np.array_equal(got, payload(1, 0, n))
    again = t.test(r)  # already complete
    with pytest.raises(RuntimeError, match="unknown request"):
        t.test(r + 1000)
    return before, again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_test_is_false_before_the_peer_sends_and_true_after(kind):
    before, again = run_ranks(polled, 2, kind)[0]
    assert not any(before) and again
