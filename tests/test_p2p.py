"""Point-to-point (dist.send / recv / isend / irecv / batch_isend_irecv) on zcoll between real
processes, over shm and tcp: exact bytes, tag matching in any order, any-source receives, large
symmetric exchanges without deadlock, p2p beside collectives, and the failures (size mismatch,
bad arguments, timeout, dead peer, a peer that leaves) as clear errors on the right rank."""
import os
import re
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from multiproc import run_ranks

KINDS = ["shm", "tcp"]
DTYPES = ["float64", "float32", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"]
SIZES = [0, 1, 1001, 300_000]
BIG = 4 << 20  # float32 elements: 16 MiB, 16 x the p2p shm ring


def init(rank, world, store, transport, timeout=60):
    import torch.distributed as dist

    import zcoll
    # Line the ranks up first: a short group timeout must not be spent waiting for a late spawn.
    store.set(f"arrived/{rank}", "1")
    for r in range(world):
        store.get(f"arrived/{r}")
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout), pg_options=zcoll.Options(transport=transport))
    return dist


def payload(dtype, n, src, salt=0):
    """Random bit patterns (NaNs and denormals included) both ends can recompute."""
    import torch
    dt = getattr(torch, dtype)
    rng = np.random.default_rng([src, n, salt, DTYPES.index(dtype)])
    if dtype == "bool":
        raw = rng.integers(0, 2, n, dtype=np.uint8)
    else:
        raw = rng.integers(0, 256, n * torch.empty(0, dtype=dt).element_size(), dtype=np.uint8)
    return torch.from_numpy(raw).view(dt) if n else torch.empty(0, dtype=dt)


