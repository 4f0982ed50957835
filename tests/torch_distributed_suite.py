"""PyTorch's own distributed test suite (torch.testing._internal.distributed.distributed_test's
DistributedTest, the tests torch runs for gloo and NCCL) with zcoll as the backend, as torch's
test_distributed_spawn.py runs it for its own backends. Run it as a script, naming the tests
by substrings; it prints each test's outcome, then one JSON line of them all:

    WORLD_SIZE=3 python tests/torch_distributed_suite.py all_gather_coalesced

tests/test_torch_distributed_suite.py runs the tests zcoll is held to."""
import json
import os
import sys
import unittest

os.environ.setdefault("BACKEND", "zcoll")
os.environ.setdefault("WORLD_SIZE", "2")

import zcoll  # noqa: E402,F401  (registers the backend, here and in every spawned rank)
from torch.testing._internal.distributed.distributed_test import DistributedTest, TestDistBackend  # noqa: E402

if os.environ["BACKEND"] != "zcoll":
    sys.exit("this runner is for BACKEND=zcoll")


class TestZcollBackend(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()


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
    loader.testNamePatterns = [f"*{p}*" for p in patterns]
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stderr, resultclass=_Outcomes)
    result = runner.run(loader.loadTestsFromTestCase(TestZcollBackend))
    print(json.dumps(result.outcomes))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
