"""Running the project's commands and bench scripts from the tests: a clean environment, a
process group of their own with a hard timeout, and bench/*.py loaded as modules."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
CI_RUN = BENCH.parent / ".ci" / "run"
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env(extra: dict | None = None) -> dict:
    """This environment without a launcher's rank variables or ZCOLL_/Open MPI settings, so a
    command starts as from a fresh shell; plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("ZCOLL_", "OMPI_", "PMIX_"))}
    env.update(extra or {})
    return env


def run_command(cmd: list[str], timeout: float, env: dict | None = None, stop_signal: int | None = None,
                cwd: str | Path | None = None):
    """Runs `cmd` in a session of its own; returns (exit status, stdout, stderr). On timeout the
    test fails, after `stop_signal` (with 30 s to clean up) if given, then SIGKILL to every
    process the command started."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env() if env is None else env, start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if stop_signal is None:
                raise subprocess.TimeoutExpired(cmd, 0)
            proc.send_signal(stop_signal)
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} timed out\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def bench_script(name: str):
    """bench/<name>.py as a module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ci_test_command() -> str:
    """The command CI runs (.ci/run's TEST_COMMAND), which the README shows verbatim."""
    return re.search(r"^TEST_COMMAND='(.+)'$", CI_RUN.read_text(), re.M).group(1)
