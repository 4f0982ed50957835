"""Strangers on a group's bootstrap port (transport/handshake.h): garbage, a hello without the
group's secret, a hello for another group, an idle connection and a second connection claiming a
rank that is already connected. The real ranks connect anyway, promptly, exchange exactly their
own data, and every stranger is dropped and logged."""
import os
import socket
import struct
import time

import numpy as np
import pytest
from multiproc import run_ranks
from transports import open_transport, payload

HELLO = struct.Struct("<QQ32siiii")  # magic, group, secret, from, to, size, reserved
TCP_HELLO_MAGIC = 0x7A636F6C6C746370  # "zcolltcp"
PREFIX = "trust"


def group_hash(prefix):
    h = 0xCBF29CE484222325  # FNV-1a, as the handshake hashes a store prefix
    for c in prefix.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def dial(address):
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    s.settimeout(15)
    return s


def closed_by_peer(s):
    """True once the other end has closed the connection without answering."""
    try:
        return s.recv(64) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def rank_with_strangers(rank, world, store):
    strangers = {}
    if rank == 1:  # before dialing rank 0 itself, rank 1's process plays the strangers
        addr0 = store.get(f"{PREFIX}/tcp/addr/0").decode()
        strangers["garbage"] = dial(addr0)
        strangers["garbage"].sendall(os.urandom(64))
        strangers["no secret"] = dial(addr0)
        strangers["no secret"].sendall(HELLO.pack(TCP_HELLO_MAGIC, group_hash(PREFIX), bytes(32), 1, 0, world, 0))
        strangers["other group"] = dial(addr0)
        strangers["other group"].sendall(HELLO.pack(TCP_HELLO_MAGIC, group_hash("another-job"), os.urandom(32), 1, 0,
                                                     world, 0))
        strangers["idle"] = dial(addr0)
        store.set("strangers in", "1")
    if rank == 2:
        # Once the real rank 1 has dialed rank 0 (it does so right after publishing its own
        # address), a copy of it that knows the secret claims rank 1 again; rank 0 is still
        # waiting for rank 2 and must refuse it.
        store.wait(["strangers in", f"{PREFIX}/tcp/addr/1"])
        time.sleep(2)
        strangers["duplicate"] = dial(store.get(f"{PREFIX}/tcp/addr/0").decode())
        strangers["duplicate"].sendall(HELLO.pack(TCP_HELLO_MAGIC, group_hash(PREFIX), store.get(f"{PREFIX}/secret"),
                                                  1, 0, world, 0))
        time.sleep(0.5)
    start = time.monotonic()
    t = open_transport("tcp", rank, world, store, prefix=PREFIX, liveness=False, timeout=60)
    bootstrap = time.monotonic() - start
    reqs, got = [], {}
    for peer in range(world):
        if peer == rank:
            continue
        got[peer] = np.zeros(4096, np.uint8)
        reqs.append(t.irecv(peer, 7, got[peer]))
        reqs.append(t.isend(peer, 7, payload(rank, peer, 4096)))
    for r in reqs:
        t.wait(r)
    exact = all(np.array_equal(got[p], payload(p, rank, 4096)) for p in got)
    dropped = {name: closed_by_peer(s) for name, s in strangers.items()}
    return bootstrap, exact, dropped


@pytest.mark.timeout(120)
def test_strangers_on_the_bootstrap_port_are_dropped_and_logged(capfd):
    res = run_ranks(rank_with_strangers, 3, timeout=100)
    for rank, (bootstrap, exact, _) in res.items():
        assert exact, f"rank {rank} received data that is not its peers'"
        # the idle stranger has 10 s to say hello: it must not hold the real ranks up (rank 0
        # and 1 wait ~2.5 s for rank 2 by design)
        assert bootstrap < 8, (rank, bootstrap)
    assert res[1][2] == {"garbage": True, "no secret": True, "other group": True, "idle": True}
    assert res[2][2] == {"duplicate": True}
    err = capfd.readouterr().err
    assert "not a zcoll hello of this kind of connection" in err, err  # the garbage
    assert "wrong secret (not a member of this group)" in err, err
    assert "a hello for another group" in err, err
    assert "claims rank 1, which is already connected" in err, err
    assert err.count("[rank 0] WARN: rank 0 tcp: accepting higher ranks on") >= 4, err


def rank_liveness_strangers(rank, world, store):
    """The liveness channels use the same handshake: a stranger there is dropped too."""
    if rank == 1:  # rank 0 is accepting on its liveness port: a stranger gets there first
        tcp_addr = store.get(f"{PREFIX}/liveness/live/0").decode().split("\n")[1]
        s = dial(tcp_addr)
        s.sendall(os.urandom(200))
    t = open_transport("tcp", rank, world, store, prefix=PREFIX, timeout=60)
    data = np.zeros(16, np.uint8)
    peer = 1 - rank
    r = t.irecv(peer, 1, data)
    t.wait(t.isend(peer, 1, payload(rank, peer, 16)))
    t.wait(r)
    return bool(np.array_equal(data, payload(peer, rank, 16)))


@pytest.mark.timeout(120)
def test_a_stranger_on_a_liveness_port_is_dropped(capfd):
    assert run_ranks(rank_liveness_strangers, 2, timeout=100) == {0: True, 1: True}
    assert "rank 0 liveness: accepting higher ranks: dropped a connection from" in capfd.readouterr().err
