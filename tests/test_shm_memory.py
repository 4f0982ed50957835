"""Shared memory of a host's ranks (csrc/transport/shm): a pair's ring is allocated at its first
message, so a rank holds rings only from the peers that sent to it; a group sizes its rings to
its size and to /dev/shm when ZCOLL_SHM_RING_BYTES does not, so a rank's worst case stays
O(1) and an 8-rank group works inside Docker's 64 MiB /dev/shm; a /dev/shm too small for
configured rings is a clear error on every rank, not a SIGBUS or a hang."""
import ast
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from commands import run_command
from multiproc import run_ranks

MiB = 1 << 20


def header_bytes(world: int) -> int:
    return -(-(1152 + world * 128) // 4096) * 4096  # segment header and ring controls, whole pages


def expected_ring_bytes(world: int, free: int) -> int:
    """The rule of docs/architecture.md (shared memory): 4 MiB, halved while one lane's rings from
    a rank's p-1 peers exceed 32 MiB or every rank's two lanes, fully allocated, exceed /dev/shm's
    free bytes; at least 64 KiB."""
    ring = 4 * MiB
    while ring > 64 << 10 and ring * (world - 1) > 32 * MiB:
        ring //= 2
    while ring > 64 << 10 and 2 * world * (header_bytes(world) + (world - 1) * ring) > free:
        ring //= 2
    return ring


def init(rank, world, store, **options):
    import torch.distributed as dist

    import zcoll
    store.set(f"arrived/{rank}", "1")
    for r in range(world):
        store.get(f"arrived/{r}")
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=30),
                            pg_options=zcoll.Options(transport="shm", **options))
    return dist, zcoll


def lazy_rings_rank(rank, world, store):
    import torch
    dist, zcoll = init(rank, world, store, algo="allreduce:ring")
    use = []

    def measure():  # between store barriers (no messages): no rank is a step ahead
        for side in ("before", "after"):
            n = store.add(f"measure/{len(use)}/{side}", 1)
            while n < world:
                time.sleep(0.01)
                n = store.add(f"measure/{len(use)}/{side}", 0)
            if side == "before":
                got = zcoll.shared_memory()
        use.append(got)
    measure()
    x = torch.full((1 << 18,), float(rank))
    dist.all_reduce(x)  # a ring: messages only to the next rank
    assert torch.equal(x, torch.full_like(x, float(sum(range(world)))))
    measure()
    out = torch.empty(world * 1024)
    dist.all_to_all_single(out, torch.full((world * 1024,), float(rank)))  # every pair (itself: a copy)
    assert torch.equal(out, torch.arange(world).float().repeat_interleave(1024))
    measure()
    peer = (rank + 1) % world
    if rank % 2 == 0:
        dist.send(torch.ones(16), peer)
    else:
        dist.recv(torch.empty(16), (rank - 1) % world)
    measure()
    dist.destroy_process_group()
    return use


@pytest.mark.timeout(120)
def test_rings_are_allocated_by_the_first_message_of_their_pair():
    world = 4
    res = run_ranks(lazy_rings_rank, world, timeout=100)
    for rank, (fresh, after_ring, after_alltoall, after_send) in res.items():
        ring = fresh["collectives"]["ring_bytes"]
        assert ring == fresh["p2p"]["ring_bytes"] and ring >= 64 << 10, fresh
        assert fresh["collectives"]["rings_allocated"] == 0 and fresh["p2p"]["rings_allocated"] == 0, (rank, fresh)
        header = fresh["collectives"]["bytes"]
        assert 0 < header < 64 << 10, fresh  # the segment's header and ring controls only
        assert after_ring["collectives"]["rings_allocated"] == 1, (rank, after_ring)  # from the previous rank
        assert after_ring["collectives"]["bytes"] == header + ring, (rank, after_ring)
        assert after_alltoall["collectives"]["rings_allocated"] == world - 1, (rank, after_alltoall)
        assert after_alltoall["collectives"]["bytes"] == header + (world - 1) * ring
        got = after_send["p2p"]["rings_allocated"]
        assert got == (1 if rank % 2 == 1 else 0), (rank, after_send)  # odd ranks received one message
        assert after_send["bytes"] == after_send["collectives"]["bytes"] + after_send["p2p"]["bytes"]


def ring_size_rank(rank, world, store, options):
    dist, zcoll = init(rank, world, store, **options)
    use = zcoll.shared_memory()
    dist.destroy_process_group()
    return use["collectives"]["ring_bytes"], use["p2p"]["ring_bytes"]


@pytest.mark.timeout(120)
def test_the_group_sizes_its_rings_unless_told():
    free = os.statvfs("/dev/shm")
    free = free.f_bavail * free.f_frsize
    res = run_ranks(ring_size_rank, 3, {}, timeout=60)
    assert set(res.values()) == {(expected_ring_bytes(3, free),) * 2}, (res, free)
    res = run_ranks(ring_size_rank, 2, {"shm_ring_bytes": 100_000}, timeout=60)  # rounded up to a power of 2
    assert set(res.values()) == {(1 << 17, 1 << 17)}, res


