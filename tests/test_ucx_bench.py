"""bench/ucx_bench.py end to end, small: the shaped all-reduce table (zcoll tcp, zcoll ucx and gloo
across two tbf-shaped namespaces) and the loopback table (latency and bandwidth of both
transports next to ucx_perftest's). Skipped, with the reason, without UCX or (shaped) without
network namespaces."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commands import bench_script, run_command
from transports import ucx_missing

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ucx_bench.py"
BRIDGE, SUBNET = "zcbv0", "10.231.84"  # not the script's defaults: a real run may be going on
UCX_MISSING = ucx_missing()
pytestmark = pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING)


@pytest.mark.timeout(200)
def test_shaped_table(tmp_path):
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    try:
        _, undo = bench_script("shaped_allreduce").make_hosts(1, "1gbit", BRIDGE, SUBNET, "zcoll-ubt")
        undo()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make shaped network namespaces here: {getattr(e, 'stderr', e)}")
    out_json = tmp_path / "shaped.json"
    code, out, err = run_command([sys.executable, str(SCRIPT), "shaped", "--sizes", "4096,1048576", "--iters", "2",
                                  "--bridge", BRIDGE, "--subnet", SUBNET, "--json", str(out_json)], 180,
                                 stop_signal=signal.SIGTERM)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "zcoll transports {'zcoll tcp': 'tcp', 'zcoll ucx': 'ucx'}, UCX_TLS=tcp" in out, out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["bytes"] for r in rows] == [4096, 1048576]
    big = rows[1]
    for backend in ("zcoll tcp", "zcoll ucx", "gloo"):
        assert big[f"{backend} s"] > 0
        assert 0.3 < big[f"{backend} link"] < 1.05, big  # 1 MiB is link-bound on every backend
    assert BRIDGE not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


@pytest.mark.timeout(300)
def test_loopback_table(tmp_path):
    out_json = tmp_path / "loop.json"
    code, out, err = run_command([sys.executable, str(SCRIPT), "loopback", "--iters", "1", "--json", str(out_json)],
                                 280)
    assert code == 0, out[-3000:] + err[-3000:]
    got = json.loads(out_json.read_text())
    for kind in ("tcp", "ucx"):
        assert got[kind]["latency_us"] > 0 and got[kind]["bandwidth_gbs"] > 0, got
    perf = got["ucx_perftest"]  # the libucx wheel ships ucx_perftest
    assert perf["latency_us"] > 0 and perf["bandwidth_gbs"] > 0, got
    assert "ucx_perftest" in out and "zcoll ucx" in out
