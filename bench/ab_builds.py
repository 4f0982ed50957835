"""Two builds of zcoll side by side under zcoll-bench: an older git revision ("before", built once
into a cache) against the zcoll installed here ("after": for a developer, the editable install of
the working tree). For each rank count, K runs of each build alternate (before, after, before,
after, ...), so that both see the same moments of a noisy machine; per collective and size it
prints the median over the runs of the better of the out-of-place and in-place times (what
zcoll-bench's own ratio table compares), the ratio after/before (< 1: faster now), and flags the
cells where after is slower than before by more than the run-to-run spread (after's fastest run
slower than before's slowest).

    python bench/ab_builds.py --before 2b691e9 --nproc 4,8 --runs 3 \\
        -b 4K -e 64M -f 4 -n 20 -w 5 all_reduce all_gather reduce_scatter --json ab.json

The old revision is checked out in a temporary git worktree (removed afterwards), installed with
`pip install --no-build-isolation --no-deps --target` into --builds (default
~/.cache/zcoll-ab/<commit>-<python>-torch<version>) under the build lock /tmp/zcoll-build.lock, and
reused by later runs. Its runs put that folder first on PYTHONPATH; an editable install's import
hook would still win over PYTHONPATH, so a sitecustomize.py of ours (on PYTHONPATH too) takes
zcoll's editable hook out of those processes. Every process of every run records the zcoll and
the extension it imported, and a run whose ranks imported the wrong build is an error.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_LOCK = "/tmp/zcoll-build.lock"  # shared with anyone else building zcoll on this machine
BUILD_TIMEOUT = 3600                  # seconds for one pip build of the old revision
RECORD_ENV = "ZCOLL_AB_RECORD"        # the folder where every process records what it imported
DROP_ENV = "ZCOLL_AB_DROP_EDITABLE"   # "1": take the editable install's import hook out
# Variables that would make zcoll-bench think a launcher started it (it then runs as one rank).
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID", "ZCOLL_BENCH_SPAWNED", "ZCOLL_BENCH_CPU")
LAUNCHER_PREFIXES = ("OMPI_COMM_WORLD_", "PMI_", "PMIX_")

# The sitecustomize.py that every zcoll-bench process of ours imports at startup (after site-packages'
# .pth files have run, so the editable install's finder is already in sys.meta_path).
SITECUSTOMIZE = f'''\
"""Written by bench/ab_builds.py for the processes of its zcoll-bench runs (only they have this
folder on PYTHONPATH). With {DROP_ENV}=1 it removes the import hook of an editable zcoll install,
which would otherwise import the working tree's zcoll ahead of PYTHONPATH; with {RECORD_ENV} set
it records, at exit, which zcoll and which native extension this process imported."""
import atexit
import json
import os
import sys


def _drop_editable_zcoll():
    # scikit-build-core's finder lives in _editable_skbc_zcoll, setuptools' in __editable___zcoll_*
    for finder in list(sys.meta_path):
        module = str(getattr(finder, "__module__", ""))
        if "editable" in module and "zcoll" in module:
            sys.meta_path.remove(finder)


def _record(folder):
    zcoll = sys.modules.get("zcoll")
    if zcoll is None:
        return
    ext = getattr(sys.modules.get("zcoll._C"), "__file__", None)
    entry = {{"pid": os.getpid(), "zcoll": getattr(zcoll, "__file__", None), "ext": ext,
              "ext_mtime": os.stat(ext).st_mtime if ext else None}}
    with open(os.path.join(folder, f"{{os.getpid()}}.json"), "w") as f:
        json.dump(entry, f)


def _chain():
    # Run the sitecustomize this one shadows, if the environment has one.
    import importlib.machinery
    import runpy
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.origin:
        runpy.run_path(spec.origin, run_name="sitecustomize")


if os.environ.get("{DROP_ENV}") == "1":
    _drop_editable_zcoll()
if os.environ.get("{RECORD_ENV}"):
    atexit.register(_record, os.environ["{RECORD_ENV}"])
_chain()
'''


class Failure(Exception):
    """A problem that ends the comparison: the message says what and what to do."""
    status = 1


class UsageFailure(Failure):
    """Flags that zcoll-bench itself refuses: a usage error, as argparse's."""
    status = 2


