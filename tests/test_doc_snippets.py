"""Every code block of the README, docs/ and bench/README.md, run or checked as written.

Each fenced block names its language, and that decides what happens to it:
- ``python``: run as a file. A block that calls `init_process_group` runs on 2 ranks under
  `torchrun --standalone`, the others with `python`. A block preceded by
  `<!-- excerpt: PATH -->` must appear verbatim in PATH (a file that a test of its own runs).
- ``sh``: commands, one per line (`\\` continues one). `torchrun`/`mpirun` lines that start
  `train.py` run for real, with the README's first snippet as train.py; `zcoll-bench` lines
  (alone or under a launcher) go through zcoll-bench's own argument checks; `python bench/X.py`
  lines must use only flags that the script's `--help` lists; `pip install` lines must be the
  installs CI runs, or name only packages that requirements-dev.txt (which CI installs) lists.
- ``console``: `$ command` lines are run (output lines are examples, not checked).
- ``text``: output, diagrams and pseudo-code; nothing to run.
A block preceded by `<!-- not run: REASON -->` is listed here with its reason (commands that
need several hosts). A fence without a language fails: nothing is skipped silently.
"""
from __future__ import annotations

import re
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from commands import ci_test_command, clean_env, run_command

from zcoll.bench.cli import parse_args as bench_parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LANGUAGES = ("python", "sh", "console", "text")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*(excerpt|not run):\s*(.+?)\s*-->\s*\Z")


@dataclass
class Snippet:
    doc: Path
    line: int
    language: str
    body: str
    marker: tuple[str, str] | None  # ("excerpt", path) or ("not run", reason)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.search(before)
            out.append(Snippet(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2),
                               (marker.group(1), marker.group(2)) if marker else None))
    return out


ALL = snippets()
README_FIRST = next(s for s in ALL if s.doc.name == "README.md" and s.language == "python")


