import fnmatch
import os

import pytest
from hypothesis import HealthCheck, settings

# CI runs more examples; local runs stay quick. Never a deadline: 2 shared cores are noisy.
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# Measured tables (error per codec/schedule/p, ...) that tests register with `report(title, rows)`;
# printed once at the end of the run so CI logs carry the figures the bounds are checked against.
_REPORTS: list[tuple[str, list[str]]] = []


def report(title: str, lines: list[str]) -> None:
    _REPORTS.append((title, lines))


def pytest_terminal_summary(terminalreporter):
    for title, lines in _REPORTS:
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


# The slow tier: `pytest -m "not slow"` leaves these out (under 5 minutes on 2 cores instead of
# about 16); CI runs everything. Node ids as pytest prints them, fnmatch patterns; each entry
# costs seconds per test, and the fast tier keeps a smaller case of the same code path.
SLOW = {
    # deaths, hangs, namespaces, benchmarks and launchers: whole files
    "tests/test_failures.py::*": "processes killed and hung on purpose",
    "tests/test_fault_benches.py::*": "the soak and death-to-error benches",
    "tests/test_multihost.py::*": "network namespaces as hosts",
    "tests/test_multihost_bench.py::*": "network namespaces as hosts",
    "tests/test_netns.py::*": "network namespaces",
    "tests/test_shaped_bench.py::*": "tbf-shaped namespaces",
    "tests/test_ucx_bench.py::*": "the UCX benchmark, shaped namespaces and loopback",
    "tests/test_time_to_accuracy.py::*": "every synchronisation strategy trains (the benchmark's smoke run)",
    "tests/test_error_feedback.py::*": "DDP training runs",
    "tests/test_ddp_step_bench.py::*": "DDP step benchmark",
    "tests/test_shrink_example.py::*": "DDP on 4 ranks through a death",
    "tests/test_hierarchical.py::*": "hosts of several ranks (the fast tier keeps the flat schedules)",
    "tests/test_torch_distributed_suite.py::*": "torch's DistributedTest",
    "tests/test_doc_snippets.py::test_python_block_runs*": "runs each snippet on 2 ranks",
    "tests/test_doc_snippets.py::test_shell_block_runs_or_checks*": "launchers and benches' --help",
    "tests/test_doc_snippets.py::test_console_commands_run*": "fresh interpreters",
    "tests/test_build.py::test_demo_main_job_runs": "a benchmark",
    "tests/test_build.py::test_allreduce_compare_runs": "a benchmark",
    "tests/test_build.py::test_shaped_link_benchmark_runs": "a benchmark",
    "tests/test_bench_cli.py::test_every_collective_under_*": "whole zcoll-bench runs",
    "tests/test_bench_cli.py::test_checksum_both_puts_a_crc_line_beside_zcoll": "a zcoll-bench run",
    "tests/test_bench_cli.py::test_under_torchrun": "a zcoll-bench run",
    "tests/test_bench_cli.py::test_nproc_with_mpi_reruns_itself_under_mpirun": "a zcoll-bench run",
    "tests/test_bench_cli.py::test_corrupted_results_fail_the_run": "a zcoll-bench run",
    "tests/test_bench_cli.py::test_compressed_rows_report_relerr_within_the_documented_bound": "a zcoll-bench run",
    "tests/test_bench_cli.py::test_plot_writes_a_png": "a zcoll-bench run",
    # the largest worlds and the timeouts (smaller worlds of the same tests stay fast)
    "tests/test_schedules_native.py::test_oversubscribed_ranks_every_algorithm*": "5 and 8 ranks on 2 cores",
    "tests/test_schedules_native.py::test_all_reduce_every_dtype_and_op_shm[[]4-*": "4 ranks (2 and 3 stay)",
    "tests/test_schedules_native.py::test_reduce_scatter_and_reduce_every_dtype_and_op[[]4]": "4 ranks (2 and 3 stay)",
    "tests/test_compressed_native.py::test_two_shot_at_8_ranks": "8 ranks",
    "tests/test_transport.py::test_ring_exchange[[]shm-8]": "8 ranks",
    "tests/test_p2p.py::test_batch_isend_irecv_ring[[]*-8]": "8 ranks",
    "tests/test_p2p.py::test_recv_without_sender_times_out_clearly*": "waits for a timeout",
    "tests/test_torch_contract.py::test_monitored_barrier_reports_the_absent_ranks_like_gloo*": "waits for a timeout",
    "tests/test_torch_contract.py::test_failures_raise_torch_exception_types*": "kills ranks",
    "tests/test_bootstrap_trust.py::test_strangers_on_the_bootstrap_port_are_dropped_and_logged": "waits out hello deadlines",
    "tests/test_device_path.py::test_backend_device_path_equals_host_path[[]int8]": "[none] stays",
    "tests/test_device_path.py::test_backend_device_path_equals_host_path[[]fp16]": "[none] stays",
    "tests/test_device_path.py::test_staged_schedules_equal_reference[[]4]": "4 ranks (2 and 3 stay)",
    "tests/test_backend.py::test_ddp_trains_like_gloo[[]3]": "[2] stays",
    "tests/test_backend.py::test_allreduce_equals_reference[[]4-*": "4 ranks (2 and 3 stay)",
    "tests/test_backend_compressed.py::test_*[[]4-*": "4 ranks (2 and 3 stay)",
    "tests/test_compressed_native.py::test_*[[]4]": "4 ranks (2 and 3 stay)",
    "tests/test_transport.py::test_ring_exchange[[]*-4]": "4 ranks (2 and 3 stay)",
    "tests/test_p2p.py::test_batch_isend_irecv_ring[[]*-4]": "4 ranks (2 and 3 stay)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern in SLOW):
            item.add_marker(pytest.mark.slow)
