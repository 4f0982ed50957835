"""PyTorch's own DistributedTest with BACKEND=zcoll (tests/torch_distributed_suite.py runs it as
torch runs it for gloo): the tests zcoll is held to, each of which must pass (not be skipped).
At 2 ranks that is every test torch runs for a backend of its kind; the others torch skips (for
gloo, NCCL or MPI only, for GPUs, for more ranks), docs/architecture.md lists them by reason."""
import json
import sys
from pathlib import Path

import pytest
from commands import clean_env, run_command

SUITE = Path(__file__).with_name("torch_distributed_suite.py")


def run_suite(world, patterns, timeout):
    """{test name: "passed" | "failed" | "skipped: why"} of torch's tests matching `patterns` (all
    of them if none). A test that hangs fails after 120 s (torch's default is 300)."""
    env = clean_env({"BACKEND": "zcoll", "WORLD_SIZE": str(world),
                     "DISTRIBUTED_TESTS_DEFAULT_TIMEOUT": "120"})
    code, out, err = run_command([sys.executable, str(SUITE), *patterns], timeout, env=env)
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


# Every test of DistributedTest that torch runs for a backend other than gloo, NCCL, MPI and UCC
# at 2 ranks on a machine without GPUs (torch 2.13): 65 of its 285.
PASSING_AT_2_RANKS = [
    "test_Backend_enum_class", "test_DistributedDataParallelCPU",
    "test_DistributedDataParallelCPU_grad_is_view", "test_all_gather",
    "test_all_gather_coalesced_complex", "test_all_gather_coalesced_full_group",
    "test_all_gather_coalesced_simple", "test_all_gather_coalesced_with_empty",
    "test_all_gather_complex", "test_all_gather_full_group",
    "test_all_reduce_coalesced_max_complex_unsupported", "test_all_reduce_complex_unsupported_ops",
    "test_all_reduce_full_group_max", "test_all_reduce_full_group_min",
    "test_all_reduce_full_group_product", "test_all_reduce_full_group_sum", "test_all_reduce_max",
    "test_all_reduce_min", "test_all_reduce_product", "test_all_reduce_sum",
    "test_all_reduce_sum_async", "test_all_reduce_sum_complex", "test_barrier",
    "test_barrier_full_group", "test_broadcast", "test_broadcast_full_group",
    "test_ddp_create_graph", "test_ddp_logging_data_cpu", "test_destroy_full_group",
    "test_destroy_group", "test_dump_DDP_relevant_env_vars", "test_gather", "test_gather_checks",
    "test_gather_full_group", "test_get_backend", "test_get_rank", "test_get_rank_size_full_group",
    "test_get_rank_size_group", "test_irecv", "test_isend", "test_isend_autograd_profiler",
    "test_isend_torch_profiler", "test_reduce_full_group_max", "test_reduce_full_group_min",
    "test_reduce_full_group_product", "test_reduce_full_group_sum", "test_reduce_max",
    "test_reduce_min", "test_reduce_product", "test_reduce_sum", "test_reduce_sum_twice",
    "test_scatter", "test_scatter_checks", "test_scatter_complex", "test_scatter_full_group",
    "test_send_recv", "test_send_recv_any_source", "test_send_recv_any_source_autograd_profiler",
    "test_send_recv_any_source_torch_profiler", "test_send_recv_autograd_profiler",
    "test_send_recv_torch_profiler", "test_send_recv_with_tag",
    "test_send_recv_with_tag_autograd_profiler", "test_send_recv_with_tag_torch_profiler",
    "test_static_graph_api_cpu",
]


@pytest.mark.timeout(420)
def test_torch_distributed_test_at_2_ranks_passes_all_it_runs():
    """The whole DistributedTest (under a minute on 2 cores): none fails, and exactly the tests
    above pass, so one that becomes skipped (or newly runs) fails this too."""
    outcomes, err = run_suite(2, [], timeout=380)
    failed = sorted(t for t, o in outcomes.items() if o == "failed")
    assert not failed, f"failed: {failed}\n{err[-12000:]}"
    passed = {t for t, o in outcomes.items() if o == "passed"}
    assert passed == set(PASSING_AT_2_RANKS), (
        f"expected to pass but {({t: outcomes.get(t, 'not run') for t in set(PASSING_AT_2_RANKS) - passed})}; "
        f"passing but not listed: {sorted(passed - set(PASSING_AT_2_RANKS))}")
    assert all(o.startswith("skipped: ") for t, o in outcomes.items() if t not in passed), outcomes
