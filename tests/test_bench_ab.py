"""bench/ab_builds.py's pure parts, without building or running zcoll-bench: reading zcoll-bench's
--json (today's and the first version's), the better placement per run, medians, the ratio and
the 'beyond the run-to-run spread' verdicts, the tables, argument checks, the environment that
puts the old build first, the sitecustomize that drops the editable hook and records imports,
the check of those records, and the process-group kill on a timeout."""
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import pytest
from commands import BENCH


def load():
    """bench/ab_builds.py as a module, registered in sys.modules (its dataclasses look their
    module up there, which commands.bench_script does not do)."""
    spec = importlib.util.spec_from_file_location("ab_builds", BENCH / "ab_builds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ab_builds"] = module
    spec.loader.exec_module(module)
    return module


ab = load()


def cell(time_us, status="ok", **extra):
    """One placement as report.write_json writes it (today: every Cell field)."""
    return dict({"status": status, "time_us": time_us, "algbw": None, "busbw": None, "wrong": 0,
                 "relerr": None, "bound": None, "reason": None}, **extra)


def row(collective, size, oop, ip, backend="zcoll", dtype="float", op="sum", root=-1):
    return {"backend": backend, "collective": collective, "size": size, "count": size // 4, "dtype": dtype,
            "op": op, "root": root, "codec": "none", "out_of_place": oop, "in_place": ip}


NA = cell(None, status="n/a", reason="no in-place form")

# zcoll-bench's JSON today: meta (with "device") and rows, zcoll beside another backend.
TODAY = {"zcoll_version": "0.1.0", "torch_version": "2.13.0", "world_size": 4, "launcher": "nproc",
         "backends": ["zcoll", "gloo"], "device": "cpu", "argv": [], "minbytes": 4096, "maxbytes": 16384,
         "iters": 5, "warmup_iters": 2, "check": 1, "time": "...", "algbw_busbw_unit": "GB/s", "failed": 0,
         "rows": [row("all_reduce", 4096, cell(30.0), cell(20.0)),
                  row("all_reduce", 4096, cell(900.0), cell(800.0), backend="gloo"),
                  row("all_reduce", 16384, cell(50.0), cell(70.0)),
                  row("all_gather", 4096, cell(40.0), cell(45.0), op="none"),
                  row("alltoall", 4096, cell(60.0), NA, op="none")]}

# The first zcoll-bench's JSON (e4d878f; 2b691e9 writes the same rows): meta without "device".
FIRST = {k: v for k, v in TODAY.items() if k != "device"}

# Only the row fields the reader relies on: what any version has written.
MINIMAL = {"rows": [{"backend": "zcoll", "collective": "all_reduce", "size": 4096, "dtype": "float", "op": "sum",
                     "root": -1, "out_of_place": {"time_us": 30.0}, "in_place": {"time_us": 20.0}}]}

KEY = ("all_reduce", "float", "sum", -1, 4096)


@pytest.mark.parametrize("data", [TODAY, FIRST], ids=["today", "first"])
def test_best_times_take_zcolls_better_placement_per_cell(data):
    times = ab.best_times(json.loads(json.dumps(data)))  # as read back from the file
    assert times == {KEY: 20.0,
                     ("all_reduce", "float", "sum", -1, 16384): 50.0,
                     ("all_gather", "float", "none", -1, 4096): 40.0,
                     ("alltoall", "float", "none", -1, 4096): 60.0}  # no in-place form: out-of-place


def test_best_times_need_only_the_shared_fields():
    assert ab.best_times(MINIMAL) == {KEY: 20.0}


def test_best_time_skips_placements_that_did_not_run():
    assert ab.best_time(row("reduce", 8, NA, NA)) is None
    assert ab.best_time(row("reduce", 8, cell(None), cell(5.0))) == 5.0
    assert ab.best_time(row("reduce", 8, cell(0.0), cell(7.0))) == 7.0
    assert ab.best_time(row("reduce", 8, cell(3.0, status="n/a"), cell(7.0))) == 7.0
    # a cell no backend could run is left out of the run's times
    data = {"rows": [row("reduce", 8, NA, NA)]}
    assert ab.best_times(data) == {}


def test_best_times_refuse_other_json():
    with pytest.raises(ValueError, match="no 'rows'"):
        ab.best_times({"world_size": 2})


def test_medians_ratio_and_verdicts():
    before = [{KEY: 100.0}, {KEY: 110.0}, {KEY: 90.0}]
    after = [{KEY: 80.0}, {KEY: 85.0}, {KEY: 60.0}]
    (c,) = ab.collect(4, before, after)
    assert (c.nproc, c.key, c.before, c.after) == (4, KEY, [100.0, 110.0, 90.0], [80.0, 85.0, 60.0])
    assert c.before_median == 100.0 and c.after_median == 80.0
    assert c.ratio == pytest.approx(0.8)
    assert c.verdict == "faster"  # after's slowest (85) beats before's fastest (90)


