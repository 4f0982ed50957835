"""torch's contract beyond the collectives' results (tests/test_gloo_parity.py has those):
sequence numbers and TORCH_DISTRIBUTED_DEBUG=DETAIL, the backend's name where torch reports it,
torch's exception hierarchy for every kind of failure, and monitored_barrier with gloo's
semantics."""
import os
import time
from datetime import timedelta

import pytest
from multiproc import run_ranks


def init(rank, world, store, transport="auto", timeout=60):
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout),
                            pg_options=zcoll.Options(transport=transport))
    return dist


def failure(fn):
    """(exception class names, message, seconds it took) of what fn raised, or None."""
    start = time.monotonic()
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the parent asserts on the type)
        return ([f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__], str(e).split("\n")[0],
                time.monotonic() - start)
    return None


# ---------------------------------------------------------------------------------------------
# sequence numbers

def ranks_sequence_numbers(rank, world, store):
    import torch
    dist = init(rank, world, store)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    backend._set_sequence_number_for_group()  # what ProcessGroupWrapper calls first
    seen = [backend._get_sequence_number_for_group()]
    dist.all_reduce(torch.ones(4))                          # inline
    seen.append(backend._get_sequence_number_for_group())
    work = dist.all_gather_into_tensor(torch.empty(2 * world), torch.ones(2), async_op=True)  # queued
    seen.append(backend._get_sequence_number_for_group())
    work.wait()
    peer = 1 - rank
    reqs = [dist.isend(torch.ones(3), peer), dist.irecv(torch.empty(3), peer)]  # p2p does not count
    for r in reqs:
        r.wait()
    seen.append(backend._get_sequence_number_for_group())
    dist.barrier()
    seen.append(backend._get_sequence_number_for_group())
    dist.destroy_process_group()
    return seen


@pytest.mark.timeout(120)
def test_sequence_numbers_count_collectives_alike_on_every_rank():
    res = run_ranks(ranks_sequence_numbers, 2, timeout=100)
    assert res[0] == res[1] == [0, 1, 2, 2, 3], res


