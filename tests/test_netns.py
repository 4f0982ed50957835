"""zcoll over tcp between "hosts": each rank in its own network namespace, joined by veth pairs
on a bridge (docs/architecture.md, transports). Needs root and iproute2; where namespaces cannot
be made the test is skipped with the reason."""
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from commands import bench_script

RANK = str(Path(__file__).with_name("netns_rank.py"))
BRIDGE, SUBNET = "zcbr0", "10.231.77"
WORLD = 3


@pytest.fixture
def hosts():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    try:
        names, undo = bench_script("shaped_allreduce").make_hosts(WORLD, None, BRIDGE, SUBNET, "zcoll-t")
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make network namespaces here: {getattr(e, 'stderr', e)}")
    yield names
    undo()


@pytest.mark.timeout(180)
def test_tcp_across_network_namespaces(hosts):
    import torch.distributed as dist
    server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    env["MASTER_ADDR"] = f"{SUBNET}.1"  # the tcp transport advertises the address routing there
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, RANK, "--store",
                               f"{SUBNET}.1:{server.port}", "--rank", str(r), "--world", str(WORLD)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for r, ns in enumerate(hosts)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=150)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (code, out, err) in enumerate(outs):
        assert code == 0, f"rank {r}: {out}\n{err[-3000:]}"
        assert f"rank {r} transport=tcp ok" in out
