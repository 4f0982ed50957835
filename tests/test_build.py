"""The build and the house layout: build_info tells the truth, CUDA kernels are compiled
whenever nvcc is present, every .cu is built, and layers include only what they may."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zcoll
from commands import ci_test_command
from native import _C
from zcoll import reference as R

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"


def test_build_info_fields():
    info = zcoll.build_info()
    assert info["version"] == zcoll.__version__
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert info["fp_contract_off"] is True and "-ffp-contract=off" in info["cxx_flags"]
    assert "fast-math" not in info["cxx_flags"].replace("-fno-fast-math", "")
    assert info["cuda_threads_per_block"] == 256


def test_cuda_kernels_built_when_nvcc_is_present():
    """CI has nvcc: a .cu that stops compiling fails the build, and a build that silently
    dropped CUDA fails here."""
    info = zcoll.build_info()
    if os.environ.get("ZCOLL_CUDA", "auto") == "off":
        assert info["cuda"] is False
        return
    if shutil.which("nvcc") is None:
        assert os.environ.get("ZCOLL_CUDA") != "on"
        return
    assert info["cuda"] is True, "nvcc is on PATH but the CUDA kernels were not built"
    assert info["cuda_archs"] == ["80", "90"]
    assert "-fmad=false" in info["cuda_flags"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["cuda_version"])
    assert _C.cuda_device_count() >= 0  # no driver here: 0, not an exception


def test_every_cuda_file_is_built_and_twinned():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    cu_files = sorted((CSRC / "kernels" / "cuda").glob("*.cu"))
    assert cu_files
    for cu in cu_files:
        assert str(cu.relative_to(ROOT)) in cmake, f"{cu.name} is not compiled by CMakeLists.txt"
        twin = CSRC / "kernels" / "cpu" / cu.name.replace("_cuda.cu", "_cpu.cc")
        assert twin.exists(), f"{cu.name} has no CPU twin {twin.name}"


def _includes(path):
    return re.findall(r'#include\s*[<"]([^>"]+)[>"]', path.read_text())


def test_layering_of_includes():
    """Only csrc/backend and csrc/bindings see torch; only bindings see pybind11."""
    for path in CSRC.rglob("*"):
        if path.suffix not in (".h", ".cc", ".cu", ".cuh", ".in"):
            continue
        layer = path.relative_to(CSRC).parts[0]
        for inc in _includes(path):
            if inc.split("/")[0] in ("torch", "c10", "ATen"):
                assert layer in ("backend", "bindings"), f"{path} includes {inc}"
            if inc.startswith("pybind11"):
                assert layer == "bindings", f"{path} includes {inc}"


def test_reference_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, zcoll.reference as R\n"
            "print(R.all_reduce([np.ones(4, np.float32)] * 3, 'sum', codec='int8')[0].sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == 12.0


def test_import_zcoll_makes_launch_and_hooks_usable():
    """The README and docs call zcoll.launch.mpi_env() and zcoll.hooks.* after a bare `import zcoll`."""
    code = ("import zcoll\n"
            "print(callable(zcoll.launch.mpi_env), callable(zcoll.hooks.compressed_allreduce_hook),\n"
            "      type(zcoll.hooks.ErrorFeedbackState()).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "ErrorFeedbackState"]


def test_torch_range_keeps_every_release_the_readme_names():
    """pip keeps an installed torch that satisfies zcoll's dependency: the range must hold the
    torch CI tests and every release the README says zcoll builds against, and no others."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(Requirement(d) for d in deps if Requirement(d).name == "torch").specifier
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| torch | state |"):]
    table = table[:table.index("\n\n")]
    named = {Version(v) for v in re.findall(r"\b(2\.\d+\.\d+)\b", table)}
    assert Version(torch.__version__.split("+")[0]) in named
    assert all(spec.contains(v) for v in named), (spec, named)
    low, high = min(named), max(named)
    assert not spec.contains(Version(f"{low.major}.{low.minor - 1}.0")), f"{spec} admits a release below {low}"
    assert not spec.contains(Version(f"{high.major}.{high.minor + 1}.0")), f"{spec} admits a release above {high}"


def test_every_slow_tier_pattern_names_tests():
    """conftest.SLOW's patterns each match collected tests (a renamed test would otherwise
    silently move to the fast tier, or a stale entry stay behind)."""
    import fnmatch

    from conftest import SLOW
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert len(ids) > 1000, out.stdout[-2000:] + out.stderr[-2000:]
    stale = [pattern for pattern in SLOW if not any(fnmatch.fnmatchcase(i, pattern) for i in ids)]
    assert not stale, f"conftest.SLOW patterns that match no test: {stale}"


def test_readme_test_command_is_what_ci_runs():
    assert ci_test_command() in (ROOT / "README.md").read_text()


def test_demo_main_job_runs():
    out = subprocess.run([sys.executable, "-m", "zcoll.demo", "-n", "4096", "--worlds", "2,3",
                          "--speed-elements", "65536", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("bit-exact") == len(R.CODECS)
    assert "int4   twoshot" in out.stdout


def test_demo_rejects_bad_flags():
    out = subprocess.run([sys.executable, "-m", "zcoll.demo", "--worlds", "two"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--worlds must be comma-separated integers" in out.stderr



def test_allreduce_compare_runs():
    """bench/allreduce_compare.py on small sizes: a zcoll / gloo / MPI table with ratios (the
    README's main job, zcoll-bench, is tests/test_bench_cli.py's)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "allreduce_compare.py"), "--nproc", "2",
                          "--sizes", "4K,64K", "--iters", "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert "gloo/zcoll" in lines[1]
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["4096", "65536"]
    from zcoll.config import ALGORITHMS
    for r in rows:
        assert r[1] in ALGORITHMS["allreduce"], r  # the tuner's choice for that size
        assert all(float(v) > 0 for v in r[2:5]), r  # zcoll, gloo and MPI all measured


def test_shaped_link_benchmark_runs():
    """bench/shaped_allreduce.py (compressed all-reduce on shaped links) on a tiny case: namespaces with tbf links,
    zcoll uncompressed and int8 and gloo side by side, and nothing left behind."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("network namespaces and tc need root and iproute2")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "shaped_allreduce.py"), "--world", "2", "--mib", "1",
                          "--iters", "1", "--codecs", "none,int8", "--algos", "ring"],
                         capture_output=True, text=True, timeout=240)
    if out.returncode != 0 and "cannot" in out.stderr.lower() and "namespace" in out.stderr.lower():
        pytest.skip(f"cannot make network namespaces here: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [r[:3] for r in rows] == [["zcoll", "none", "ring"], ["zcoll", "int8", "ring"], ["gloo", "-", "-"]], rows
    assert "zcoll-b" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