def ranks_ddp(rank, world, store, backend, detail):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import zcoll  # noqa: F401
    os.environ["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL" if detail else "OFF"
    dist.set_debug_level_from_env()
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    wrapped = type(dist.group.WORLD._get_backend(torch.device("cpu"))).__name__
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(5):
        x = torch.randint(-3, 4, (4, 8), generator=g).float()
        loss = model(x).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = [p.detach().numpy().copy() for p in model.parameters()]
    # The wrapper's fingerprint check runs over zcoll: shapes that differ across ranks are
    # reported before the collective runs.
    mismatch = failure(lambda: dist.all_reduce(torch.ones(3 + rank))) if detail else None
    dist.destroy_process_group()
    return wrapped, params, mismatch


@pytest.mark.timeout(180)
def test_ddp_trains_under_torch_distributed_debug_detail_like_gloo():
    import numpy as np
    zc = run_ranks(ranks_ddp, 2, "zcoll", True, timeout=150)
    # gloo itself crashes in DDP's constructor under DETAIL (torch 2.13): its run is plain
    gl = run_ranks(ranks_ddp, 2, "gloo", False, timeout=150)
    for rank in (0, 1):
        wrapped, params, mismatch = zc[rank]
        assert wrapped == "_ProcessGroupWrapper", wrapped  # DETAIL's checker really wraps zcoll
        for a, b, c in zip(params, gl[rank][1], zc[1 - rank][1]):
            np.testing.assert_array_equal(a, c)  # ranks agree
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # and train like gloo (sums in another order)
        assert mismatch is not None and "Detected mismatch between collectives on ranks" in mismatch[1], mismatch


# ---------------------------------------------------------------------------------------------
# the group's name: "zcoll", not torch's "custom" (python/zcoll/group.py)

def ranks_group_names(rank, world, store):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist = init(rank, world, store)
    sub = dist.new_group([0, 1])
    names = {}
    for label, pg in (("world", dist.group.WORLD), ("subgroup", sub)):
        model = DDP(torch.nn.Linear(4, 2), process_group=pg)
        model(torch.ones(2, 4)).sum().backward()  # the group really runs DDP
        names[label] = (pg.name(), pg._get_backend_name(), dist.get_backend(pg),
                        model._get_ddp_logging_data()["backend_name"],
                        type(pg._get_backend(torch.device("cpu"))).__name__)
    dist.destroy_process_group()
    return names


@pytest.mark.timeout(120)
def test_groups_and_ddp_logging_name_the_backend_zcoll():
    expected = ("zcoll", "zcoll", "zcoll", "zcoll", "ProcessGroupZcoll")
    assert run_ranks(ranks_group_names, 2, timeout=100) == {r: {"world": expected, "subgroup": expected}
                                                           for r in (0, 1)}


def ranks_mixed_group(rank, world, store):
    import torch
    import torch.distributed as dist

    import zcoll  # noqa: F401
    dist.init_process_group("cpu:zcoll,cuda:gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    pg = dist.group.WORLD
    t = torch.ones(3)
    dist.all_reduce(t)
    backends = [type(pg._get_backend(torch.device(d))).__name__ for d in ("cpu", "cuda")]
    dist.destroy_process_group()
    return backends, t.tolist()


@pytest.mark.timeout(120)
def test_a_group_mixing_zcoll_with_another_backend_keeps_both():
    """Beside another backend, torch must make the group (and the other backend) itself."""
    assert run_ranks(ranks_mixed_group, 2, timeout=100) == {
        r: (["ProcessGroupZcoll", "ProcessGroupGloo"], [2.0, 2.0, 2.0]) for r in (0, 1)}


# ---------------------------------------------------------------------------------------------
# exceptions: torch's hierarchy

def ranks_failures(rank, world, store, transport):
    import torch
    dist = init(rank, world, store, transport, timeout=3)
    out = {}
    out["argument"] = failure(lambda: dist.all_gather([torch.ones(2)], torch.ones(2)))  # 1 output for 2 ranks
    out["argument_type"] = failure(lambda: dist.all_reduce(torch.ones(2, dtype=torch.uint16)))
    out["op"] = failure(lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND))
    if rank == 0:  # rank 1 does not take part: rank 0's receive times out
        out["p2p_timeout"] = failure(lambda: dist.recv(torch.ones(2), 1, tag=5))
    store.set(f"p2p done {rank}", "1")
    store.get(f"p2p done {1 - rank}")
    if rank == 0:  # rank 1 never joins this all-reduce
        out["timeout"] = failure(lambda: dist.all_reduce(torch.ones(1000)))
        out["after"] = failure(lambda: dist.all_reduce(torch.ones(4)))  # the group stays failed
    store.set(f"timed out {rank}", "1")
    store.get("timed out 0")
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_failures_raise_torch_exception_types(transport):
    res = run_ranks(ranks_failures, 2, transport, timeout=100)
    for rank, out in res.items():
        for kind in ("argument", "op"):
            types, msg, _ = out[kind]
            assert {"zcoll.errors.ArgumentError", "builtins.ValueError", "builtins.RuntimeError"} <= set(types), out
        types, msg, _ = out["argument_type"]
        assert {"zcoll.errors.ArgumentTypeError", "builtins.TypeError", "builtins.RuntimeError"} <= set(types), msg
        assert "unsupported dtype" in msg
    out = res[0]
    for kind, peer in (("p2p_timeout", "rank 1"), ("timeout", "rank 1")):
        types, msg, seconds = out[kind]
        assert {"zcoll.errors.DistTimeoutError", "torch.distributed.DistBackendError", "builtins.RuntimeError",
                "builtins.TimeoutError"} <= set(types), (kind, types)
        assert "timed out" in msg and "rank 0" in msg and peer in msg, (kind, msg)
        assert 2.5 < seconds < 15, (kind, seconds)
    types, msg, _ = out["after"]
    assert "torch.distributed.DistBackendError" in types and "earlier collective failed" in msg, msg


def ranks_peer_dies(rank, world, store, transport):
    import torch
    dist = init(rank, world, store, transport, timeout=30)
    dist.all_reduce(torch.ones(10))
    if rank == 1:
        os._exit(3)
    return failure(lambda: dist.all_reduce(torch.ones(1 << 16)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport,kind", [("tcp", "torch.distributed.DistNetworkError"),
                                            ("shm", "torch.distributed.DistBackendError")])
def test_a_dead_peer_raises_dist_network_or_backend_error(transport, kind):
    """tcp: the connection is lost (a network failure); shm: the peer process is gone."""
    types, msg, seconds = run_ranks(ranks_peer_dies, 2, transport, allow_failure=True, timeout=100)[0]
    assert kind in types and "torch.distributed.DistError" in types, (types, msg)
    assert "rank 1" in msg and seconds < 20, (msg, seconds)


# ---------------------------------------------------------------------------------------------
# monitored_barrier

def ranks_monitored_barrier(rank, world, store, backend, absent, wait_all):
    import torch.distributed as dist

    import zcoll  # noqa: F401
    # gloo's arrived ranks wait for rank 0's answer until the group timeout: keep it short
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=8))
    pg = dist.group.WORLD
    pg.monitored_barrier(timedelta(seconds=20), wait_all_ranks=True)  # everyone comes
    if rank in absent:  # stays away from the second one (busy elsewhere)
        store.get("verdicts")
        dist.destroy_process_group()
        return None
    out = failure(lambda: pg.monitored_barrier(timedelta(seconds=1), wait_all_ranks=wait_all))
    if rank == 0:
        store.set("verdicts", "1")
    else:
        store.get("verdicts")
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("wait_all", [False, True])
def test_monitored_barrier_reports_the_absent_ranks_like_gloo(wait_all):
    absent = (1, 3)
    zc = run_ranks(ranks_monitored_barrier, 4, "zcoll", absent, wait_all, timeout=120)
    gl = run_ranks(ranks_monitored_barrier, 4, "gloo", absent, wait_all, timeout=120)
    named = "ranks 1, 3" if wait_all else "rank 1 "
    for res, who in ((zc, "zcoll"), (gl, "gloo")):
        types, msg, seconds = res[0]
        assert "builtins.RuntimeError" in types, (who, types)
        assert named in msg.lower() and "failed to pass monitoredbarrier in 1000 ms" in msg.lower(), (who, msg)
        assert 0.9 < seconds < 10, (who, seconds)
    assert "zcoll.errors.DistTimeoutError" in zc[0][0]
    # the rank that did arrive learns the verdict from rank 0 at once (gloo's waits for its
    # group timeout, then blames rank 0)
    types, msg, seconds = zc[2]
    assert "torch.distributed.DistBackendError" in types and f"rank 0 reports that {named.strip()}" in msg, msg
    assert seconds < 5, seconds
    assert gl[2] is not None and "received errors while waiting for send/recv from rank 0" in gl[2][1], gl[2]
    assert zc[1] is zc[3] is None


def ranks_monitored_barrier_passes(rank, world, store):
    import torch
    dist = init(rank, world, store)
    pg = dist.group.WORLD
    if rank == 1:
        time.sleep(0.5)  # late, but within the timeout
    pg.monitored_barrier(timedelta(seconds=20))
    pg.monitored_barrier(wait_all_ranks=True)  # the group timeout
    t = torch.ones(2)
    dist.all_reduce(t)  # collectives unaffected
    dist.destroy_process_group()
    return t.tolist()


@pytest.mark.timeout(120)
def test_monitored_barrier_passes_when_everyone_arrives():
    assert run_ranks(ranks_monitored_barrier_passes, 3, timeout=100) == {r: [3.0, 3.0] for r in range(3)}