# ---- arguments ------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'4K', '64M', '8' as zcoll-bench reads them (powers of 1024); checked here, passed on as given."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (expected e.g. 8, 4K, 64M)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def parse_nproc(text: str) -> list[int]:
    """'4,8' -> [4, 8] (in order, without repeats)."""
    out: list[int] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if not item.isdigit() or int(item) < 1:
            raise argparse.ArgumentTypeError(f"--nproc takes rank counts >= 1, comma separated, got {item!r}")
        if int(item) not in out:
            out.append(int(item))
    if not out:
        raise argparse.ArgumentTypeError("--nproc: no rank count given")
    return out


# (zcoll-bench's cli.py has the same validator; this script never imports zcoll itself, since
# which zcoll a process imports is exactly what it controls.)
def _at_least(minimum: int, name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value
    return parse


def default_builds() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "zcoll-ab"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n" + __doc__.split("\n\n")[1])
    ap.add_argument("collective", nargs="*", default=["all_reduce"],
                    help="zcoll-bench's collectives (default: all_reduce)")
    ap.add_argument("--before", required=True, metavar="REV",
                    help="the git revision to compare against (any name git knows: hash, tag, HEAD~3)")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help=f"the git repository holding REV (default: {REPO})")
    ap.add_argument("--builds", type=Path, default=default_builds(), metavar="DIR",
                    help="where old builds are kept and reused (default: %(default)s)")
    ap.add_argument("--runs", type=_at_least(1, "--runs"), default=3, metavar="K",
                    help="zcoll-bench runs of each build per rank count, alternating (default: 3)")
    ap.add_argument("--nproc", type=parse_nproc, default=[4, 8], metavar="LIST",
                    help="rank counts, comma separated (default: 4,8)")
    ap.add_argument("-b", "--minbytes", default="4K", metavar="SIZE", help="zcoll-bench -b (default: 4K)")
    ap.add_argument("-e", "--maxbytes", default="64M", metavar="SIZE", help="zcoll-bench -e (default: 64M)")
    ap.add_argument("-f", "--stepfactor", type=_at_least(2, "-f"), default=4, metavar="N",
                    help="zcoll-bench -f (default: 4)")
    ap.add_argument("-n", "--iters", type=_at_least(1, "-n"), default=20, metavar="N",
                    help="zcoll-bench -n (default: 20)")
    ap.add_argument("-w", "--warmup_iters", type=_at_least(0, "-w"), default=5, metavar="N",
                    help="zcoll-bench -w (default: 5)")
    ap.add_argument("--timeout", type=_at_least(1, "--timeout"), default=1200, metavar="SECONDS",
                    help="hard limit on one zcoll-bench run; its process group is killed past it "
                         "(default: 1200)")
    ap.add_argument("--json", metavar="FILE", help="write the settings, both builds and every cell here")
    ap.add_argument("--logs", type=Path, metavar="DIR",
                    help="keep every run's zcoll-bench output and JSON in DIR (default: discarded)")
    ap.add_argument("--build-only", action="store_true", help="build (or find) REV's build and stop")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_intermixed_args(argv)
    for flag, text in (("-b/--minbytes", args.minbytes), ("-e/--maxbytes", args.maxbytes)):
        try:
            parse_size(text)
        except argparse.ArgumentTypeError as e:
            ap.error(f"argument {flag}: {e}")
    if parse_size(args.minbytes) < 1:
        ap.error("argument -b/--minbytes: must be at least 1 byte")
    if parse_size(args.minbytes) > parse_size(args.maxbytes):
        ap.error(f"-b/--minbytes ({args.minbytes}) is larger than -e/--maxbytes ({args.maxbytes})")
    if not args.before.strip() or args.before.startswith("-"):
        ap.error(f"argument --before: not a revision: {args.before!r}")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or os.path.isdir(args.json):
            ap.error(f"argument --json: cannot write {args.json!r}")
    args.builds = args.builds.expanduser().resolve()
    return args


def bench_argv(args, nproc: int, json_path: str) -> list[str]:
    """zcoll-bench's arguments for one run: zcoll alone, this many ranks, the sweep as given."""
    return [*args.collective, "-b", args.minbytes, "-e", args.maxbytes, "-f", str(args.stepfactor),
            "-n", str(args.iters), "-w", str(args.warmup_iters), "--backend", "zcoll",
            "--nproc", str(nproc), "--json", json_path]


