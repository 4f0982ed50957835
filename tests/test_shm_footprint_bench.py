"""bench/shm_footprint.py on small groups: it measures what each rank holds at creation (headers
only), after its workload (a ring per peer that sent to it, both lanes) and reports the worst case
and the old layout's figure."""
import json
import sys
from pathlib import Path

import pytest
from commands import run_command

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "shm_footprint.py"
MiB = 1 << 20


@pytest.mark.timeout(200)
def test_footprint_of_small_groups(tmp_path):
    out_json = tmp_path / "fp.json"
    code, out, err = run_command([sys.executable, str(SCRIPT), "--worlds", "2,3", "--timeout", "120",
                                  "--json", str(out_json)], 180)
    assert code == 0, out[-2000:] + err[-3000:]
    rows = json.loads(out_json.read_text())
    assert [r["world"] for r in rows] == [2, 3]
    for r in rows:
        p, ring = r["world"], r["ring_bytes"]
        assert r["fresh_bytes"] <= 2 * 8192, r  # two lanes' headers, no ring yet
        # every peer sent on the collectives' lane, one on the point-to-point lane
        assert r["fresh_bytes"] + p * ring <= r["max_bytes"] <= r["worst_bytes"], r
        assert r["worst_bytes"] < r["before_bytes"], r
        assert f"{p:>5} {ring // 1024:>6} KiB" in out, out