def test_the_rule_keeps_a_rank_under_64_mib_whatever_the_group():
    big = 1 << 40
    assert [expected_ring_bytes(p, big) for p in (2, 8, 16, 32, 64, 128)] == \
        [4 * MiB, 4 * MiB, 2 * MiB, MiB, 512 << 10, 256 << 10]
    for p in (2, 8, 32, 64, 128):  # two lanes, every peer's ring allocated
        assert 2 * (header_bytes(p) + (p - 1) * expected_ring_bytes(p, big)) <= 64 * MiB
    assert expected_ring_bytes(8, 64 * MiB) == 512 << 10  # Docker's /dev/shm


def docker_rank(rank, world, store):
    import torch
    dist, zcoll = init(rank, world, store)
    total = float(sum(range(world)))
    for n in (1, 1000, 1 << 16, 1 << 20, 4 << 20):  # every all-reduce schedule, up to 16 MiB
        x = torch.full((n,), float(rank))
        dist.all_reduce(x)
        assert torch.equal(x, torch.full_like(x, total)), n
    out = torch.empty(world * 4096)
    dist.all_to_all_single(out, torch.full((world * 4096,), float(rank)))
    assert torch.equal(out, torch.arange(world).float().repeat_interleave(4096))
    b = torch.full((1 << 20,), float(rank))
    dist.broadcast(b, 3)
    assert torch.equal(b, torch.full_like(b, 3.0))
    gathered = [torch.empty(1 << 16) for _ in range(world)]
    dist.all_gather(gathered, torch.full((1 << 16,), float(rank)))
    assert all(torch.equal(g, torch.full_like(g, float(r))) for r, g in enumerate(gathered))
    left, right = (rank - 1) % world, (rank + 1) % world
    got = torch.empty(1 << 20)
    reqs = [dist.isend(torch.full((1 << 20,), float(rank)), right), dist.irecv(got, left)]
    for r in reqs:
        r.wait()
    assert torch.equal(got, torch.full_like(got, float(left)))
    dist.barrier()
    use = zcoll.shared_memory()
    dist.destroy_process_group()
    return use


def run_in_small_dev_shm(size: str, target: str, world: int, timeout: float):
    """Runs test_shm_memory.<target> on `world` ranks in a mount namespace whose /dev/shm is a
    tmpfs of `size` (as in a container); returns each rank's result (or failure text)."""
    tests = str(Path(__file__).parent)
    code = (f"import sys; sys.path.insert(0, {tests!r})\n"
            f"from multiproc import run_ranks\nfrom test_shm_memory import {target}\n"
            f"print(repr(run_ranks({target}, {world}, timeout={timeout}, allow_failure=True)))\n")
    status, out, err = run_command(
        ["unshare", "--mount", "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$0" -c "$1"',
         sys.executable, code], timeout=timeout + 40)
    assert status == 0, err[-3000:]
    return ast.literal_eval(out.strip().splitlines()[-1])


@pytest.mark.timeout(240)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")
def test_eight_ranks_work_inside_a_64_mib_dev_shm():
    res = run_in_small_dev_shm("64m", "docker_rank", 8, timeout=180)
    for rank, use in res.items():
        assert isinstance(use, dict), (rank, use)  # a failure comes back as its text
        assert use["collectives"]["ring_bytes"] == expected_ring_bytes(8, 64 * MiB), use
    assert sum(use["bytes"] for use in res.values()) <= 64 * MiB


def too_small_rank(rank, world, store):
    import time

    import torch
    dist, _ = init(rank, world, store, shm_ring_bytes=4 * MiB)  # configured: not fitted to /dev/shm
    t0 = time.monotonic()
    try:
        dist.all_reduce(torch.ones(1 << 20))
    except Exception as e:  # noqa: BLE001
        return f"{time.monotonic() - t0:.1f} {type(e).__name__}: {e}"
    return "no error"


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")
def test_a_dev_shm_too_small_for_configured_rings_is_a_clear_error_on_every_rank():
    """Two ranks' first messages need a 4 MiB ring each in a 6 MiB /dev/shm: the rank whose ring
    does not fit says so, and its peer hears it at once (not at the 30 s timeout)."""
    res = run_in_small_dev_shm("6m", "too_small_rank", 2, timeout=60)
    for rank, msg in res.items():
        took, _, text = msg.partition(" ")
        assert float(took) < 10, (rank, msg)
        assert "cannot allocate the 4194304-byte ring" in text and "/dev/shm" in text, (rank, msg)
        assert "enlarge /dev/shm" in text and "ZCOLL_SHM_RING_BYTES=4194304" in text, (rank, msg)
        assert "each of this host's 2 ranks may need" in text, (rank, msg)
