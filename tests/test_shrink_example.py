"""examples/shrink_and_continue.py: DDP on 4 ranks, rank 3 crashes at step 15, the 3 survivors
shrink the group and finish the 40 steps with the loss curve continuing."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from commands import clean_env, run_command

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shrink_and_continue.py"
STEPS, KILL_RANK, KILL_STEP = 40, 3, 15


@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", ["auto", "tcp"])  # tcp: the failure is a DistNetworkError
def test_survivors_shrink_and_finish_training(transport):
    code, out, err = run_command(
        [sys.executable, str(EXAMPLE), "--nproc", "4", "--steps", str(STEPS),
         "--kill-rank", str(KILL_RANK), "--kill-step", str(KILL_STEP)],
        timeout=120, env=clean_env({"ZCOLL_TRANSPORT": transport}))
    context = f"exit {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    assert code == 0, context
    assert "exit codes per rank: [0, 0, 0, 1]" in out, context  # only the crashed rank failed
    assert f"step  {KILL_STEP}  rank {KILL_RANK} died: shrinking the group" in out, context
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == 1, context
    rep = reports[0]

    losses, worlds = rep["losses"], rep["world_sizes"]
    assert len(losses) == len(worlds) == STEPS, context  # the survivors finished every step
    assert worlds == [4] * KILL_STEP + [3] * (STEPS - KILL_STEP), worlds
    assert rep["final_loss"] == losses[-1]
    # The curve continues through the shrink (no reset to the initial loss), then keeps falling.
    assert losses[KILL_STEP] < 1.1 * losses[KILL_STEP - 1], losses
    assert losses[-1] < 0.6 * losses[KILL_STEP], losses
    assert losses[-1] < 0.2 * losses[0], losses
    assert rep["params_equal_across_ranks"] is True, rep


# The smallest form of the same: DDP built on a default group that zcoll.shrink_group made
# (torch's own shrink_group registers the shrunk backend as gloo's, and DDP's logger then crashes).
DDP_ON_SHRUNK_GROUP = textwrap.dedent("""
    import os, subprocess, sys
    from datetime import timedelta
    import torch, torch.distributed as dist
    import zcoll
    if len(sys.argv) == 1:  # the parent: a store, and 3 ranks running this file
        store = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
        procs = [subprocess.Popen([sys.executable, __file__, str(r), str(store.port)]) for r in range(3)]
        print("exit codes", [p.wait() for p in procs], flush=True)
        sys.exit(0)
    rank, port = int(sys.argv[1]), int(sys.argv[2])
    store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=60))
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=3, timeout=timedelta(seconds=30))
    dist.barrier()
    if rank == 2:
        os._exit(1)
    try:
        dist.all_reduce(torch.ones(4))
    except dist.DistError:
        pass
    zcoll.shrink_group([2])
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))  # on the shrunk default group
    model(torch.ones(2, 4)).sum().backward()
    g = dist.new_group()  # torch names it as an earlier group: zcoll's keys must not collide
    t = torch.ones(3)
    dist.all_reduce(t, group=g)
    assert t.tolist() == [2.0] * 3, t
    os._exit(0)
""")


@pytest.mark.timeout(90)
def test_ddp_and_new_groups_on_a_shrunk_default_group(tmp_path):
    script = tmp_path / "ddp_on_shrunk_group.py"
    script.write_text(DDP_ON_SHRUNK_GROUP)
    code, out, err = run_command([sys.executable, str(script)], timeout=60)
    assert code == 0 and "exit codes [0, 0, 1]" in out, f"{out[-2000:]}\n{err[-2000:]}"
