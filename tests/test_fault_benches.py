"""The failure benches in short: bench/soak.py (random collectives and point-to-point with empty
tensors, uneven and empty all_to_all splits and async ops, against the reference every rank
computes: 0 wrong) and bench/death_to_error.py in its smallest form. The closing figures run
them in full (bench/README.md, "Failures")."""
import re
import sys

import pytest
from commands import BENCH, clean_env, run_command


@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport,env", [("shm", {}), ("tcp", {}), ("shm", {"ZCOLL_CHECKSUM": "1"})])
def test_a_short_random_soak_is_exact(transport, env):
    code, out, err = run_command([sys.executable, str(BENCH / "soak.py"), "--ops", "2000", "--nproc", "3",
                                  "--transport", transport, "--seed", "11", "--timeout", "120"],
                                 timeout=140, env=clean_env(env))
    assert code == 0, out[-3000:] + err[-3000:]
    # the table's row: ops run, ops wrong, errors, ...
    assert re.search(r"^\s+2000\s+0\s+0\s", out, re.M), out[-2000:]


@pytest.mark.timeout(120)
def test_death_to_error_bench_measures_zcoll_and_gloo():
    code, out, err = run_command([sys.executable, str(BENCH / "death_to_error.py"), "--reps", "1", "--phases", "small",
                                  "--hows", "sigkill", "--fates", "zombie", "--setups", "zcoll/shm,gloo/tcp"],
                                 timeout=100, env=clean_env())
    assert code == 0, out[-3000:] + err[-3000:]
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+/\w+)\s+small\s+([\d.]+)\s", out, re.M)}
    assert set(rows) == {"zcoll/shm", "gloo/tcp"} and all(v < 2 for v in rows.values()), out[-2000:]