# ---- reading zcoll-bench's JSON and comparing --------------------------------------------------
#
# zcoll-bench's --json: {meta..., "rows": [{"backend", "collective", "size", "count", "dtype",
# "op", "root", "codec", "out_of_place": {"status", "time_us", ...}, "in_place": {...}}]}. Only the
# row fields that every version since zcoll-bench's first has written are read, so an old
# revision's output compares with today's.


def best_time(row: dict) -> float | None:
    """The better (smaller) of a row's out-of-place and in-place times in us, as zcoll-bench's
    ratio table takes it; None when neither placement ran (n/a)."""
    times = []
    for placement in ("out_of_place", "in_place"):
        cell = row.get(placement) or {}
        t = cell.get("time_us")
        if cell.get("status", "ok") == "ok" and isinstance(t, (int, float)) and t > 0:
            times.append(float(t))
    return min(times) if times else None


def cell_key(row: dict) -> tuple:
    """(collective, dtype, op, root, size): what identifies a row within one run."""
    return (row["collective"], row.get("dtype", "float"), row.get("op", "none"), int(row.get("root", -1)),
            int(row["size"]))


def best_times(data: dict, backend: str = "zcoll") -> dict[tuple, float]:
    """{cell_key: best time in us} for one backend's rows of one zcoll-bench JSON."""
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise ValueError("not zcoll-bench --json output: no 'rows' list")
    out = {}
    for row in rows:
        if row.get("backend", backend) != backend:
            continue
        t = best_time(row)
        if t is not None:
            out[cell_key(row)] = t
    return out


@dataclass
class Cell:
    """One (rank count, collective, dtype, op, root, size): each build's time per run, in us."""
    nproc: int
    key: tuple
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)

    @property
    def before_median(self) -> float | None:
        return statistics.median(self.before) if self.before else None

    @property
    def after_median(self) -> float | None:
        return statistics.median(self.after) if self.after else None

    @property
    def ratio(self) -> float | None:
        """after / before of the medians: < 1, faster now."""
        if not self.before or not self.after:
            return None
        return self.after_median / self.before_median

    @property
    def verdict(self) -> str:
        """'slower' when after's fastest run is slower than before's slowest (beyond the spread
        between runs), 'faster' for the reverse, '' otherwise or when a build has no time."""
        if not self.before or not self.after:
            return ""
        if min(self.after) > max(self.before):
            return "slower"
        if max(self.after) < min(self.before):
            return "faster"
        return ""


def collect(nproc: int, before_runs: list[dict], after_runs: list[dict]) -> list[Cell]:
    """The cells of one rank count from each build's parsed runs ({key: us} per run), in the
    order zcoll-bench ran them (a cell missing from one build keeps an empty list there)."""
    cells: dict[tuple, Cell] = {}
    for runs, side in ((before_runs, "before"), (after_runs, "after")):
        for run in runs:
            for key, t in run.items():
                cell = cells.setdefault(key, Cell(nproc, key))
                getattr(cell, side).append(t)
    return list(cells.values())


