"""The tcp transport (csrc/transport/tcp) between real processes on 127.0.0.1: exact bytes in
rings (64 MiB, far beyond socket buffers), all-to-all, ordering, framing checks, dead peers,
timeouts, abort, and the address options."""
import os
import threading
import time

import numpy as np
import pytest
from multiproc import run_ranks


def transport(rank, world, store, prefix="test", **kw):
    import torch  # noqa: F401  (before zcoll._C: it links against torch's libraries)
    from zcoll import _C
    kw.setdefault("timeout", 30.0)
    return _C.Transport("tcp", store, prefix, rank, world, **kw)


def payload(src, dst, nbytes, salt=0):
    return np.random.default_rng([src, dst, nbytes, salt]).integers(0, 256, nbytes, dtype=np.uint8)


def ring_exchange(rank, world, store, sizes):
    t = transport(rank, world, store)
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_ring_exchange(world):
    sizes = [0, 1, 4095, 1 << 20] + ([64 << 20] if world == 2 else [])
    res = run_ranks(ring_exchange, world, sizes, timeout=50)
    assert set(res.values()) == {"tcp"}


def all_to_all(rank, world, store):
    t = transport(rank, world, store)
    bufs = {peer: np.empty(1000 + 37 * peer, np.uint8) for peer in range(world)}
    reqs = [t.irecv(peer, 7, bufs[peer]) for peer in range(world)]  # self included
    sends = [payload(rank, peer, 1000 + 37 * rank) for peer in range(world)]
    reqs += [t.isend(peer, 7, sends[peer]) for peer in range(world)]
    for r in reversed(reqs):  # any wait order completes: every wait progresses everything
        t.wait(r)
    for peer in range(world):
        assert np.array_equal(bufs[peer], payload(peer, rank, 1000 + 37 * peer))


@pytest.mark.timeout(60)
def test_all_to_all_including_self():
    run_ranks(all_to_all, 4)


def many_small(rank, world, store):
    t = transport(rank, world, store)
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
    assert "RuntimeError: rank 1 tcp: expected a message of 16 bytes with tag 0x6 from rank 0, got 16 bytes " \
           "with tag 0x5 (collectives differ across ranks?)" in res[1]


def peer_dies(rank, world, store):
    t = transport(rank, world, store)
    if rank == 2:
        os._exit(3)
    start = time.monotonic()
    try:
        if rank == 0:  # waiting to receive from the dead rank
            t.wait(t.irecv(2, 0, np.zeros(8, np.uint8)), timeout=20)
        else:  # sending more than the socket buffers hold to the dead rank
            t.wait(t.isend(2, 0, np.zeros(64 << 20, np.uint8)), timeout=20)
    except RuntimeError as e:
        return str(e), time.monotonic() - start
    return "no error", 0.0


@pytest.mark.timeout(60)
def test_dead_peer_detected_promptly():
    res = run_ranks(peer_dies, 3, allow_failure=True)
    assert "exited with code 3" in res[2]
    for rank, op in [(0, "recv"), (1, "send")]:
        msg, seconds = res[rank]
        assert f"rank {rank} tcp: connection to rank 2 lost ({op}: " in msg, msg
        assert f"pending {op}" in msg, msg
        assert seconds < 5, f"rank {rank} took {seconds:.1f} s to notice"


def times_out(rank, world, store):
    from zcoll import _C

    t = transport(rank, world, store)
    if rank == 1:
        store.get("timed out")  # alive but silent until rank 0 has timed out
        t.wait(t.isend(0, 42, np.arange(8, dtype=np.uint8)))
        return None
    got = np.zeros(8, np.uint8)
    req = t.irecv(1, 42, got)
    start = time.monotonic()
    try:
        t.wait(req, timeout=0.5)
        error = None
    except Exception as e:  # noqa: BLE001  (the parent checks the type)
        error = e
    finally:
        store.set("timed out", "1")  # even if the wait misbehaved, so rank 1 never hangs
    elapsed = time.monotonic() - start
    t.wait(req, timeout=20)  # a timeout leaves the stream intact: the message still arrives
    recovered = np.array_equal(got, np.arange(8, dtype=np.uint8))
    return (type(error).__name__, isinstance(error, _C.TimeoutError), isinstance(error, TimeoutError),
            str(error), elapsed, recovered)


@pytest.mark.timeout(60)
def test_timeout_raises_timeout_error_and_is_recoverable():
    name, is_zcoll_timeout, is_builtin_timeout, msg, elapsed, recovered = run_ranks(times_out, 2)[0]
    assert "rank 0 tcp: recv from rank 1 timed out (waited 0.5" in msg and "8 bytes, tag 0x2a, 0 moved" in msg, msg
    assert 0.45 < elapsed < 3
    assert recovered
    assert is_zcoll_timeout and is_builtin_timeout, f"wait raised {name}, not zcoll._C.TimeoutError"


def aborted(rank, world, store):
    t = transport(rank, world, store)
    peer = 1 - rank
    blocked = t.irecv(peer, 0, np.zeros(8, np.uint8))
    # abort from another thread wakes a wait sleeping in poll()
    threading.Timer(0.3, t.abort, args=("group destroyed",)).start()
    start = time.monotonic()
    with pytest.raises(RuntimeError) as during:
        t.wait(blocked, timeout=20)
    elapsed = time.monotonic() - start
    with pytest.raises(RuntimeError) as after:  # and every later wait, even on a new request
        t.wait(t.isend(peer, 1, np.zeros(8, np.uint8)), timeout=20)
    return str(during.value), str(after.value), elapsed


@pytest.mark.timeout(60)
def test_abort_makes_wait_raise():
    for during, after, elapsed in run_ranks(aborted, 2).values():
        assert "tcp: aborted: group destroyed" in during and "group destroyed" in after
        assert elapsed < 5


def options_and_ids(rank, world, store):
    from zcoll import _C

    if rank == 0:
        with pytest.raises(RuntimeError, match="interface 'nosuch0' .* has no IPv4 address"):
            transport(rank, world, store, prefix="bad", socket_ifname="nosuch0")
    # each way of choosing the advertised address, on its own transport (prefix)
    for prefix, kw in [("ifname", {"socket_ifname": "lo"}), ("route", {"store_host": "127.0.0.1"})]:
        t = transport(rank, world, store, prefix=prefix, **kw)
        assert (t.name, t.rank, t.size) == ("tcp", rank, world)
        got = np.empty(100, np.uint8)
        ids = [t.irecv(1 - rank, 3, got), t.isend(1 - rank, 3, payload(rank, 0, 100))]
        for i in ids:
            t.wait(i)
        assert np.array_equal(got, payload(1 - rank, 0, 100))
        t.wait(ids[0])  # already complete: returns at once
    with pytest.raises(RuntimeError, match="wait on unknown request 999"):
        t.wait(999)
    return isinstance(_C.TimeoutError("x"), TimeoutError)


@pytest.mark.timeout(60)
def test_address_options_and_request_ids():
    assert run_ranks(options_and_ids, 2) == {0: True, 1: True}
