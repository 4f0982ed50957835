"""Launcher glue: torch reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (torchrun sets them);
under mpirun, `mpi_env()` derives them from Open MPI's (or PMI's) variables, so that
`dist.init_process_group("zcoll")` works unchanged."""
from __future__ import annotations

import os
import socket


# What MPI launchers (Open MPI, PMI/PMIx) set in each rank.
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _first(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def mpi_env(port: int | None = None) -> dict[str, str]:
    """Sets (and returns) RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT from the MPI launcher's environment. Rank 0's host and a free port of its are
    shared through mpi4py when it is installed; otherwise MASTER_ADDR/MASTER_PORT must be set.
    Variables already set are kept."""
    rank = _first(*MPI_RANK_VARS)
    size = _first(*MPI_SIZE_VARS)
    if rank is None or size is None:
        raise RuntimeError("zcoll.launch.mpi_env: no MPI launcher variables (OMPI_COMM_WORLD_RANK/SIZE "
                           "or PMI_RANK/SIZE); run under mpirun, or use torchrun")
    env = {"RANK": rank, "WORLD_SIZE": size,
           "LOCAL_RANK": _first("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID") or "0",
           "LOCAL_WORLD_SIZE": _first("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS") or "1"}
    if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("zcoll.launch.mpi_env: set MASTER_ADDR and MASTER_PORT, or install mpi4py "
                               "so rank 0 can share its address") from None
        comm = MPI.COMM_WORLD
        addr = None
        if comm.Get_rank() == 0:
            with socket.socket() as s:
                s.bind(("", port or 0))
                addr = (socket.gethostname(), s.getsockname()[1])
        host, free_port = comm.bcast(addr, root=0)
        env["MASTER_ADDR"] = os.environ.get("MASTER_ADDR") or host
        env["MASTER_PORT"] = os.environ.get("MASTER_PORT") or str(free_port)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in env}
