"""zcoll-bench: nccl-tests-style microbenchmarks of torch.distributed collectives, zcoll side by
side with gloo and MPI in the same processes.

    zcoll-bench --nproc 2 all_reduce -b 8 -e 64M -f 4 --backend zcoll,gloo,mpi
    python -m zcoll.bench --help

Modules: `cli` (flags), `launch` (mpirun / torchrun / --nproc), `collectives` (what each
collective runs, its bus-bandwidth factor, its verifiable inputs), `sweep` (one rank's timing and
checking), `report` (table, ratio summary, JSON, plot).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Runs zcoll-bench with `argv` (default: sys.argv[1:]); returns the exit status: 0 when every
    check passed, 1 when a result was wrong, 2 for bad flags (argparse exits with it)."""
    from . import cli, launch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = cli.parse_args(argv)
    kind = launch.launcher()
    if kind is None:  # no launcher: --nproc ranks of our own (or this process alone)
        nproc = args.nproc or 1
        problem = cli.check_world(args, nproc)
        if problem:
            args.parser.error(problem)
        if "mpi" in args.backends:
            why = launch.mpi_available()
            if why is None:
                launch.exec_mpirun(argv, nproc, args.bind)  # does not return
            _drop_mpi(args, why)
        if nproc > 1:
            return launch.spawn(argv, nproc, args.bind)
        kind = "single"
    else:
        rank = _launcher_rank(kind)
        problem = cli.check_world(args, launch.world_size(kind))
        if problem:
            if rank == 0:
                args.parser.error(problem)
            return 2
        if "mpi" in args.backends and kind != "mpirun":
            # --nproc's parent has said why already; under torchrun, rank 0 says it once
            _drop_mpi(args, "MPI needs the ranks to be started by mpirun", quiet=kind == "nproc" or rank != 0)
        try:
            launch.prepare_rank(kind)
        except RuntimeError as e:  # e.g. mpirun without mpi4py and without MASTER_ADDR/PORT
            print(f"zcoll-bench: error: {e}", file=sys.stderr, flush=True)
            return 1
    from . import sweep
    return sweep.run(args, kind)


def _launcher_rank(kind: str) -> int:
    import os
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def _drop_mpi(args, why: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"zcoll-bench: warning: leaving out backend mpi: {why}", file=sys.stderr, flush=True)
    args.backends = [b for b in args.backends if b != "mpi"]
    if not args.backends:
        args.parser.error(f"no backend left to run (mpi: {why})")


__all__ = ["main"]
