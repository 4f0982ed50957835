"""bench/multihost_allreduce.py end to end, small: two shaped hosts of two ranks each, every
configuration timed, the table well-formed, the compressed errors within the documented bounds,
the namespaces gone afterwards. Where namespaces cannot be made the test is skipped with the
reason."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commands import bench_script, run_command

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "multihost_allreduce.py"
BRIDGE, SUBNET, NAMES = "zcbn0", "10.231.82", "zcoll-mbt"


@pytest.mark.timeout(200)
def test_multihost_benchmark_runs():
    if shutil.which("ip") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root, iproute2 (ip) and unshare")
    try:
        _, undo = bench_script("shaped_allreduce").make_hosts(1, "1gbit", BRIDGE, SUBNET, NAMES)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make shaped network namespaces here: {getattr(e, 'stderr', e)}")
    undo()
    cmd = [sys.executable, str(SCRIPT), "--hosts", "2", "--per-host", "2", "--mib", "1", "--iters", "1",
           "--bridge", BRIDGE, "--subnet", SUBNET, "--names", NAMES]
    code, out, err = run_command(cmd, 180, stop_signal=signal.SIGTERM)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "2 hosts x 2 ranks (host0: 0,1; host1: 2,3)" in out, out
    rows = {m[0]: m for m in re.findall(r"^\s+1\s+(gloo|flat ring|default|default int8|default int4)\s+([\d.]+)"
                                         r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*([\d.e+-]*)$", out, re.M)}
    assert set(rows) == {"gloo", "flat ring", "default", "default int8", "default int4"}, out
    assert float(rows["default int8"][5]) < 0.0175 and float(rows["default int4"][5]) < 0.32, out
    assert NAMES not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
