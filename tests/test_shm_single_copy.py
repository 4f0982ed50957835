"""Single copy on shm (csrc/transport/shm/shm_transport.cc): a message of at least
ZCOLL_SHM_SINGLE_COPY_BYTES is read by its receiver straight from the sender's buffer
(process_vm_readv), not through a ring. Exact bytes into buffers and into consumers, the send
completing only once the receiver has read it, the counters that say it happened, the switch
that turns it off, and groups where it stays off (checksums; ranks in other PID namespaces:
tests/test_failures.py)."""
import os
import time

import numpy as np
import pytest
from multiproc import run_ranks
from transports import open_transport, payload

KiB, MiB = 1 << 10, 1 << 20
THRESHOLD = 64 * KiB
# Below, at and above the threshold; odd sizes end mid-word and mid-page.
SIZES = [THRESHOLD - 8, THRESHOLD, MiB + 8, 5 * MiB + 3]


def exchange(rank, world, store, single_copy, ring_bytes):
    t = open_transport("shm", rank, world, store, shm_single_copy_bytes=single_copy, shm_ring_bytes=ring_bytes)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    for i, n in enumerate(SIZES):
        for consume in (False, True):
            tag = 0x200 + 2 * i + consume
            out = payload(rank, nxt, n, salt=tag)
            s = t.isend(nxt, tag, out)
            if consume:
                data, pieces = t.recv_pieces(prv, tag, n)
                got = np.frombuffer(data, np.uint8)
                # in order, covering the payload once, never splitting an 8-byte word
                assert [o for o, _ in pieces] == list(np.cumsum([0] + [b for _, b in pieces[:-1]])), pieces
                assert sum(b for _, b in pieces) == n and all(o % 8 == 0 for o, _ in pieces), pieces
                if single_copy and n >= single_copy:
                    assert max(b for _, b in pieces) <= 256 * KiB, pieces  # the bounce buffer's pieces
            else:
                got = np.empty(n, np.uint8)
                t.wait(t.irecv(prv, tag, got))
            t.wait(s)
            assert np.array_equal(got, payload(prv, rank, n, salt=tag)), f"{n} bytes (consume={consume}) corrupted"
    return t.shared_memory()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 3])
def test_large_messages_are_read_from_the_sender_exactly(world):
    res = run_ranks(exchange, world, THRESHOLD, 0, timeout=100)
    large = sum(2 for n in SIZES if n >= THRESHOLD)
    for rank, use in res.items():
        assert use["single_copy_peers"] == world - 1, (rank, use)
        assert use["single_copy_messages"] == large, (rank, use)
        assert use["single_copy_bytes"] == sum(2 * n for n in SIZES if n >= THRESHOLD), (rank, use)


@pytest.mark.timeout(120)
def test_single_copy_off_sends_everything_through_the_rings():
    res = run_ranks(exchange, 2, 0, 64 * KiB, timeout=100)  # small rings: large messages wrap
    for rank, use in res.items():
        assert (use["single_copy_peers"], use["single_copy_messages"]) == (0, 0), (rank, use)


@pytest.mark.timeout(120)
def test_messages_larger_than_the_ring_take_single_copy_too():
    res = run_ranks(exchange, 2, THRESHOLD, 4 * KiB, timeout=100)  # a 4 KiB ring, 5 MiB messages
    for rank, use in res.items():
        assert use["single_copy_messages"] == sum(2 for n in SIZES if n >= THRESHOLD), (rank, use)


def send_waits_for_the_read(rank, world, store):
    t = open_transport("shm", rank, world, store, shm_single_copy_bytes=THRESHOLD)
    n = MiB  # fits the ring (4 MiB): through the ring the send would complete at once
    if rank == 0:
        s = t.isend(1, 9, payload(0, 1, n))
        store.set("sent", "1")
        pending_until = time.monotonic() + 0.3
        while time.monotonic() < pending_until:
            assert not t.test(s), "a single-copy send completed before its receiver read it"
            time.sleep(0.01)
        store.set("go", "1")
        t.wait(s)
        return "sent"
    store.wait(["sent"])
    store.wait(["go"])
    got = np.empty(n, np.uint8)
    t.wait(t.irecv(0, 9, got))
    assert np.array_equal(got, payload(0, 1, n))
    return "received"


@pytest.mark.timeout(60)
def test_a_single_copy_send_completes_when_the_receiver_has_read_it():
    assert run_ranks(send_waits_for_the_read, 2, timeout=50) == {0: "sent", 1: "received"}


def many_in_flight(rank, world, store):
    """Every large message of a step posted at once, both directions, to every peer, waited for
    in reverse: the descriptors queue in the rings while the reads go on."""
    t = open_transport("shm", rank, world, store, shm_single_copy_bytes=THRESHOLD, shm_ring_bytes=4 * KiB)
    sizes = [THRESHOLD + 8 * i for i in range(40)]
    reqs, bufs = [], {}
    for peer in range(world):
        if peer == rank:
            continue
        for i, n in enumerate(sizes):
            bufs[peer, i] = np.empty(n, np.uint8)
            reqs.append(t.irecv(peer, i, bufs[peer, i]))
        sends = [payload(rank, peer, n, salt=i) for i, n in enumerate(sizes)]
        reqs += [t.isend(peer, i, m) for i, m in enumerate(sends)]
        bufs["out", peer] = sends  # alive until waited for
    for r in reversed(reqs):
        t.wait(r)
    for (peer, i), got in ((k, v) for k, v in bufs.items() if k[0] != "out"):
        assert np.array_equal(got, payload(peer, rank, sizes[i], salt=i)), (peer, i)
    return t.shared_memory()["single_copy_messages"]


