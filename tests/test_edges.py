"""The edges of a group's life (docs/failures.md): Work.wait(timeout), a cap on point-to-point
messages nobody has asked for, empty rows in all_to_all, destroying or aborting a group while a
collective is pending (a /dev/shm too small for the rings: test_shm_memory.py)."""
import time

import pytest
import torch
from multiproc import run_ranks
from test_p2p import init

GROUP_TIMEOUT = 60  # every prompt return below is measured against it


def work_wait_timeout(rank, world, store):
    dist = init(rank, world, store, "shm", timeout=GROUP_TIMEOUT)
    t = torch.full((1000,), float(rank + 1))
    if rank == 1:
        time.sleep(2)  # late to the collective
        dist.all_reduce(t)
        return float(t[0])
    work = dist.all_reduce(t, async_op=True)
    start = time.monotonic()
    try:
        work.wait(timeout=__import__("datetime").timedelta(seconds=0.3))
        first = "no error"
    except Exception as e:  # noqa: BLE001
        first = f"{type(e).__name__}: {e}"
    waited = time.monotonic() - start
    work.wait()  # without a timeout: the collective completes once rank 1 joins
    return first, waited, float(t[0])


@pytest.mark.timeout(120)
def test_work_wait_honours_its_timeout_and_the_collective_goes_on():
    res = run_ranks(work_wait_timeout, 2, timeout=100)
    first, waited, value = res[0]
    assert first.startswith("DistTimeoutError: zcoll: Work.wait(timeout=300 ms) timed out: ALLREDUCE #0"), first
    assert 0.25 < waited < 1.5, waited
    assert value == res[1] == 3.0


def unexpected_cap(rank, world, store):
    import zcoll
    import torch.distributed as dist

    store.set(f"arrived/{rank}", "1")
    store.wait([f"arrived/{r}" for r in range(world)])
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            pg_options=zcoll.Options(p2p_max_unexpected_bytes=1 << 20))
    chunk = torch.ones(128 << 10)  # 512 KiB
    if rank == 0:
        store.wait(["posted"])
        try:
            for i in range(3):
                dist.send(chunk, 1, tag=i)
            out = None  # taken in, then refused: sent through the ring, the send had completed
        except Exception as e:  # noqa: BLE001  (read from our memory: the send fails with rank 1's reason)
            out = str(e)
        store.wait(["checked"])
        return out
    # A receive for another tag keeps rank 1's point-to-point busy, so the three messages are
    # taken in as they come, none of them asked for.
    work = dist.irecv(torch.empty(1), 0, tag=99)
    store.set("posted", "1")
    try:
        work.wait()
        out = "no error"
    except Exception as e:  # noqa: BLE001
        out = str(e)
    store.set("checked", "1")
    return out


@pytest.mark.timeout(120)
def test_unexpected_p2p_bytes_are_capped_with_a_clear_error():
    res = run_ranks(unexpected_cap, 2, timeout=100)
    for msg in [res[1]] + [res[0]] * (res[0] is not None):
        assert "rank 0 sent 524288 bytes with tag 2 that no receive has asked for yet" in msg, msg
        assert "ZCOLL_P2P_MAX_UNEXPECTED_BYTES=1048576" in msg, msg
    # 512 KiB goes by single copy (tests/test_shm_single_copy.py): the refused send fails too
    assert res[0] is not None and "rank 1 gave up" in res[0], res[0]


def all_to_all_empty_rows(rank, world, store, transport):
    dist = init(rank, world, store, transport)
    rows = lambda src, dst: (src + 2 * dst) % 3  # noqa: E731  (0, 1 or 2 rows; every rank has some zeros)
    ins = [torch.full((rows(rank, p), 2), float(10 * rank + p)) for p in range(world)]
    outs = [torch.empty((rows(p, rank), 2)) for p in range(world)]
    dist.all_to_all(outs, ins)
    ok = all(torch.equal(outs[p], torch.full((rows(p, rank), 2), float(10 * p + rank))) for p in range(world))
    # the single-tensor form, with a rank that sends nothing at all
    in_splits = [0 if rank == 1 else rows(rank, p) for p in range(world)]
    out_splits = [0 if p == 1 else rows(p, rank) for p in range(world)]
    x = torch.cat([torch.full((in_splits[p], 2), float(10 * rank + p)) for p in range(world)])
    y = torch.empty((sum(out_splits), 2))
    dist.all_to_all_single(y, x, out_splits, in_splits)
    want = torch.cat([torch.full((out_splits[p], 2), float(10 * p + rank)) for p in range(world)])
    return ok and torch.equal(y, want)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_empty_rows_in_every_all_to_all_form(transport):
    assert run_ranks(all_to_all_empty_rows, 3, transport, timeout=100) == {0: True, 1: True, 2: True}


def ends_during_a_collective(rank, world, store, how):
    dist = init(rank, world, store, "shm", timeout=GROUP_TIMEOUT)
    if rank == 1:  # never joins the collective
        store.wait(["ended"], __import__("datetime").timedelta(seconds=100))
        return None
    work = dist.all_reduce(torch.ones(1000), async_op=True)
    time.sleep(0.2)
    start = time.monotonic()
    if how == "destroy":
        dist.destroy_process_group()
    else:
        dist.distributed_c10d._abort_process_group()
    took = time.monotonic() - start
    try:
        work.wait()
        err = "no error"
    except Exception as e:  # noqa: BLE001
        err = f"{type(e).__name__}: {e}"
    store.set("ended", "1")
    return took, err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["destroy", "abort"])
def test_destroy_or_abort_during_a_collective_returns_promptly(how):
    took, err = run_ranks(ends_during_a_collective, 2, how, timeout=100)[0]
    assert took < 3, took  # not the group timeout (60 s)
    assert "no error" not in err, err


