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
    saved = json.loads(out_json.read_text())
    results = saved["runs"]["0"]  # the one seed's run
    names = ["ddp-gloo", "ddp-zcoll", "ddp-zcoll-int8ef", "periodic", "diloco", "diloco-int8", "gossip", "ps", "ps-dc"]
    assert list(results) == names and list(saved["summary"]) == names
    for name, s in saved["summary"].items():  # the medians of one run are its figures
        assert s["runs"] == s["reached_in"] == 1, (name, s)
        assert [s["seconds"], s["bytes"], s["steps"]] == results[name]["reached"], (name, s)
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


def test_summary_takes_medians_over_the_seeds_that_reached_the_target():
    import importlib.util
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(reached, final):
        return {"reached": reached, "final": final, "numel": 10, "curve": [], "steps": 0}
    runs = {0: {"a": run([10.0, 100, 5], 0.96), "b": run(None, 0.90)},
            1: {"a": run([30.0, 300, 15], 0.95), "b": run([50.0, 40, 20], 0.951)},
            2: {"a": run([20.0, 200, 10], 0.97), "b": run(None, 0.92)}}
    s = bench.summarise(runs)
    assert s["a"] == {"runs": 3, "reached_in": 3, "seconds": 20.0, "bytes": 200, "steps": 10, "final": 0.96,
                      "numel": 10}
    assert s["b"]["reached_in"] == 1 and s["b"]["seconds"] == 50.0 and s["b"]["final"] == 0.92
    assert bench.summarise({0: {"a": run(None, 0.5)}, 1: {"a": run([1.0, 2, 3], 0.6)}})["a"]["final"] == 0.55
