"""What only the tcp transport (csrc/transport/tcp) does, between processes on 127.0.0.1: lost
connections, recoverable timeouts, and the address options. Shared behaviour:
tests/test_transport.py."""
import os
import time

import numpy as np
import pytest
from multiproc import run_ranks
from transports import open_transport, payload


def transport(rank, world, store, prefix="test", **kw):
    return open_transport("tcp", rank, world, store, prefix, **kw)


def peer_dies(rank, world, store):
    t = transport(rank, world, store, liveness=False)  # the transport's own detection: the closed socket
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
    import zcoll

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
    return (type(error).__name__, isinstance(error, zcoll.DistTimeoutError), isinstance(error, TimeoutError),
            str(error), elapsed, recovered)


@pytest.mark.timeout(60)
def test_timeout_raises_timeout_error_and_is_recoverable():
    name, is_zcoll_timeout, is_builtin_timeout, msg, elapsed, recovered = run_ranks(times_out, 2)[0]
    assert "rank 0 tcp: recv from rank 1 timed out (waited 0.5" in msg and "8 bytes, tag 0x2a, 0 moved" in msg, msg
    assert 0.45 < elapsed < 3
    assert recovered
    assert is_zcoll_timeout and is_builtin_timeout, f"wait raised {name}, not zcoll.DistTimeoutError"


def options_and_ids(rank, world, store):
    import zcoll

    if rank == 0:
        with pytest.raises(RuntimeError, match="no interface matches ZCOLL_SOCKET_IFNAME=nosuch0"):
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
    return isinstance(zcoll.DistTimeoutError("x"), TimeoutError)


@pytest.mark.timeout(60)
def test_address_options_and_request_ids():
    assert run_ranks(options_and_ids, 2) == {0: True, 1: True}
