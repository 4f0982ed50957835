"""PyTorch's own distributed test suite (torch.testing._internal.distributed.distributed_test's
DistributedTest, the tests torch runs for gloo and NCCL) with zcoll as the backend, as torch's
test_distributed_spawn.py runs it for its own backends. Run it as a script, naming the tests
by substrings (as unittest's -k: a pattern with a * is an fnmatch pattern on
"__main__.TestZcollBackend.<test>", so "*.test_barrier" is that test alone; no pattern runs
every test); it prints each test's outcome, then one JSON line of them all:

    WORLD_SIZE=3 python tests/torch_distributed_suite.py all_gather_coalesced

The ranks are forked from the runner, which has imported torch, its tests and zcoll already, as
torch's test_distributed_fork.py used to run it: about a second a test instead of a spawned
rank's ten (mostly its imports). --spawn spawns them, as test_distributed_spawn.py does.

tests/test_torch_distributed_suite.py runs the tests zcoll is held to."""
import json
import os
import sys
import unittest

os.environ.setdefault("BACKEND", "zcoll")
os.environ.setdefault("WORLD_SIZE", "2")

import torch  # noqa: E402
import zcoll  # noqa: E402,F401  (registers the backend, here and in every rank)
from torch.testing._internal.distributed.distributed_test import DistributedTest, TestDistBackend  # noqa: E402

if os.environ["BACKEND"] != "zcoll":
    sys.exit("this runner is for BACKEND=zcoll")


START_METHOD = "fork"  # or "spawn" (--spawn)


class TestZcollBackend(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        if START_METHOD == "spawn":
            self._spawn_processes()
        else:
            self._start_processes(torch.multiprocessing.get_context("fork").Process)


class _Outcomes(unittest.TextTestResult):
    """Also records each test's outcome by name: "passed", "failed", "skipped: <why>"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[test._testMethodName] = "passed"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test._testMethodName] = "failed"

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[test._testMethodName] = "failed"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[test._testMethodName] = f"skipped: {reason}"


def main(patterns):
    loader = unittest.TestLoader()
    loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in patterns] or None
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stderr, resultclass=_Outcomes)
    result = runner.run(loader.loadTestsFromTestCase(TestZcollBackend))
    print(json.dumps(result.outcomes))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--spawn" in args:
        args.remove("--spawn")
        START_METHOD = "spawn"
    sys.exit(main(args))