def same_bits(a, b):
    import torch
    return a.dtype == b.dtype and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def error_of(fn):
    """None, or (exception type name, message, raised as ValueError or RuntimeError)."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the parent asserts on type and text)
        return type(e).__name__, str(e), isinstance(e, (ValueError, RuntimeError))
    return None


def zcoll_segments():
    return sorted(p.name for p in Path("/dev/shm").glob("zcoll-*"))


# ---- two ranks, one run per transport; the tests below each check a part of it ---------------

def pair(rank, world, store, kind):
    import torch
    dist = init(rank, world, store, kind)
    peer = 1 - rank
    out = {}

    wrong = []  # every dtype and size, both directions at once (isend + recv on each rank)
    for dtype in DTYPES:
        for n in SIZES:
            got = torch.empty(n, dtype=getattr(torch, dtype))
            work = dist.isend(payload(dtype, n, rank), peer)
            dist.recv(got, peer)
            work.wait()
            if not same_bits(got, payload(dtype, n, peer)):
                wrong.append((dtype, n))
    out["dtypes"] = wrong

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) + 100 * rank
    canvas = torch.zeros(3, 8, requires_grad=True)  # received into as data, as gloo does
    work = dist.isend(base[:, ::2], peer)  # non-contiguous both ways
    with torch.no_grad():
        view = canvas[:, 1:5].t()
    dist.recv(view, peer)
    work.wait()
    out["strided"] = canvas.detach().numpy().copy()

    if rank == 0:  # tags received out of order; one tag's messages in order
        for tag in (1, 2, 3):
            dist.send(torch.full((4,), float(tag)), 1, tag=tag)
        for i in range(3):
            dist.send(torch.full((4,), 10.0 + i), 1, tag=5)
        store.get("posted")
        time.sleep(0.2)  # the receives below are posted before these arrive
        dist.send(torch.full((2,), 21.0), 1, tag=21)
        dist.send(torch.full((2,), 22.0), 1, tag=22)
    else:
        order = []
        for tag in (3, 1, 2, 5, 5, 5):
            t = torch.empty(4)
            dist.recv(t, 0, tag=tag)
            order.append(t[0].item())
        a, b = torch.empty(2), torch.empty(2)
        wb, wa = dist.irecv(b, 0, tag=22), dist.irecv(a, 0, tag=21)
        store.set("posted", "1")
        wa.wait()
        wb.wait()
        out["tags"] = order, a.tolist(), b.tolist()

    # The same with messages large enough to be held (point_to_point.cc, kHoldFromBytes): a
    # receive for another tag takes the held one in; the matching one goes straight in.
    n = 1 << 16  # 256 KiB of float32
    if rank == 0:
        works = [dist.isend(torch.full((n,), float(tag)), 1, tag=tag) for tag in (1, 2, 3)]
        for w in works:
            w.wait()
    else:
        got = {}
        for tag in (3, 1, 2):
            t = torch.empty(n)
            dist.recv(t, 0, tag=tag)
            got[tag] = (t.min().item(), t.max().item())
        out["held_tags"] = got

    # 16 MiB each way at once: isend + recv, then the unsafe-in-MPI send + send, recv + recv
    mine, want = payload("float32", BIG, rank, 1), payload("float32", BIG, peer, 1)
    got = torch.empty(BIG)
    start = time.monotonic()
    work = dist.isend(mine, peer)
    dist.recv(got, peer)
    work.wait()
    got2 = torch.empty(BIG)
    w1 = dist.isend(mine, peer, tag=1)
    w2 = dist.isend(got, peer, tag=2)  # what we received goes back
    w1.wait(), w2.wait()
    dist.recv(got2, peer, tag=2)
    echo = torch.empty(BIG)
    dist.recv(echo, peer, tag=1)
    out["big"] = (same_bits(got, want), same_bits(got2, mine), same_bits(echo, want), time.monotonic() - start)

    steps = []  # p2p interleaved with collectives: neither waits for nor disturbs the other
    for i in range(4):
        work = dist.isend(torch.full((1000,), float(i + 10 * rank)), peer, tag=i)
        s = torch.tensor([float(rank + i)])
        dist.all_reduce(s)
        r = torch.empty(1000)
        dist.recv(r, peer, tag=i)
        work.wait()
        steps.append((s.item(), r[0].item(), bool((r == r[0]).all())))
    big = dist.isend(mine, peer, tag=40)
    s = torch.ones(1 << 18)
    dist.all_reduce(s)
    got.zero_()
    dist.recv(got, peer, tag=40)
    big.wait()
    out["interleaved"] = steps, bool((s == 2).all()), same_bits(got, want)

    if rank == 0:  # a receive of the wrong size fails alone; the next one works
        dist.send(torch.ones(100), 1, tag=7)
        dist.send(torch.full((10,), 3.0), 1, tag=7)
    else:
        err = error_of(lambda: dist.recv(torch.empty(50), 0, tag=7))
        t = torch.empty(10)
        dist.recv(t, 0, tag=7)
        out["mismatch"] = err, t.tolist()

    t = torch.empty(3)  # Work API: future, completion, source
    work = dist.irecv(t, peer, tag=50)
    dist.send(torch.full((3,), float(rank)), peer, tag=50)
    fut = work.get_future().wait()
    out["work"] = work.is_completed(), fut[0].tolist(), work._source_rank()

    time.sleep(0.3)  # past the p2p thread's linger: an idle group sleeps (both threads)
    cpu = time.process_time()
    time.sleep(1.0)
    out["idle_cpu"] = time.process_time() - cpu

    # dist.isend of a meta tensor never reaches a backend (torch runs a fake kernel): ask ours
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    out["bad"] = {
        "self": error_of(lambda: dist.isend(torch.ones(2), rank)),
        "recv_self": error_of(lambda: dist.irecv(torch.ones(2), rank)),
        "out_of_range": error_of(lambda: dist.isend(torch.ones(2), world + 3)),
        "recv_out_of_range": error_of(lambda: dist.irecv(torch.ones(2), world + 3)),
        "meta": error_of(lambda: backend.send([torch.ones(2, device="meta")], peer, 0)),
        "recv_meta": error_of(lambda: backend.recv_anysource([torch.ones(2, device="meta")], 0)),
        "dtype": error_of(lambda: dist.isend(torch.ones(2, dtype=torch.uint32), peer)),
        "sparse": error_of(lambda: dist.isend(torch.ones(2).to_sparse(), peer)),
        "two_tensors": error_of(lambda: dist.group.WORLD.send([torch.ones(2), torch.ones(2)], peer, 0)),
    }

    if rank == 0:  # destroying the group fails our pending receive and the peer's
        work = dist.irecv(torch.empty(2), 1, tag=98)
        dist.destroy_process_group()
        out["left"] = error_of(work.wait)
    else:
        work = dist.irecv(torch.empty(2), 0, tag=99)
        out["left"] = error_of(work.wait)
        dist.destroy_process_group()
    return out


@pytest.fixture(scope="module", params=KINDS)
def pair_run(request):
    before = zcoll_segments()
    res = run_ranks(pair, 2, request.param, timeout=150)
    return request.param, res, before


def test_every_dtype_and_size_is_bit_exact(pair_run):
    _, res, _ = pair_run
    assert res[0]["dtypes"] == [] and res[1]["dtypes"] == []


def test_non_contiguous_tensors(pair_run):
    _, res, _ = pair_run
    for r in (0, 1):
        peer_base = np.arange(24, dtype=np.float32).reshape(4, 6) + 100 * (1 - r)
        want = np.zeros((3, 8), np.float32)
        want[:, 1:5] = peer_base[:, ::2].T
        np.testing.assert_array_equal(res[r]["strided"], want)


def test_tags_out_of_order_and_one_tag_in_order(pair_run):
    _, res, _ = pair_run
    order, a, b = res[1]["tags"]
    assert order == [3.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    assert a == [21.0, 21.0] and b == [22.0, 22.0]


def test_large_messages_out_of_tag_order(pair_run):
    _, res, _ = pair_run
    assert res[1]["held_tags"] == {3: (3.0, 3.0), 1: (1.0, 1.0), 2: (2.0, 2.0)}


def test_symmetric_16mib_exchange_does_not_deadlock(pair_run):
    kind, res, _ = pair_run
    for r in (0, 1):
        *exact, seconds = res[r]["big"]
        assert all(exact), exact
        assert seconds < 30, f"{kind}: 4 x 16 MiB took {seconds:.1f} s"


def test_p2p_interleaved_with_collectives(pair_run):
    _, res, _ = pair_run
    for r in (0, 1):
        steps, all_reduced, exact = res[r]["interleaved"]
        assert steps == [(float(1 + 2 * i), float(i + 10 * (1 - r)), True) for i in range(4)]
        assert all_reduced and exact


def test_size_mismatch_fails_that_receive_only(pair_run):
    kind, res, _ = pair_run
    err, after = res[1]["mismatch"]
    assert err is not None and err[0] == "DistBackendError"
    assert f"rank 1 p2p/{kind}: recv from rank 0 (tag 7, 200 bytes): the matching message from rank 0 has " \
           "400 bytes" in err[1], err
    assert after == [3.0] * 10


def test_work_future_and_source_rank(pair_run):
    _, res, _ = pair_run
    for r in (0, 1):
        assert res[r]["work"] == (True, [float(1 - r)] * 3, 1 - r)


def test_idle_group_costs_no_cpu(pair_run):
    _, res, _ = pair_run
    for r in (0, 1):
        assert res[r]["idle_cpu"] < 0.05, res[r]["idle_cpu"]


def test_bad_arguments_raise_on_the_caller(pair_run):
    _, res, _ = pair_run
    for r in (0, 1):
        bad = res[r]["bad"]
        for name in ("self", "recv_self"):
            assert bad[name] is not None and bad[name][0] == "ArgumentError", bad[name]
            assert f"peer rank {r} is this rank" in bad[name][1], bad[name]
        for name in ("out_of_range", "recv_out_of_range"):
            assert bad[name] is not None and bad[name][0] == "ArgumentError", bad[name]
            assert "peer rank 5 is not a rank of a group of 2" in bad[name][1], bad[name]
        for name in ("meta", "recv_meta"):
            assert bad[name] is not None and bad[name][0] == "ArgumentError", bad[name]
            assert "tensors must be on the CPU" in bad[name][1] and "got meta" in bad[name][1], bad[name]
        # the dtype check is the collectives' (checkTensor): a TypeError
        assert bad["dtype"] is not None and bad["dtype"][0] == "ArgumentTypeError", bad["dtype"]
        assert "unsupported dtype" in bad["dtype"][1], bad["dtype"]
        assert bad["sparse"] is not None and bad["sparse"][2], bad["sparse"]  # torch's dispatcher refuses it
        assert bad["two_tensors"] is not None and "expects one tensor, got 2" in bad["two_tensors"][1]


def test_destroy_fails_pending_receives_here_and_at_the_peer(pair_run):
    kind, res, before = pair_run
    assert res[0]["left"] is not None and "destroyed" in res[0]["left"][1], res[0]["left"]
    assert res[1]["left"] is not None
    assert f"rank 1 p2p/{kind}: recv from rank 0 (tag 99, 8 bytes): rank 0 has left" in res[1]["left"][1]
    assert zcoll_segments() == before


# ---- more ranks ---------------------------------------------------------------------------------

def any_source(rank, world, store, kind):
    import torch
    dist = init(rank, world, store, kind)
    got = []
    if rank == 0:
        for _ in range(world - 1):
            t = torch.empty(3, dtype=torch.int64)
            src = dist.recv(t)  # returns the sender
            got.append((src, t.tolist()))
        t = torch.empty(1)
        work = dist.irecv(t, tag=1)
        work.wait()
        got.append((work._source_rank(), t.item()))
    else:  # each sender leaves (destroys its group) as soon as it is done: rank 0 carries on
        dist.send(torch.tensor([rank, 10 * rank, 100 * rank]), 0)
        if rank == 2:
            time.sleep(0.3)
            dist.send(torch.tensor([42.0]), 0, tag=1)
    dist.destroy_process_group()
    return got


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_any_source_receive_reports_each_sender(kind):
    got = run_ranks(any_source, 4, kind, timeout=100)[0]
    assert sorted(got[:3]) == [(q, [q, 10 * q, 100 * q]) for q in (1, 2, 3)]
    assert got[3] == (2, 42.0)


def batch_ring(rank, world, store, kind):
    import torch
    dist = init(rank, world, store, kind)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    results = []
    for n in (1, 1000, 1 << 20):
        out, back = torch.arange(n, dtype=torch.float32) + 1e6 * rank, torch.empty(n)
        got, got_back = torch.empty(n), torch.empty(n)
        ops = [dist.P2POp(dist.irecv, got, prv), dist.P2POp(dist.isend, out, nxt)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        back.copy_(got)  # and back the other way round the ring
        ops = [dist.P2POp(dist.isend, back, prv), dist.P2POp(dist.irecv, got_back, nxt)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        results.append(bool(torch.equal(got, torch.arange(n, dtype=torch.float32) + 1e6 * prv))
                       and bool(torch.equal(got_back, out)))
    dist.destroy_process_group()
    return results


@pytest.mark.timeout(150)
# 8 ranks on 2 cores (shm): the p2p threads back off, so nobody starves
@pytest.mark.parametrize("kind,world", [("shm", 3), ("shm", 4), ("tcp", 3), ("shm", 8)])
def test_batch_isend_irecv_ring(kind, world):
    res = run_ranks(batch_ring, world, kind, timeout=140)
    assert all(all(r) for r in res.values()), res


# ---- failures -----------------------------------------------------------------------------------

def recv_times_out(rank, world, store, kind):
    import torch
    dist = init(rank, world, store, kind, timeout=3)
    if rank == 0:
        dist.send(torch.full((4,), 5.0), 1, tag=1)
        store.get("done")
        dist.destroy_process_group()
        return None
    start = time.monotonic()
    err = error_of(lambda: dist.recv(torch.empty(4), 0, tag=9))
    seconds = time.monotonic() - start
    t = torch.empty(4)
    dist.recv(t, 0, tag=1)  # only the timed-out receive failed
    store.set("done", "1")
    dist.destroy_process_group()
    return err, seconds, t.tolist()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_recv_without_sender_times_out_clearly(kind):
    err, seconds, after = run_ranks(recv_times_out, 2, kind, timeout=50)[1]
    assert err is not None and err[0] == "DistTimeoutError"  # a DistBackendError and a TimeoutError
    assert f"rank 1 p2p/{kind}: recv from rank 0 (tag 9, 16 bytes) timed out after 3." in err[1], err
    assert "no message with tag 9 arrived from rank 0" in err[1]
    assert 2.9 < seconds < 8, seconds
    assert after == [5.0] * 4


def peer_dies(rank, world, store, kind):
    import torch
    dist = init(rank, world, store, kind, timeout=30)
    if rank == 1:
        os._exit(7)
    start = time.monotonic()
    err = error_of(lambda: dist.recv(torch.empty(4), 1))
    return err, time.monotonic() - start


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_dead_peer_fails_a_pending_recv_and_nothing_left_in_dev_shm(kind):
    before = zcoll_segments()
    res = run_ranks(peer_dies, 2, kind, allow_failure=True, timeout=50)
    err, seconds = res[0]
    assert err is not None and "recv from rank 1 (tag 0, 16 bytes)" in err[1], err
    assert re.search(r"rank 1 \(\S+\) died", err[1]) or (kind == "tcp" and "lost" in err[1]), err
    assert seconds < 10
    assert zcoll_segments() == before
