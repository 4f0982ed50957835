"""bench/time_to_accuracy.py --smoke: every synchronisation strategy trains the small digits MLP
on 3 local ranks to the smoke target, and the table names each with its time, bytes and final
accuracy; the strategies that synchronise less send fewer bytes than synchronous DDP."""
import json
import sys
from pathlib import Path

import pytest
from commands import run_command

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "time_to_accuracy.py"


@pytest.mark.timeout(300)
def test_smoke_run_reaches_the_target_with_every_strategy(tmp_path):
    out_json = tmp_path / "tta.json"
    code, out, err = run_command([sys.executable, str(SCRIPT), "--smoke", "--json", str(out_json)], 280)
    assert code == 0, out[-3000:] + err[-3000:]
    results = json.loads(out_json.read_text())["results"]
    names = ["ddp-gloo", "ddp-zcoll", "ddp-zcoll-int8ef", "periodic", "diloco", "diloco-int8", "gossip", "ps", "ps-dc"]
    assert list(results) == names
    for name, r in results.items():
        assert r["reached"] is not None, (name, r["curve"][-3:])
        seconds, sent, steps = r["reached"]
        assert seconds > 0 and sent > 0 and steps > 0, (name, r["reached"])
        assert r["final"] >= 0.85, (name, r["final"])
        assert name in out
    ddp = results["ddp-zcoll"]["reached"][1] / results["ddp-zcoll"]["reached"][2]  # bytes per step
    assert results["ddp-zcoll-int8ef"]["reached"][1] / results["ddp-zcoll-int8ef"]["reached"][2] < ddp / 3
    for name in ("periodic", "diloco"):  # one all-reduce every 10 steps
        r = results[name]["reached"]
        assert r[1] / r[2] < ddp / 5, (name, r)