@pytest.mark.parametrize("before,after,verdict", [
    ([100, 110, 90], [111, 120, 115], "slower"),   # after's fastest beyond before's slowest
    ([100, 110, 90], [105, 120, 130], ""),         # median slower, but within the spread
    ([100, 110, 90], [95, 100, 105], ""),          # the same within noise
    ([100], [100.5], "slower"),                    # one run each: no spread, any slowdown shows
    ([100, 110], [], ""),                          # after has no time (n/a): no verdict, no ratio
])
def test_slower_only_beyond_the_run_to_run_spread(before, after, verdict):
    c = ab.Cell(8, KEY, [float(t) for t in before], [float(t) for t in after])
    assert c.verdict == verdict
    assert (c.ratio is None) == (not after)


def test_collect_keeps_cells_missing_from_one_build():
    other = ("all_reduce", "float", "sum", -1, 16384)
    cells = ab.collect(2, [{KEY: 10.0}, {KEY: 12.0}], [{KEY: 11.0, other: 5.0}, {KEY: 9.0, other: 6.0}])
    by = {c.key: c for c in cells}
    assert by[other].before == [] and by[other].after == [5.0, 6.0] and by[other].ratio is None
    assert by[KEY].before_median == 11.0 and by[KEY].after_median == 10.0


def test_table_one_block_per_collective_and_rank_count_sorted_by_size():
    big = ("all_reduce", "float", "sum", -1, 1 << 26)
    gather = ("all_gather", "float", "none", -1, 4096)
    cells = [ab.Cell(4, big, [1000.0, 1100.0], [1200.0, 1300.0]), ab.Cell(4, KEY, [10.0, 12.0], [8.0, 9.0]),
             ab.Cell(8, gather, [20.0], []), ab.Cell(4, gather, [20.0], [20.0])]
    lines = ab.table(cells)
    titles = [line for line in lines if line.startswith("# ") and "ranks" in line]
    assert titles == ["# all_reduce, 4 ranks (float sum)", "# all_gather, 8 ranks (float)",
                      "# all_gather, 4 ranks (float)"]
    body = [line.split() for line in lines if line and not line.startswith("#")]
    assert body[0] == ["4096", "11.0", "8.5", "0.773", "10.0-12.0", "8.0-9.0", "faster"]
    assert body[1] == [str(1 << 26), "1050.0", "1250.0", "1.190", "1000.0-1100.0", "1200.0-1300.0", "SLOWER"]
    assert body[2] == ["4096", "20.0", "n/a", "n/a", "20.0-20.0", "n/a"]
    assert body[3] == ["4096", "20.0", "20.0", "1.000", "20.0-20.0", "20.0-20.0"]


def test_defaults_and_pass_through():
    args = ab.parse_args(["--before", "abc123", "all_gather", "--nproc", "8,4,8", "reduce_scatter", "-n", "7"])
    assert args.collective == ["all_gather", "reduce_scatter"]
    assert args.nproc == [8, 4] and args.runs == 3
    assert (args.minbytes, args.maxbytes, args.stepfactor, args.warmup_iters) == ("4K", "64M", 4, 5)
    assert ab.bench_argv(args, 8, "/tmp/x.json") == [
        "all_gather", "reduce_scatter", "-b", "4K", "-e", "64M", "-f", "4", "-n", "7", "-w", "5",
        "--backend", "zcoll", "--nproc", "8", "--json", "/tmp/x.json"]
    assert ab.parse_args(["--before", "x"]).collective == ["all_reduce"]


BAD = [
    ([], "the following arguments are required: --before"),
    (["--before", "x", "--runs", "0"], "--runs must be >= 1"),
    (["--before", "x", "--nproc", "4,zero"], "rank counts >= 1"),
    (["--before", "x", "--nproc", "0"], "rank counts >= 1"),
    (["--before", "x", "--nproc", ","], "no rank count"),
    (["--before", "x", "-b", "4Q"], "invalid size '4Q'"),
    (["--before", "x", "-b", "1M", "-e", "4K"], "is larger than -e/--maxbytes"),
    (["--before", "x", "-b", "0"], "at least 1 byte"),
    (["--before", "x", "-f", "1"], "-f must be >= 2"),
    (["--before", "x", "--timeout", "0"], "--timeout must be >= 1"),
    (["--before", "x", "--json", "/no/such/folder/ab.json"], "cannot write"),
    (["--before=--nproc"], "not a revision"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) or "none" for a, _ in BAD])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        ab.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and message in err, err


def test_sizes_read_as_zcoll_bench_reads_them():
    assert [ab.parse_size(s) for s in ("8", "4K", "64M", "1G", "16KiB", "2kb")] == \
        [8, 4096, 64 << 20, 1 << 30, 16384, 2048]