@pytest.mark.timeout(120)
def test_many_single_copy_messages_in_flight_to_every_peer():
    res = run_ranks(many_in_flight, 3, timeout=100)
    assert res == {r: 2 * 40 for r in range(3)}


def mismatch(rank, world, store):
    t = open_transport("shm", rank, world, store, shm_single_copy_bytes=THRESHOLD)
    if rank == 0:
        t.wait(t.isend(1, 5, np.zeros(MiB, np.uint8)), timeout=5)
        return "sent"
    try:
        t.wait(t.irecv(0, 5, np.empty(MiB + 8, np.uint8)), timeout=5)
    except RuntimeError as e:
        t.abort(str(e))
        return str(e)
    return "no error"


@pytest.mark.timeout(60)
def test_a_single_copy_message_of_another_size_is_a_clear_error():
    res = run_ranks(mismatch, 2, timeout=50, allow_failure=True)
    assert "1048576" in res[1] and "1048584" in res[1] and "rank 0" in res[1], res[1]
    assert "rank 1" in res[0] and ("gave up" in res[0] or "aborted" in res[0]), res[0]


def default_use(rank, world, store, forced):
    kw = {"shm_single_copy_bytes": THRESHOLD} if forced else {}  # else the transport's default: auto
    t = open_transport("shm", rank, world, store, **kw)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    got = np.empty(MiB, np.uint8)
    r = t.irecv(prv, 1, got)
    t.wait(t.isend(nxt, 1, payload(rank, nxt, MiB)))
    t.wait(r)
    assert np.array_equal(got, payload(prv, rank, MiB))
    return t.shared_memory()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
def test_by_default_single_copy_is_on_where_the_ranks_have_a_core_each(world):
    on = world <= os.cpu_count()  # std::thread::hardware_concurrency()
    for rank, use in run_ranks(default_use, world, False, timeout=100).items():
        assert use["single_copy_peers"] == (world - 1 if on else 0), (rank, use)
        assert use["single_copy_messages"] == (1 if on else 0), (rank, use)
    # configured, it is on however many ranks share the cores
    for rank, use in run_ranks(default_use, world, True, timeout=100).items():
        assert (use["single_copy_peers"], use["single_copy_messages"]) == (world - 1, 1), (rank, use)


def backend_use(rank, world, store, checksum):
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            pg_options=zcoll.Options(transport="shm", checksum=checksum, shm_single_copy_bytes=THRESHOLD))
    t = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB
    dist.all_reduce(t)
    assert torch.equal(t, torch.arange(1 << 20, dtype=torch.float32) * world)
    # each sends before it receives: point-to-point takes the peer's message in unasked
    peer = 1 - rank
    x, y = torch.full((1 << 18,), float(rank)), torch.empty(1 << 18)
    dist.send(x, peer)
    dist.recv(y, peer)
    assert bool((y == peer).all())
    use = zcoll.shared_memory()
    dist.destroy_process_group()
    return use


@pytest.mark.timeout(120)
def test_collectives_and_point_to_point_take_single_copy_and_checksums_turn_it_off():
    for rank, use in run_ranks(backend_use, 2, False, timeout=100).items():
        assert use["collectives"]["single_copy_messages"] > 0 and use["collectives"]["single_copy_peers"] == 1, use
        assert use["p2p"]["single_copy_messages"] == 1, use
    for rank, use in run_ranks(backend_use, 2, True, timeout=100).items():
        for lane in ("collectives", "p2p"):
            assert (use[lane]["single_copy_peers"], use[lane]["single_copy_messages"]) == (0, 0), use


def operands(rank, world, store):
    t = open_transport("shm", rank, world, store, shm_single_copy_bytes=THRESHOLD)
    peer = 1 - rank
    counts = []
    for i, (n, operand) in enumerate([(256 * KiB, True), (256 * KiB, False), (MiB, True)]):
        got = np.empty(n, np.uint8)
        r = t.irecv(peer, i, got)
        t.wait(t.isend(peer, i, payload(rank, peer, n, salt=i), operand=operand))
        t.wait(r)
        assert np.array_equal(got, payload(peer, rank, n, salt=i))
        counts.append(t.shared_memory()["single_copy_messages"])
    return counts


@pytest.mark.timeout(60)
def test_a_reductions_operands_keep_the_rings_below_1_mib():
    # 256 KiB operand: rings; 256 KiB plain: single copy; 1 MiB operand: single copy
    assert run_ranks(operands, 2, timeout=50) == {0: [0, 1, 2], 1: [0, 1, 2]}
