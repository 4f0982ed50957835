"""bench/ddp_step.py end to end at a tiny size: one command prints the DDP step-time table with
every configuration (a positive median time, ranks in agreement) and --json writes the same."""
import json
import math
import re
import sys

import pytest
from commands import BENCH, run_command

SCRIPT = BENCH / "ddp_step.py"
CONFIGS = ["compute", "gloo", "zcoll", "zcoll-int8+EF", "zcoll-bf16"]
ROW = re.compile(r"^(?P<name>\S+)\s+(?P<ms>\d+\.\d+)\s+(?P<lo>\d+\.\d+)-(?P<hi>\d+\.\d+)\s+(?P<ratio>\d+\.\d+)\s")


def run_script(args, timeout=90):
    """Runs the script in its own session (a hang kills every rank it started); returns
    (exit status, stdout, stderr)."""
    return run_command([sys.executable, str(SCRIPT), *args], timeout)


@pytest.mark.timeout(120)
def test_tiny_run_prints_every_config_and_writes_json(tmp_path):
    path = tmp_path / "ddp_step.json"
    code, out, err = run_script(["--nproc", "2", "--params", "200K", "--steps", "3", "--warmup", "1",
                                 "--json", str(path)])
    assert code == 0, f"{out}\n{err[-3000:]}"
    rows = {m["name"]: m for m in map(ROW.match, out.splitlines()) if m}
    assert list(rows) == CONFIGS, out
    for name, m in rows.items():
        assert float(m["ms"]) > 0 and float(m["lo"]) <= float(m["ms"]) <= float(m["hi"]), out
        assert "disagree" not in m.string, out
    assert float(rows["zcoll"]["ratio"]) == 1.0, out

    data = json.loads(path.read_text())
    assert data["nproc"] == 2 and 150_000 < data["parameters"] < 250_000, data
    assert list(data["results"]) == CONFIGS, data
    for name, row in data["results"].items():
        assert row["ms_per_step"] > 0 and math.isfinite(row["ms_per_step"]), (name, row)
        assert row["ranks_agree"] and math.isfinite(row["last_loss"]), (name, row)
        assert abs(row["ms_per_step"] - float(rows[name]["ms"])) < 0.06, (name, row, out)
    assert data["results"]["zcoll"]["over_zcoll"] == 1.0


@pytest.mark.timeout(60)
def test_unknown_config_is_a_usage_error():
    code, _, err = run_script(["--configs", "zcoll,nccl"], timeout=45)
    assert code == 2 and "nccl" in err, err