def _us(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value < 1e5 else f"{value:.0f}"


def _spread(times: list[float]) -> str:
    return f"{_us(min(times))}-{_us(max(times))}" if times else "n/a"


def table(cells: list[Cell]) -> list[str]:
    """One table per (rank count, collective, dtype, op, root), a line per size."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.nproc, *c.key[:4]), []).append(c)
    lines = []
    for (nproc, coll, dtype, op, root), group in groups.items():
        what = dtype + (f" {op}" if op != "none" else "") + (f", root {root}" if root >= 0 else "")
        lines += [f"# {coll}, {nproc} ranks ({what})",
                  f"#{'size (B)':>11} {'before (us)':>12} {'after (us)':>12} {'after/before':>13} "
                  f"{'before min-max':>20} {'after min-max':>20}"]
        for c in sorted(group, key=lambda c: c.key[4]):
            ratio = f"{c.ratio:.3f}" if c.ratio is not None else "n/a"
            flag = {"slower": "  SLOWER", "faster": "  faster", "": ""}[c.verdict]
            lines.append(f"{c.key[4]:>12} {_us(c.before_median):>12} {_us(c.after_median):>12} {ratio:>13} "
                         f"{_spread(c.before):>20} {_spread(c.after):>20}{flag}")
        lines.append("")
    return lines


# ---- git and the old build --------------------------------------------------------------------


def git(repo: Path, *args: str, check: bool = True) -> str:
    # --no-optional-locks: read-only here, even for status (which may otherwise refresh the index)
    p = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True, text=True,
                       timeout=120)
    if check and p.returncode != 0:
        raise Failure(f"git {' '.join(args)} failed in {repo}:\n{p.stderr.strip()}")
    return p.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """REV's full commit hash, or a Failure that says it is not there."""
    if git(repo, "rev-parse", "--is-inside-work-tree", check=False) != "true":
        raise Failure(f"{repo} is not a git repository (use --repo)")
    commit = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not commit:
        raise Failure(f"revision {rev!r} not found in {repo} (git rev-parse --verify {rev}^{{commit}})")
    return commit


def build_name(commit: str) -> str:
    """The cache folder of a commit's build: the extension is only good for this Python and torch."""
    torch = importlib.metadata.version("torch")
    return f"{commit[:12]}-cp{sys.version_info.major}{sys.version_info.minor}-torch{torch}"


def _kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to the process group (zcoll-bench's ranks share it), then SIGKILL after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None,
               cwd: Path | None = None) -> int | None:
    """Runs `cmd` in a session (process group) of its own, stdout and stderr into `log`; returns
    its exit status, or None when it ran past `timeout` and was killed with its children."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None
        finally:  # Ctrl-C, or any error here: leave no rank behind
            if proc.poll() is None:
                _kill_group(proc, grace=2)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        text = []
    return "\n".join("    " + line for line in text[-lines:]) or "    (no output)"


def ensure_build(repo: Path, rev: str, builds: Path) -> dict:
    """REV's build under `builds`, made unless already there; returns its build.json record
    (commit, subject, date, torch, python, path of the installed tree, build seconds)."""
    commit = resolve(repo, rev)
    target = builds / build_name(commit)
    record = target / "build.json"
    if record.exists() and (target / "lib" / "zcoll" / "__init__.py").exists():
        return dict(json.loads(record.read_text()), reused=True)
    builds.mkdir(parents=True, exist_ok=True)
    with open(BUILD_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"# waiting for the build lock {BUILD_LOCK} (another zcoll build is running)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists() and (target / "lib" / "zcoll" / "__init__.py").exists():  # built meanwhile
            return dict(json.loads(record.read_text()), reused=True)
        return _build(repo, rev, commit, target)


def _build(repo: Path, rev: str, commit: str, target: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    src, lib, log = work / "src", work / "lib", work / "pip.log"
    print(f"# building {rev} ({commit[:12]}) into {target} (pip, a few minutes)", flush=True)
    start = time.monotonic()
    try:
        git(repo, "worktree", "add", "--detach", str(src), commit)
        cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-input",
               "--target", str(lib), str(src)]
        if shutil.which("nice"):  # the build shares the machine: let everything else go first
            cmd = ["nice", "-n", "10", *cmd]
        env = {k: v for k, v in os.environ.items() if k != "SKBUILD_EDITABLE_SKIP"}
        status = run_logged(cmd, log, BUILD_TIMEOUT, env=env, cwd=work)
        if status != 0:
            why = f"timed out after {BUILD_TIMEOUT} s" if status is None else f"exit status {status}"
            raise Failure(f"building {rev} ({commit[:12]}) failed ({why}); pip's last lines:\n{tail(log)}")
        if not (lib / "zcoll" / "__init__.py").exists():
            raise Failure(f"building {rev}: pip succeeded but left no zcoll package in {lib}")
        if target.exists():  # a half-made folder from an interrupted build
            shutil.rmtree(target)
        target.mkdir()
        lib.rename(target / "lib")
        info = {"rev": rev, "commit": commit, "subject": git(repo, "log", "-1", "--format=%s", commit),
                "date": git(repo, "log", "-1", "--format=%cI", commit), "torch": importlib.metadata.version("torch"),
                "python": sys.version.split()[0], "path": str(target / "lib"),
                "build_seconds": round(time.monotonic() - start, 1)}
        (target / "build.json").write_text(json.dumps(info, indent=1) + "\n")
        print(f"# built in {info['build_seconds']:.0f} s", flush=True)
        return dict(info, reused=False)
    finally:  # the worktree goes, built or not (only ours: no `git worktree prune` of anyone else's)
        if src.exists():
            try:
                git(repo, "worktree", "remove", "--force", str(src))
            except Failure as e:
                print(f"ab_builds.py: warning: {e}\n(remove it with: git -C {repo} worktree remove --force {src})",
                      file=sys.stderr, flush=True)
        shutil.rmtree(work, ignore_errors=True)


# ---- running zcoll-bench with one build or the other ------------------------------------------


def base_env() -> dict:
    """This environment without launcher variables (zcoll-bench must start its own ranks)."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(LAUNCHER_PREFIXES) and k != "SKBUILD_EDITABLE_SKIP"}
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")  # only used if a zcoll-bench re-runs under mpirun
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def build_env(shim: Path, lib: Path | None) -> dict:
    """The environment of a run: our sitecustomize on PYTHONPATH, and for the old build its tree
    first on PYTHONPATH with the editable install's hook dropped."""
    env = base_env()
    first = [str(lib), str(shim)] if lib else [str(shim)]
    env["PYTHONPATH"] = os.pathsep.join(first + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if lib:
        env[DROP_ENV] = "1"
    else:
        env.pop(DROP_ENV, None)
    return env


PROBE = ("import json, os, zcoll, zcoll._C as ext; "
         "print(json.dumps({'zcoll': os.path.realpath(zcoll.__file__), 'ext': os.path.realpath(ext.__file__), "
         "'ext_mtime': os.stat(ext.__file__).st_mtime, 'version': zcoll.__version__}))")


def probe(env: dict, cwd: Path) -> dict:
    """Which zcoll and extension a process with `env` imports (and that it imports at all)."""
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise Failure(f"importing zcoll failed:\n{p.stderr.strip()[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def describe_installed(found: dict) -> dict:
    """The installed zcoll: its folder, and when it is a git checkout (an editable install), the
    commit, uncommitted changes, and whether sources changed after the extension was built."""
    package = Path(found["zcoll"]).parent
    info = {"zcoll": str(package), "ext": found["ext"], "ext_built": time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(found["ext_mtime"]))}
    top = git(package, "rev-parse", "--show-toplevel", check=False)
    if not top:
        return info
    info["repo"] = top
    info["commit"] = git(Path(top), "rev-parse", "HEAD", check=False)
    info["dirty"] = bool(git(Path(top), "status", "--porcelain", "--untracked-files=no", check=False))
    # An editable install runs the extension last built, not today's C++: say so when it is stale.
    sources = git(Path(top), "ls-files", "--", "csrc", "CMakeLists.txt", check=False).splitlines()
    newer = [s for s in sources if (Path(top) / s).exists() and (Path(top) / s).stat().st_mtime > found["ext_mtime"]]
    if newer:
        info["sources_newer_than_ext"] = newer
    return info


def check_records(folder: Path, expected: dict, nproc: int, label: str) -> list[dict]:
    """What the run's processes imported (their sitecustomize records): every one must be the
    intended build, and at least `nproc` of them (the ranks) must have loaded its extension."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    package = os.path.dirname(expected["zcoll"])
    for r in records:
        z = os.path.realpath(r["zcoll"]) if r.get("zcoll") else None
        if z is None or os.path.dirname(z) != package:
            raise Failure(f"{label}: process {r['pid']} imported zcoll from {r.get('zcoll')}, not {package}")
        if r.get("ext") and os.path.realpath(r["ext"]) != expected["ext"]:
            raise Failure(f"{label}: process {r['pid']} loaded the extension {r['ext']}, not {expected['ext']}")
        if r.get("ext") and expected.get("ext_mtime") is not None and r.get("ext_mtime") != expected["ext_mtime"]:
            when = time.strftime("%H:%M:%S", time.localtime(r["ext_mtime"]))
            raise Failure(f"{label}: the extension {expected['ext']} was rebuilt during the comparison (at "
                          f"{when}); the runs would mix two builds: run it again when no build is going on")
    ranks = sum(1 for r in records if r.get("ext"))
    if ranks < nproc:
        raise Failure(f"{label}: only {ranks} processes recorded loading zcoll's extension, expected "
                      f"at least {nproc} ranks (cannot confirm which build ran)")
    return records


@dataclass
class Build:
    label: str          # before | after
    env: dict
    found: dict         # probe(): zcoll, ext, ext_mtime, version
    runs: dict = field(default_factory=dict)  # nproc -> [{key: us}, ...]


def run_once(args, build: Build, nproc: int, index: int, work: Path) -> dict[tuple, float]:
    """One zcoll-bench run of `build`; returns its best times per cell."""
    tag = f"{nproc}ranks-{build.label}-{index + 1}"
    out_json, log, records = work / f"{tag}.json", work / f"{tag}.log", work / f"{tag}.records"
    records.mkdir()
    env = dict(build.env, **{RECORD_ENV: str(records)})
    cmd = [sys.executable, "-m", "zcoll.bench", *bench_argv(args, nproc, str(out_json))]
    start = time.monotonic()
    status = run_logged(cmd, log, args.timeout, env=env, cwd=work)  # cwd: no zcoll folder to shadow ours
    seconds = time.monotonic() - start
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        for p in (log, out_json):
            if p.exists():
                shutil.copy(p, args.logs / p.name)
    if status is None:
        raise Failure(f"zcoll-bench ({build.label}, {nproc} ranks) ran past --timeout {args.timeout} s and was "
                      f"killed; its last lines:\n{tail(log)}")
    if status != 0:
        why = "a result was wrong" if status == 1 else f"exit status {status}"
        raise Failure(f"zcoll-bench ({build.label}, {nproc} ranks) failed ({why}); its last lines:\n{tail(log)}")
    imported = check_records(records, build.found, nproc, f"{build.label} run")
    try:
        data = json.loads(out_json.read_text())
        times = best_times(data)
    except (OSError, ValueError) as e:
        raise Failure(f"zcoll-bench ({build.label}, {nproc} ranks) wrote no usable JSON: {e}") from None
    if data.get("world_size", nproc) != nproc:
        raise Failure(f"zcoll-bench ({build.label}) ran {data['world_size']} ranks, not {nproc}")
    print(f"#   {build.label:<6} run {index + 1}/{args.runs}: {len(times)} cells, {seconds:.0f} s; its "
          f"{len(imported)} processes imported {os.path.dirname(build.found['zcoll'])}", flush=True)
    return times


def preflight(args, env: dict, cwd: Path) -> None:
    """The installed zcoll-bench's own flag checks on what we will pass it (bad collective names
    and the like), before minutes of building."""
    code = "import sys; from zcoll.bench import cli; cli.parse_args(sys.argv[1:])"
    p = subprocess.run([sys.executable, "-c", code, *bench_argv(args, args.nproc[0], str(cwd / "x.json"))],
                       env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        errors = [line for line in p.stderr.splitlines() if "error" in line] or p.stderr.strip().splitlines()[-3:]
        raise UsageFailure("zcoll-bench refuses these flags: " + "\n".join(errors))


def header(args, before: dict, after: dict) -> list[str]:
    b_when = before["date"][:10]
    subject = textwrap.shorten(before["subject"], 80, placeholder=" ...")
    a_at = after.get("commit", "")[:12] or "not a git checkout"
    if after.get("dirty"):
        a_at += " + uncommitted changes"
    lines = [
        f"# zcoll A/B with zcoll-bench: {', '.join(args.collective)}, -b {args.minbytes} -e {args.maxbytes} "
        f"-f {args.stepfactor} -n {args.iters} -w {args.warmup_iters}, backend zcoll",
        f"#   before: {args.before} = {before['commit'][:12]} ({b_when}) {subject}",
        f"#           built in {before['path']}",
        f"#   after:  the installed zcoll, {after['zcoll']} ({a_at}); extension {after['ext']} "
        f"built {after['ext_built']}",
        f"#   runs: {args.runs} of each build per rank count, alternating before/after",
        "#   time: the better of out-of-place and in-place of each run (zcoll-bench's max over ranks of the "
        "mean of -n calls), median over the runs, in us",
        "#   after/before: ratio of the medians; < 1: faster now, > 1: slower now",
        "#   SLOWER: after's fastest run is slower than before's slowest (beyond the run-to-run spread); "
        "faster: the reverse",
    ]
    zcoll_vars = sorted(k for k in os.environ if k.startswith("ZCOLL_"))
    if zcoll_vars:
        lines.append(f"#   environment, for both builds: {' '.join(f'{k}={os.environ[k]}' for k in zcoll_vars)}")
    if after.get("sources_newer_than_ext"):
        newer = after["sources_newer_than_ext"]
        lines.append(f"#   warning: {len(newer)} source files changed after the installed extension was built "
                     f"({', '.join(newer[:3])}{', ...' if len(newer) > 3 else ''}): 'after' is that last build")
    return lines


def compare(args) -> int:
    with tempfile.TemporaryDirectory(prefix="zcoll-ab-") as tmp:
        work = Path(tmp)
        if not args.build_only:  # the cheap checks first, not after minutes of building
            resolve(args.repo, args.before)
            preflight(args, base_env(), work)
        before_info = ensure_build(args.repo, args.before, args.builds)
        if before_info.get("reused"):
            print(f"# using the build of {args.before} ({before_info['commit'][:12]}) in {before_info['path']}")
        if args.build_only:
            return 0
        shim = work / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        builds = [Build("before", build_env(shim, Path(before_info["path"])), {}),
                  Build("after", build_env(shim, None), {})]
        for b in builds:
            b.found = probe(b.env, work)
        before, after = builds
        lib = os.path.realpath(before_info["path"])
        if not before.found["zcoll"].startswith(lib + os.sep) or not before.found["ext"].startswith(lib + os.sep):
            raise Failure(f"the old build is shadowed: with {lib} first on PYTHONPATH, Python still imports "
                          f"zcoll from {before.found['zcoll']} (extension {before.found['ext']})")
        if after.found["zcoll"].startswith(lib + os.sep) or after.found["ext"] == before.found["ext"]:
            raise Failure(f"the installed zcoll is the old build itself ({after.found['zcoll']})")
        after_info = describe_installed(after.found)
        for line in header(args, before_info, after_info):
            print(line)
        print(flush=True)

        cells: list[Cell] = []
        for nproc in args.nproc:
            print(f"# {nproc} ranks", flush=True)
            for i in range(args.runs):
                for b in builds:
                    b.runs.setdefault(nproc, []).append(run_once(args, b, nproc, i, work))
            cells += collect(nproc, before.runs[nproc], after.runs[nproc])
        print()
        for line in table(cells):
            print(line)
        slower = [c for c in cells if c.verdict == "slower"]
        faster = [c for c in cells if c.verdict == "faster"]
        print(f"# {len(cells)} cells: {len(slower)} slower beyond the spread, {len(faster)} faster beyond it"
              + (": slower " + ", ".join(f"{c.key[0]} {c.nproc} ranks {c.key[4]} B ({c.ratio:.2f})"
                                         for c in slower) if slower else ""))
        if args.json:
            write_json(args.json, args, before_info, after_info, before.found, cells)
    return 0


def write_json(path: str, args, before_info: dict, after_info: dict, before_found: dict, cells: list[Cell]) -> None:
    data = {
        "ratio": "after / before of the median times: < 1 faster now",
        "time": "us; per run the better of out-of-place and in-place (zcoll-bench's max over ranks)",
        "verdict": "slower: min(after) > max(before); faster: max(after) < min(before)",
        "settings": {"collectives": args.collective, "nproc": args.nproc, "runs": args.runs,
                     "minbytes": args.minbytes, "maxbytes": args.maxbytes, "stepfactor": args.stepfactor,
                     "iters": args.iters, "warmup_iters": args.warmup_iters},
        "before": dict({k: v for k, v in before_info.items() if k != "reused"},
                       zcoll=before_found["zcoll"], ext=before_found["ext"]),
        "after": after_info,
        "cells": [{"nproc": c.nproc, "collective": c.key[0], "dtype": c.key[1], "op": c.key[2], "root": c.key[3],
                   "size": c.key[4], "before_us": c.before, "after_us": c.after, "before_median": c.before_median,
                   "after_median": c.after_median, "ratio": c.ratio, "verdict": c.verdict} for c in cells],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return compare(args)
    except Failure as e:
        print(f"ab_builds.py: error: {e}", file=sys.stderr, flush=True)
        return e.status
    except KeyboardInterrupt:
        print("ab_builds.py: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