def commands(body: str) -> list[list[str]]:
    """The shell commands of a block, each as its words: continuation lines joined, `a && b`
    split in two, comments and blanks dropped."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        command: list[str] = []
        for word in shlex.split(line, comments=True) + ["&&"]:
            if word != "&&":
                command.append(word)
            elif command:
                out.append(command)
                command = []
    return out


def is_excerpt(body: str, source: str) -> bool:
    """`body` appears in `source` as written, give or take one indentation of all its lines."""
    return any(textwrap.indent(body, " " * depth) in source for depth in range(0, 17, 4))


def test_every_block_names_a_known_language():
    unknown = [f"{s.where} ```{s.language}" for s in ALL if s.language not in LANGUAGES]
    assert not unknown, f"code blocks need one of {LANGUAGES}: {unknown}"


def _ids(items):
    return [s.where for s in items]


PYTHON = [s for s in ALL if s.language == "python"]


@pytest.mark.parametrize("snippet", PYTHON, ids=_ids(PYTHON))
@pytest.mark.timeout(200)
def test_python_block_runs(snippet, tmp_path):
    if snippet.marker and snippet.marker[0] == "excerpt":
        source = (ROOT / snippet.marker[1]).read_text()
        assert is_excerpt(snippet.body, source), f"{snippet.where} is not an excerpt of {snippet.marker[1]}"
        return
    assert snippet.marker is None, f"{snippet.where}: python blocks are run ({snippet.marker})"
    script = tmp_path / "snippet.py"
    script.write_text(snippet.body)
    if "init_process_group" in snippet.body:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    code, out, err = run_command(cmd, timeout=180, cwd=tmp_path)
    assert code == 0, f"{snippet.where} failed (exit {code})\n{out[-2000:]}\n{err[-4000:]}"


SHELL = [s for s in ALL if s.language == "sh"]


def _check_bench_flags(script: Path, args: list[str], where: str):
    code, out, err = run_command([sys.executable, str(script), "--help"], timeout=60, cwd=ROOT)
    assert code == 0, f"{where}: {script.name} --help failed\n{err[-2000:]}"
    listed = set(re.findall(r"--[a-z][a-z0-9-]*", out))
    own = args[:args.index("--")] if "--" in args else args
    unknown = [a.split("=")[0] for a in own if a.startswith("--") and a.split("=")[0] not in listed]
    assert not unknown, f"{where}: {script.name} has no flags {unknown}"
    if "--" in args:  # the rest goes to zcoll-bench
        _check_zcoll_bench(args[args.index("--") + 1:], where)


def _check_zcoll_bench(args: list[str], where: str):
    try:
        bench_parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{where}: zcoll-bench refuses {shlex.join(args)} (exit {e.code})")


def _run_train_py(command: list[str], where: str, tmp_path: Path):
    """torchrun/mpirun starting train.py: the README's first snippet is train.py (under mpirun,
    after zcoll.launch.mpi_env(), as the README says)."""
    body = README_FIRST.body
    env = clean_env()
    if command[0] == "mpirun":
        body = "import zcoll\nzcoll.launch.mpi_env()\n" + body
        # root and more ranks than cores, as on our machines; the command itself is unchanged.
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    (tmp_path / "train.py").write_text(body)
    if command[0] == "torchrun":  # the same launcher, through this interpreter
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", *command[1:]]
    code, out, err = run_command(command, timeout=180, env=env, cwd=tmp_path)
    assert code == 0, f"{where}: {shlex.join(command)} failed (exit {code})\n{out[-2000:]}\n{err[-4000:]}"


def _check_command(argv: list[str], where: str, tmp_path: Path):
    command = shlex.join(argv)
    if argv[1:4] == ["-m", "pip", "install"]:
        ci_installs = ci_test_command().split(" && ")[:-1]
        if command in ci_installs:
            return
        # Otherwise: named packages, each one that requirements-dev.txt (which CI installs) lists.
        listed = {re.split(r"[<>=!~\[ ]", line.strip())[0].lower()
                  for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")}
        named = [a for a in argv[4:] if not a.startswith("-")]
        assert named and all(a.lower() in listed for a in named), \
            f"{where}: {command!r}: installs what neither CI nor requirements-dev.txt does"
        return
    if argv == ["python", "-m", "pytest"]:
        return  # the whole suite: what CI runs
    if "train.py" in argv:
        _run_train_py(argv, where, tmp_path)
        return
    for entry in ("zcoll-bench", "zcoll.bench"):
        if entry in argv:
            _check_zcoll_bench(argv[argv.index(entry) + 1:], where)
            return
    if len(argv) >= 2 and argv[0] == "python" and argv[1].startswith("bench/"):
        _check_bench_flags(ROOT / argv[1], argv[2:], where)
        return
    pytest.fail(f"{where}: no way to check {command!r}; mark the block <!-- not run: why -->")


@pytest.mark.parametrize("snippet", SHELL, ids=_ids(SHELL))
@pytest.mark.timeout(400)
def test_shell_block_runs_or_checks(snippet, tmp_path):
    if snippet.marker:
        assert snippet.marker[0] == "not run" and len(snippet.marker[1]) > 20, \
            f"{snippet.where}: a shell block that is not run says why"
        return
    for command in commands(snippet.body):
        _check_command(command, snippet.where, tmp_path)


CONSOLE = [s for s in ALL if s.language == "console"]


@pytest.mark.parametrize("snippet", CONSOLE, ids=_ids(CONSOLE))
@pytest.mark.timeout(120)
def test_console_commands_run(snippet, tmp_path):
    lines = [line[2:] for line in snippet.body.splitlines() if line.startswith("$ ")]
    assert lines, f"{snippet.where}: a console block shows at least one `$ command`"
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "python":
            argv[0] = sys.executable
        code, out, err = run_command(argv, timeout=100, cwd=tmp_path)
        assert code == 0, f"{snippet.where}: {line} failed\n{err[-3000:]}"


def test_blocks_not_run_are_only_multi_host_launches():
    not_run = [(s.where, s.marker[1]) for s in ALL if s.marker and s.marker[0] == "not run"]
    for where, reason in not_run:
        assert "host" in reason, f"{where}: only commands that need several hosts may go unrun ({reason})"
