"""bench/shaped_bench.py end to end: zcoll-bench in two network namespaces on tbf-shaped links
(zcoll over tcp, gloo next to it) prints a well-formed table whose every check passes, exits 0,
and removes its namespaces. Needs root and iproute2 (ip, tc), as tests/test_netns.py: where
namespaces cannot be made the test is skipped with the reason."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commands import bench_script, run_command
from test_bench_cli import parse

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "shaped_bench.py"
# Not the script's defaults (a shaped run may be going on), nor test_netns.py's or shaped_allreduce.py's.
BRIDGE, SUBNET, NAMES = "zcbq0", "10.231.80", "zcoll-sbt"
SIZES, BACKENDS = [65536, 262144], ["zcoll", "zcoll+int8", "gloo"]


@pytest.fixture
def netns():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    try:  # what the script will do, once: skip where it cannot be done
        _, undo = bench_script("shaped_allreduce").make_hosts(1, "1gbit", BRIDGE, SUBNET, NAMES)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make shaped network namespaces here: {getattr(e, 'stderr', e)}")
    undo()


def _namespaces():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@pytest.mark.timeout(150)
def test_zcoll_bench_across_shaped_namespaces(netns):
    cmd = [sys.executable, str(SCRIPT), "--world", "2", "--rate", "1gbit", "--timeout", "100",
           "--bridge", BRIDGE, "--subnet", SUBNET, "--names", NAMES,
           "--", "all_reduce", "-b", "64K", "-e", "256K", "-f", "4", "-n", "2", "-w", "1",
           "--backend", "zcoll,gloo", "--compress", "none,int8"]
    # on a timeout, SIGTERM first: the script kills its ranks and removes the namespaces
    code, out, err = run_command(cmd, 120, stop_signal=signal.SIGTERM)
    assert code == 0, out[-3000:] + err[-3000:]

    hosts = re.findall(rf"\d+: ({NAMES}\d+-\d+) {re.escape(SUBNET)}\.1\d", out)
    assert len(hosts) == 2, out[:2000]
    assert "2 ranks via env://; backends: zcoll (tcp), gloo" in out, out[:2000]
    bound = re.search(r"int8 ([0-9.e-]+)", out)
    assert bound, out[:2000]
    table = parse(out)["all_reduce"]
    assert [(int(r["size"]), r["backend"]) for r in table["rows"]] == [(s, b) for s in SIZES for b in BACKENDS]
    for r in table["rows"]:
        for place in ("oop", "ip"):
            cell = r[place]
            assert float(cell["time"]) > 0 and float(cell["busbw"]) >= 0, r
            if r["backend"] == "zcoll+int8":  # relerr, within docs/compression.md's bound
                assert 0 < float(cell["check"]) < float(bound.group(1)), r
            else:
                assert cell["check"] == "0", r  # #wrong
    assert table["footer"][0] == "# Out of bounds values : 0 OK"
    assert [line.split()[-1] for line in table["footer"] if line.startswith("# Avg bus")] == BACKENDS
    assert len(table["ratio"]) == len(SIZES)

    left = _namespaces()
    assert not any(ns in left for ns in hosts), left
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0, \
        f"bridge {BRIDGE} left behind"
