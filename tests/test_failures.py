"""Real faults on real processes (docs/failures.md): ranks that die (SIGKILL or os._exit; reaped
or left as zombies; at bootstrap, idle, in small and 64 MiB collectives, in a receive) over shm
and tcp, a stopped rank, a rank that is behind, ranks in separate PID namespaces, ranks that
disagree on a root, and shrinking the group to go on; over ucx too, where UCX is installed. Each scenario is tests/fault_rank.py in
processes this test starts itself, so it decides when a dead rank is reaped."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from commands import bench_script, clean_env
from multiproc import store_server
from transports import ucx_missing

RANK = str(Path(__file__).with_name("fault_rank.py"))
DETECT_SECONDS = 2.0  # every survivor raises within this long of a death (issue goal)
UCX_MISSING = ucx_missing()
# Every transport, UCX too (all peers over UCX, which picks its own transports on one host).
TRANSPORTS = ["shm", "tcp", pytest.param("ucx", marks=pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING))]


# The bench that measures the same faults has the helpers: one copy of each.
_BENCH = bench_script("death_to_error")
process_state = _BENCH.process_state


def zcoll_files():
    return sorted(_BENCH.zcoll_segments())


class Job:
    """`world` ranks of one scenario, each in a session of its own; killed on exit."""

    def __init__(self, scenario, world=3, transport="shm", how="exit", victim=1, timeout=30.0, env=None,
                 wrap=(), backend="zcoll"):
        self.server = store_server()
        # One named host, so messages name it the same on every machine.
        self.env = clean_env({"ZCOLL_TRANSPORT": transport, "ZCOLL_HOSTID": "node-a", **(env or {})})
        self.procs = [subprocess.Popen(
            [*wrap, sys.executable, RANK, "--rank", str(r), "--world", str(world), "--port", str(self.server.port),
             "--scenario", scenario, "--victim", str(victim), "--how", how, "--timeout", str(timeout),
             "--backend", backend],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, start_new_session=True)
            for r in range(world)]

    def reports(self, ranks, timeout=90):
        """The JSON report of each rank in `ranks` (read without reaping any other rank)."""
        out = {}
        deadline = time.monotonic() + timeout
        for r in ranks:
            proc = self.procs[r]
            line = ""
            while not line and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
            assert line.startswith("{"), f"rank {r} reported nothing: {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
            out[r] = json.loads(line)
        return out

    def close(self):
        for p in self.procs:  # each rank's whole session, even where the rank itself is gone
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.communicate()


@pytest.fixture
def job():
    jobs = []

    def start(*a, **kw):
        jobs.append(Job(*a, **kw))
        return jobs[-1]

    yield start
    for j in jobs:
        j.close()


PHASES = ("bootstrap", "idle", "small", "large", "p2p")
# Every phase and transport, each with both ways to die and both fates of the body: the four
# combinations rotate over the phases, so each appears in every transport.
MATRIX = [(phase, transport, ("exit", "sigkill")[(i + t) % 2], ("zombie", "reaped")[((i + t) // 2) % 2])
          for t, transport in enumerate(("shm", "tcp")) for i, phase in enumerate(PHASES)]
MATRIX += [(phase, transport, how, fate) for phase, transport in (("small", "shm"), ("idle", "tcp"))
           for how, fate in (("exit", "zombie"), ("sigkill", "reaped"))]
# A rank killed after publishing its shm segment, before the others unlinked it.
MATRIX += [("shm_bootstrap", "shm", "exit", "zombie")]
# Over UCX: every phase once, the ways to die and fates rotating as above.
MATRIX += [pytest.param(phase, "ucx", ("exit", "sigkill")[i % 2], ("zombie", "reaped")[(i // 2) % 2],
                        marks=pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING))
           for i, phase in enumerate(PHASES)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("phase,transport,how,fate", MATRIX)
def test_every_survivor_raises_within_2_s_of_a_death(job, phase, transport, how, fate):
    before = zcoll_files()
    j = job(phase, world=3, transport=transport, how=how, timeout=60)
    victim = j.procs[1]
    if fate == "reaped":
        threading.Thread(target=victim.wait, daemon=True).start()
    got = j.reports([0, 2])
    if fate == "zombie":  # really left unreaped while the survivors noticed
        # Its sockets close while the kernel is still tearing it down, so under load the
        # survivors can report before it turns into a zombie: give the exit a moment to finish.
        deadline = time.monotonic() + 5
        while process_state(victim.pid) not in ("Z", "gone") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(victim.pid) == "Z", process_state(victim.pid)
    death = float(j.server.get("death").decode())
    for r, rep in got.items():
        assert rep["error"] is not None, (r, rep)
        assert "rank 1" in rep["message"] and ("died" in rep["message"] or "gave up" in rep["message"]
                                               or "lost" in rep["message"]), (r, rep)
        assert rep["t_error"] - death < DETECT_SECONDS, (r, rep["t_error"] - death, rep)
        if "bootstrap" not in phase:
            assert rep["next_error"] is not None and rep["next_seconds"] < DETECT_SECONDS, (r, rep)
    j.close()
    assert zcoll_files() == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_rank_is_named_with_its_host_on_every_survivor(job, transport):
    """Including the survivor whose own wait was on a neighbour that gave up first."""
    j = job("idle", world=4, transport=transport)
    got = j.reports([0, 2, 3])
    for r, rep in got.items():
        assert "rank 1 (node-a) died" in rep["message"], rep


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stopped_rank_is_named_by_every_other_rank(job, transport):
    j = job("stopped", world=3, transport=transport, timeout=3)
    j.server.wait(["stopping"])
    os.kill(j.procs[1].pid, signal.SIGSTOP)
    got = j.reports([0, 2])
    for r, rep in got.items():
        msg = rep["message"]
        assert rep["error"] == "DistTimeoutError", (r, rep)
        assert "not answering: rank 1 (node-a);" in msg and "rank 1 (node-a) did not answer within" in msg, (r, msg)
        other = 2 - r
        assert f"rank {other} (node-a): in ALLREDUCE #1" in msg or f"rank {other} (node-a): failed in ALLREDUCE #1" in msg, \
            (r, msg)
    os.kill(j.procs[1].pid, signal.SIGCONT)


@pytest.mark.timeout(120)
def test_a_forked_child_does_not_hide_its_parents_death(job):
    """The child holds copies of every descriptor its parent had when it forked, yet closed its
    copies of the liveness channels at once."""
    j = job("forked", world=3, transport="shm")
    got = j.reports([0, 2])
    death = float(j.server.get("death").decode())
    for r, rep in got.items():
        assert "rank 1 (node-a) died" in rep["message"], rep
        assert rep["t_error"] - death < DETECT_SECONDS, (r, rep["t_error"] - death)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_silent_rank_is_declared_dead_after_the_heartbeat_timeout(job, transport):
    """What closure cannot show (a vanished host, a cut link, a stopped process): no heartbeat
    for ZCOLL_HEARTBEAT_TIMEOUT, well before the group timeout (60 s)."""
    j = job("stopped", world=3, transport=transport, timeout=60,
            env={"ZCOLL_HEARTBEAT_INTERVAL": "0.2", "ZCOLL_HEARTBEAT_TIMEOUT": "1.5"})
    j.server.wait(["stopping"])
    os.kill(j.procs[1].pid, signal.SIGSTOP)
    stopped = time.time()
    got = j.reports([0, 2])
    for r, rep in got.items():
        assert "rank 1 (node-a) sent no heartbeat for" in rep["message"], (r, rep)
        assert "ZCOLL_HEARTBEAT_TIMEOUT" in rep["message"], (r, rep)
        assert 1.2 < rep["t_error"] - stopped < 4, (r, rep["t_error"] - stopped)
    os.kill(j.procs[1].pid, signal.SIGCONT)


@pytest.mark.timeout(120)
def test_the_rank_that_is_behind_is_named_not_the_neighbour(job):
    j = job("behind", world=4, transport="shm", victim=2, timeout=2)
    got = j.reports([0, 1, 3])
    for r, rep in got.items():
        msg = rep["message"]
        assert rep["error"] == "DistTimeoutError", (r, rep)
        assert "holding it up: behind (not yet in collective #1): rank 2 (node-a);" in msg, (r, msg)
        assert "rank 2 (node-a): idle after ALLREDUCE #0" in msg, (r, msg)
        assert "not answering" not in msg and "gone" not in msg, (r, msg)
    j.reports([2])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ranks_that_disagree_on_the_root_all_raise(job, transport):
    j = job("roots", world=3, transport=transport)
    got = j.reports([0, 1, 2])
    for r, rep in got.items():
        assert rep["error"] == "DistBackendError", (r, rep)
        assert "the ranks passed different roots (from 0 to 1" in rep["message"], (r, rep)


@pytest.mark.timeout(120)
def test_ranks_in_separate_pid_namespaces_sharing_dev_shm_train_normally(job):
    """docker --ipc=host / Kubernetes hostIPC: the ranks share /dev/shm, not a PID namespace
    (each is pid 1 of its own), and stay healthy through idle waits."""
    j = job("train", world=2, transport="shm", wrap=("unshare", "--pid", "--fork", "--kill-child"))
    got = j.reports([0, 1])
    for r, rep in got.items():
        assert rep["error"] is None, rep
        assert rep["total"] == sum(2 * i + 1 for i in range(6)) * 1.0, rep
        assert rep["pids"] == [1, 1], rep  # really in PID namespaces of their own
        # a peer's pid means another process here: the probe sees it, and the rings carry all
        assert rep["big_ok"] and rep["single_copy"]["single_copy_peers"] == 0, rep
        assert rep["single_copy"]["single_copy_messages"] == 0, rep


@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_survivors_shrink_and_continue(job, transport):
    j = job("shrink", world=4, transport=transport, victim=3)
    got = j.reports([0, 1, 2])
    for r, rep in got.items():
        assert rep["error"] is not None and "rank 3 (node-a)" in rep["message"], rep
        assert rep["new_world"] == 3 and rep["new_rank"] == r, rep
        assert rep["sum"] == rep["want"] == 3.0, rep


def expected_checksum_results(world):
    out = []
    for n in (0, 7, 1000, 300_000):
        out.append(float(sum(sum(range(n)) + r * n for r in range(world))))
        out.append(float(sum(r * n for r in range(world))))
        out.append(float((world - 1) * n))
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checksums_pass_clean_runs(job, transport):
    j = job("checksum", world=3, transport=transport, env={"ZCOLL_CHECKSUM": "1"})
    for r, rep in j.reports([0, 1, 2]).items():
        assert rep["error"] is None and rep["results"] == expected_checksum_results(3), rep


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("nth", [0, 5])
def test_a_bit_flipped_in_transit_raises_on_every_rank(job, transport, nth):
    """Rank 1's link corrupts the nth message it receives: every rank raises, naming the link."""
    j = job("checksum", world=3, transport=transport, env={"ZCOLL_CHECKSUM": "1", "ZCOLL_TEST_FLIP_BIT": f"1:{nth}"})
    for r, rep in j.reports([0, 1, 2]).items():
        assert rep["error"] is not None, (r, rep)
        assert re.search(r"checksum mismatch on the link from rank \d to rank 1: a message of \d+ bytes of "
                         r"\w+\(.*\) #\d+", rep["message"]), (r, rep["message"])


@pytest.mark.timeout(120)
def test_the_fault_injector_corrupts_data_without_checksums(job):
    """What the checksums catch is real: the same flip without them gives a wrong result."""
    j = job("checksum", world=3, transport="shm", env={"ZCOLL_TEST_FLIP_BIT": "1:5"})
    reps = j.reports([0, 1, 2])
    assert any(rep["error"] is None and rep["results"] != expected_checksum_results(3) for rep in reps.values()), reps
