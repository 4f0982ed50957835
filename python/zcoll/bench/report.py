"""zcoll-bench's output: the nccl-tests-style table, its footer, the ratio summary, JSON and the
plot. Everything here runs on rank 0 only and sees plain rows (no torch)."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Cell:
    """One placement (out-of-place or in-place) of one row."""
    status: str = "ok"              # ok | n/a
    time_us: float | None = None
    algbw: float | None = None      # GB/s
    busbw: float | None = None      # GB/s
    wrong: int | None = None        # exact rows, when checked
    relerr: float | None = None     # lossy rows, when checked
    bound: float | None = None      # relerr's bound
    reason: str | None = None       # why n/a

    @property
    def failed(self) -> bool:
        if self.status != "ok":
            return False
        if self.wrong:
            return True
        # NaN (an unwritten output) fails too
        return self.relerr is not None and not (self.relerr <= self.bound)


@dataclass
class Row:
    backend: str           # label: zcoll, zcoll+int8, gloo, mpi
    collective: str
    size: int              # bytes of the full vector
    count: int             # its elements
    dtype: str
    op: str                # 'none' for collectives that do not reduce
    root: int              # -1 for collectives without one
    codec: str = "none"
    out_of_place: Cell = field(default_factory=Cell)
    in_place: Cell = field(default_factory=Cell)

    def cells(self):
        return (self.out_of_place, self.in_place)

    def best_time(self) -> float | None:
        times = [c.time_us for c in self.cells() if c.status == "ok" and c.time_us]
        return min(times) if times else None

    def best_busbw(self) -> float | None:
        bws = [c.busbw for c in self.cells() if c.status == "ok" and c.busbw is not None]
        return max(bws) if bws else None


# ---- table ----------------------------------------------------------------------------------

_KEY = "{:>12} {:>12} {:>8} {:>6} {:>6} {:>11} "
_CELL = "{:>9} {:>7} {:>7} {:>8} "
_CELL_WIDTH = len(_CELL.format("", "", "", ""))


def _num(value: float, width: int) -> str:
    for digits in (2, 1, 0):
        text = f"{value:.{digits}f}"
        if len(text) <= width:
            return text
    return f"{value:.2g}"


def _check_text(cell: Cell) -> str:
    if cell.status != "ok":
        return "n/a"
    if cell.relerr is not None:
        text = f"{cell.relerr:.1e}" if math.isfinite(cell.relerr) else str(cell.relerr)
        return ("*" + text) if cell.failed else text
    return "N/A" if cell.wrong is None else str(cell.wrong)


def format_cell(cell: Cell) -> str:
    if cell.status != "ok":
        return _CELL.format("n/a", "n/a", "n/a", "n/a")
    return _CELL.format(_num(cell.time_us, 9), _num(cell.algbw, 7), _num(cell.busbw, 7), _check_text(cell))


def header(collective: str, lossy: bool, bounds: dict[str, float]) -> list[str]:
    check = "relerr" if lossy else "#wrong"
    lines = []
    if lossy:
        lines.append("# relerr: a lossy (compressed) row's relative L2 error against the exact result, "
                     "within docs/compression.md's bound at this many ranks: "
                     + ", ".join(f"{k} {v:.3g}" for k, v in bounds.items())
                     + " (+ one rounding to half/bfloat16 for those types; '*': out of bound); "
                     "exact rows give their #wrong")
    pad = " " * len(_KEY.format(*[""] * 6))
    lines += [
        f"# {collective}",
        "#" + pad[1:] + f"{'out-of-place':^{_CELL_WIDTH}}{'in-place':^{_CELL_WIDTH}}".rstrip(),
        "#" + _KEY.format("size", "count", "type", "redop", "root", "backend")[1:]
        + (_CELL.format("time", "algbw", "busbw", check) + _CELL.format("time", "algbw", "busbw", check)).rstrip(),
        "#" + _KEY.format("(B)", "(elements)", "", "", "", "")[1:]
        + (_CELL.format("(us)", "(GB/s)", "(GB/s)", "") + _CELL.format("(us)", "(GB/s)", "(GB/s)", "")).rstrip(),
    ]
    return lines


def format_row(row: Row) -> str:
    return (_KEY.format(row.size, row.count, row.dtype, row.op, row.root, row.backend)
            + format_cell(row.out_of_place) + format_cell(row.in_place)).rstrip()


def footer(rows: list[Row], backends: list[str]) -> list[str]:
    bad = sum(c.wrong or 0 for r in rows for c in r.cells() if c.status == "ok")
    bad += sum(1 for r in rows for c in r.cells() if c.relerr is not None and c.failed)
    lines = [f"# Out of bounds values : {bad} {'OK' if bad == 0 else 'FAILED'}"]
    for b in backends:
        bws = [c.busbw for r in rows if r.backend == b for c in r.cells() if c.status == "ok"]
        if bws:
            lines.append(f"# Avg bus bandwidth    : {sum(bws) / len(bws):.4g} {b}")
    na = {}
    for r in rows:
        for c in r.cells():
            if c.status != "ok" and c.reason and not c.reason.startswith("no in-place"):
                na.setdefault((r.backend, c.reason), []).append(r)
    for (b, reason), rs in na.items():
        lines.append(f"# n/a {b}: {reason} ({len(rs)} cells)")
    return lines


def ratio_table(rows: list[Row], backends: list[str]) -> list[str]:
    """Per size (and type/op/root), each backend's best time over the first zcoll line's."""
    base = next((b for b in backends if b.startswith("zcoll")), None)
    others = [b for b in backends if b != base]
    if base is None or not others:
        return []
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault((r.size, r.dtype, r.op, r.root), {})[r.backend] = r
    lines = [f"# Ratio: time over {base}'s (the better of out-of-place and in-place; > 1: {base} is faster)",
             "#" + f"{'size':>12} {'type':>8} {'redop':>6} {'root':>6} "[1:]
             + " ".join(f"{b:>11}" for b in others)]
    for (size, dtype, op, root), by in groups.items():
        ref = by.get(base)
        ref_t = ref.best_time() if ref else None
        cols = []
        for b in others:
            t = by[b].best_time() if b in by else None
            cols.append(f"{t / ref_t:>11.2f}" if t and ref_t else f"{'n/a':>11}")
        lines.append(f"{size:>12} {dtype:>8} {op:>6} {root:>6} " + " ".join(cols))
    return lines


# ---- progress -------------------------------------------------------------------------------


class Progress:
    """A progress line on stderr for long sweeps: rewritten in place on a terminal, a line every
    few seconds otherwise (mpirun's forwarded stderr is no terminal); silent for short runs."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = self.last = time.monotonic()
        self.tty = enabled and sys.stderr.isatty()
        self.shown = False

    def step(self, what: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < 2 or now - self.last < (0.2 if self.tty else 5):
            return
        self.last = now
        text = f"# zcoll-bench: {self.done}/{self.total} cells, {now - self.start:.0f} s: {what}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# ---- files ----------------------------------------------------------------------------------


def write_json(path: str, meta: dict, rows: list[Row]) -> None:
    def clean(value):  # JSON has no NaN/inf: a non-finite relerr becomes a string
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value
    data = dict(meta, rows=[clean(asdict(r)) for r in rows])
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def human_bytes(n: float) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def plot(path: str, rows: list[Row], title: str) -> None:
    """busbw (the better placement) vs size, log-x, one line per backend/codec (and per type/op/
    root when the run had several), one panel per collective."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colls = list(dict.fromkeys(r.collective for r in rows))
    # constrained layout keeps the figure's title clear of the first panel's
    fig, axes = plt.subplots(len(colls), 1, figsize=(7, 3.6 * len(colls)), squeeze=False, layout="constrained")
    for ax, coll in zip(axes[:, 0], colls):
        variants = {(r.dtype, r.op, r.root) for r in rows if r.collective == coll}
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            bw = r.best_busbw()
            if r.collective != coll or bw is None:
                continue
            label = r.backend if len(variants) == 1 else f"{r.backend} {r.dtype} {r.op} root {r.root}"
            lines.setdefault(label, []).append((r.size, bw))
        for label, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: human_bytes(x)))
        ax.set_xlabel("size")
        ax.set_ylabel("bus bandwidth (GB/s)")
        case = next((v for v in variants), None) if len(variants) == 1 else None
        ax.set_title(f"{coll} ({case[0]}, {case[1]})" if case and case[1] != "none" else
                     f"{coll} ({case[0]})" if case else coll)
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