def test_the_old_build_comes_first_and_launchers_are_forgotten(monkeypatch, tmp_path):
    for name, value in (("RANK", "3"), ("OMPI_COMM_WORLD_RANK", "1"), ("PYTHONPATH", "/elsewhere"),
                        ("ZCOLL_BENCH_SPAWNED", "1")):
        monkeypatch.setenv(name, value)
    shim, lib = tmp_path / "shim", tmp_path / "lib"
    old = ab.build_env(shim, lib)
    assert old["PYTHONPATH"].split(os.pathsep) == [str(lib), str(shim), "/elsewhere"]
    assert old[ab.DROP_ENV] == "1"
    new = ab.build_env(shim, None)
    assert new["PYTHONPATH"].split(os.pathsep) == [str(shim), "/elsewhere"] and ab.DROP_ENV not in new
    for env in (old, new):
        assert not {"RANK", "OMPI_COMM_WORLD_RANK", "ZCOLL_BENCH_SPAWNED"} & set(env)


def test_sitecustomize_drops_only_zcolls_editable_hook_and_records_imports(monkeypatch, tmp_path):
    def finder(module):
        return type("Finder", (), {"__module__": module})()

    hook, setuptools_hook, other = (finder("_editable_skbc_zcoll"), finder("__editable___zcoll_0_1_0_finder"),
                                    finder("_editable_skbc_otherpkg"))
    monkeypatch.setattr(sys, "meta_path", [hook, setuptools_hook, other, *sys.meta_path])
    monkeypatch.setenv(ab.DROP_ENV, "1")
    monkeypatch.delenv(ab.RECORD_ENV, raising=False)
    path = tmp_path / "sitecustomize.py"
    path.write_text(ab.SITECUSTOMIZE)
    namespace = {"__file__": str(path), "__name__": "sitecustomize"}
    exec(compile(ab.SITECUSTOMIZE, str(path), "exec"), namespace)
    assert hook not in sys.meta_path and setuptools_hook not in sys.meta_path and other in sys.meta_path

    ext = tmp_path / "_C.so"
    ext.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "zcoll", types.SimpleNamespace(__file__="/builds/lib/zcoll/__init__.py"))
    monkeypatch.setitem(sys.modules, "zcoll._C", types.SimpleNamespace(__file__=str(ext)))
    records = tmp_path / "records"
    records.mkdir()
    namespace["_record"](str(records))
    (entry,) = [json.loads(p.read_text()) for p in records.iterdir()]
    assert entry == {"pid": os.getpid(), "zcoll": "/builds/lib/zcoll/__init__.py", "ext": str(ext),
                     "ext_mtime": ext.stat().st_mtime}


def write_records(folder: Path, entries):
    folder.mkdir(exist_ok=True)
    for i, e in enumerate(entries):
        (folder / f"{i}.json").write_text(json.dumps(dict({"pid": 100 + i, "ext_mtime": 0.0}, **e)))


def test_records_must_show_the_intended_build_in_every_rank(tmp_path):
    lib = tmp_path / "lib" / "zcoll"
    lib.mkdir(parents=True)
    expected = {"zcoll": str(lib / "__init__.py"), "ext": str(lib / "_C.so")}
    good = {"zcoll": str(lib / "__init__.py"), "ext": str(lib / "_C.so")}
    parent = {"zcoll": str(lib / "__init__.py"), "ext": None}  # a process that never loaded _C
    write_records(tmp_path / "ok", [parent, good, good])
    assert len(ab.check_records(tmp_path / "ok", expected, 2, "before run")) == 3

    write_records(tmp_path / "few", [parent, good])
    with pytest.raises(ab.Failure, match="only 1 processes"):
        ab.check_records(tmp_path / "few", expected, 2, "before run")

    write_records(tmp_path / "wrong", [good, {"zcoll": "/work/main/python/zcoll/__init__.py", "ext": good["ext"]}])
    with pytest.raises(ab.Failure, match="imported zcoll from /work/main/python/zcoll"):
        ab.check_records(tmp_path / "wrong", expected, 2, "before run")

    write_records(tmp_path / "mixed", [good, {"zcoll": good["zcoll"], "ext": "/site-packages/zcoll/_C.so"}])
    with pytest.raises(ab.Failure, match="loaded the extension /site-packages"):
        ab.check_records(tmp_path / "mixed", expected, 2, "before run")

    # the installed extension rebuilt mid-comparison: its file's time is no longer the probed one
    write_records(tmp_path / "rebuilt", [good, dict(good, ext_mtime=5.0)])
    with pytest.raises(ab.Failure, match="was rebuilt during the comparison"):
        ab.check_records(tmp_path / "rebuilt", dict(expected, ext_mtime=0.0), 2, "after run")


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path):
    pidfile = tmp_path / "child"
    start = time.monotonic()
    status = ab.run_logged(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], tmp_path / "log", timeout=0.5)
    assert status is None and time.monotonic() - start < 15
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # gone, or a zombie waiting for init to reap it
        try:
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the child {child} of a timed-out run is still running")
    assert ab.run_logged(["sh", "-c", "echo hi; exit 3"], tmp_path / "log2", timeout=10) == 3
    assert (tmp_path / "log2").read_text() == "hi\n"
