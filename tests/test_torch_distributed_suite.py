"""PyTorch's own DistributedTest with BACKEND=zcoll (tests/torch_distributed_suite.py runs it as
torch runs it for gloo): the tests zcoll is held to, each of which must pass (not be skipped)."""
import json
import sys
from pathlib import Path

import pytest
from commands import clean_env, run_command

SUITE = Path(__file__).with_name("torch_distributed_suite.py")


def run_suite(world, patterns, timeout):
    """{test name: "passed" | "failed" | "skipped: why"} of torch's tests matching `patterns`."""
    code, out, err = run_command([sys.executable, str(SUITE), *patterns], timeout,
                                 env=clean_env({"BACKEND": "zcoll", "WORLD_SIZE": str(world)}))
    lines = out.strip().splitlines()
    assert lines, f"the suite printed no outcomes (exit {code})\n{err[-4000:]}"
    return json.loads(lines[-1]), err


ALL_GATHER_COALESCED = ["test_all_gather_coalesced_simple", "test_all_gather_coalesced_complex",
                        "test_all_gather_coalesced_full_group", "test_all_gather_coalesced_with_empty"]


@pytest.mark.timeout(400)
def test_torch_all_gather_coalesced_tests_pass():
    outcomes, err = run_suite(3, ALL_GATHER_COALESCED, timeout=350)
    assert {t: outcomes.get(t) for t in ALL_GATHER_COALESCED} == dict.fromkeys(ALL_GATHER_COALESCED, "passed"), \
        f"{outcomes}\n{err[-4000:]}"


@pytest.mark.timeout(300)
def test_torch_all_gather_coalesced_group_test_passes_at_8_ranks():
    """torch runs its subgroup variant only from 8 ranks."""
    outcomes, err = run_suite(8, ["test_all_gather_coalesced_group"], timeout=250)
    assert outcomes == {"test_all_gather_coalesced_group": "passed"}, f"{outcomes}\n{err[-4000:]}"
