"""Time from a rank's death to the error on every survivor: zcoll over shm and over tcp next to gloo,
in one run, every trial on fresh processes.

    python bench/death_to_error.py [--reps 3] [--cap 20] [--world 3]
                                   [--setups zcoll/shm,zcoll/tcp,gloo/tcp]
                                   [--phases idle,small,large,p2p,bootstrap]
                                   [--hows exit,sigkill] [--fates zombie,reaped] [--detail] [--json FILE]

A trial is tests/fault_rank.py (the fault tests' rank program) in --world processes started here,
each in a session of its own, around a TCPStore served here. Rank 1 dies (`exit`: os._exit;
`sigkill`: SIGKILL to itself), after storing the moment under the store key "death", while the
others are

  idle       between collectives (they call an all-reduce 0.5 s later)
  small      in a stream of 1 KiB all-reduces (it dies with one in flight)
  large      in a 64 MiB all-reduce (it dies 10 ms into it)
  p2p        in a receive from the victim
  bootstrap  forming the group (zcoll only: a test hook makes it exit once its liveness is up)

and its body is either left a `zombie` (never waited for until the trial ends) or `reaped` at
once. Recorded per survivor: death to error (its t_error minus "death"; both are time.time() on
this machine), and how long its next all-reduce took to raise. Every rank gets --timeout CAP, so
gloo's own timeout bounds a survivor's wait; one that has not raised within CAP seconds of the
death counts as ">cap". Each trial ends with SIGKILL to every rank's process group.

Every combination (setup x phase x how x fate) runs --reps times. The table: per setup and phase,
all survivors of all hows, fates and repetitions: median and max death to error, median and max
time of the next collective, and how many survivors raised within the cap; --detail adds one
line per how x fate. The default, 3 repetitions of 56 combinations (168 trials of about 2 s each,
almost all of it starting the ranks), takes about 6 minutes on 2 cores; --reps 1, --phases or
--setups for a shorter run. The "idle" survivors call their all-reduce 0.5 s after the death, so
there the call-to-error column (from the survivor's failing call to its error) is the detection
time; in "small" it spans the survivor's whole stream of all-reduces and in "p2p" the victim's
0.2 s before it dies. In "bootstrap" the victim stores "death" before it starts to form the group
and exits once its liveness is up, so death to error there is an upper bound. --json writes every
trial.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

RANK = str(Path(__file__).resolve().parents[1] / "tests" / "fault_rank.py")
PHASES = ("idle", "small", "large", "p2p", "bootstrap")
SETUPS = ("zcoll/shm", "zcoll/tcp", "gloo/tcp")
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
VICTIM = 1
START_SECONDS = 120  # for the ranks to start and form the group, before the cap counts


def clean_env(transport: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("ZCOLL_", "OMPI_", "PMIX_"))}
    env["ZCOLL_TRANSPORT"] = transport
    return env


def zcoll_segments() -> list:
    return [p.name for p in Path("/dev/shm").glob("zcoll-*")]


def process_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return "gone"
    return "?"


def read_reports(procs: dict, store, cap: float) -> dict:
    """{rank: the first line rank printed, or None}: waits until every survivor has printed, or
    START_SECONDS for the death, then 2 x cap + 5 s after it (a survivor reports after its next
    collective too, which gloo may spend the cap on)."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for r, p in procs.items():
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, r)
        bufs[r] = b""
    lines = {r: None for r in procs}
    start = time.monotonic()
    death_seen = None
    while any(v is None for v in lines.values()):
        now = time.monotonic()
        if death_seen is None and store.check(["death"]):
            death_seen = now
        limit = start + START_SECONDS if death_seen is None else death_seen + 2 * cap + 5
        if now > limit or not sel.get_map():
            break
        for key, _ in sel.select(timeout=0.2):
            r = key.data
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:  # the rank closed its stdout (it exited)
                sel.unregister(key.fileobj)
                continue
            bufs[r] += chunk
            if b"\n" in bufs[r] and lines[r] is None:
                lines[r] = bufs[r].split(b"\n", 1)[0].decode(errors="replace")
                sel.unregister(key.fileobj)
    sel.close()
    return lines


def trial(backend: str, transport: str, phase: str, how: str, fate: str, cap: float, world: int) -> dict:
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    env = clean_env(transport)
    logs = [tempfile.TemporaryFile() for _ in range(world)]
    procs = [subprocess.Popen([sys.executable, RANK, "--rank", str(r), "--world", str(world), "--port",
                               str(server.port), "--scenario", phase, "--victim", str(VICTIM), "--how", how,
                               "--backend", backend, "--timeout", str(cap)],
                              stdout=subprocess.PIPE, stderr=logs[r], env=env, start_new_session=True)
             for r in range(world)]
    victim = procs[VICTIM]
    if fate == "reaped":
        threading.Thread(target=victim.wait, daemon=True).start()
    survivors = {r: p for r, p in enumerate(procs) if r != VICTIM}
    try:
        lines = read_reports(survivors, server, cap)
        victim_state = process_state(victim.pid)  # "Z" while a zombie, "gone" once reaped
        death = float(server.get("death").decode()) if server.check(["death"]) else None
    finally:
        for p in procs:  # every rank's whole session, the victim's included
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            p.stdout.close()
    out = {"backend": backend, "transport": transport, "phase": phase, "how": how, "fate": fate,
           "victim_state": victim_state, "death": death, "survivors": []}
    for r, line in lines.items():
        rep = None
        if line and line.startswith("{"):
            try:
                rep = json.loads(line)
            except ValueError:
                rep = None
        entry = {"rank": r, "raised": False, "seconds": None, "call_seconds": None, "next_seconds": None,
                 "next_error": None, "error": None, "message": None}
        if rep is not None and rep.get("error") and death is not None:
            entry.update(error=rep["error"], message=rep.get("message", "")[:300], call_seconds=rep.get("waited"),
                         next_seconds=rep.get("next_seconds"), next_error=rep.get("next_error"))
            seconds = rep["t_error"] - death
            if seconds < cap:
                entry.update(raised=True, seconds=seconds)
        elif rep is not None:
            entry["error"] = "none (the call returned)"
        else:
            logs[r].seek(0)
            entry["message"] = "no report; stderr: " + logs[r].read().decode(errors="replace")[-500:]
        out["survivors"].append(entry)
    for f in logs:
        f.close()
    del server
    return out


def fmt(x, cap=None):
    if x is None:
        return f">{cap:g}" if cap is not None else "-"
    return f"{x:.3f}"


def summarize(trials: list, cap: float) -> tuple:
    """(median, max, raised, total, call median, next median, next max) over every survivor of
    `trials`; a survivor that did not raise within the cap counts as above every time (None:
    ">cap")."""
    surv = [s for t in trials for s in t["survivors"]]
    raised = [s["seconds"] for s in surv if s["raised"]]
    missing = len(surv) - len(raised)
    ordered = sorted(raised) + [float("inf")] * missing
    med = statistics.median(ordered) if ordered else None
    med = None if med is None or med == float("inf") else med
    mx = None if missing or not ordered else max(ordered)
    nxt = [s["next_seconds"] for s in surv if s["raised"] and s["next_seconds"] is not None]
    call = [s["call_seconds"] for s in surv if s["raised"] and s["call_seconds"] is not None]
    return (med, mx, len(raised), len(surv), statistics.median(call) if call else None,
            statistics.median(nxt) if nxt else None, max(nxt) if nxt else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every combination")
    ap.add_argument("--cap", type=float, default=20.0,
                    help="seconds a survivor may take to raise (every rank's group timeout)")
    ap.add_argument("--world", type=int, default=3)
    ap.add_argument("--setups", default=",".join(SETUPS), help="backend/transport pairs")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--hows", default="exit,sigkill")
    ap.add_argument("--fates", default="zombie,reaped")
    ap.add_argument("--detail", action="store_true", help="a line per how x fate as well")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    setups = [tuple(s.split("/")) for s in args.setups.split(",")]
    phases, hows, fates = args.phases.split(","), args.hows.split(","), args.fates.split(",")
    for b, t in setups:
        if (b, t) not in [tuple(s.split("/")) for s in SETUPS]:
            ap.error(f"unknown setup {b}/{t} (one of {', '.join(SETUPS)})")
    shm_before = set(zcoll_segments())
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    trials = []
    # Repetitions outermost and setups innermost: every setup sees the same stretch of machine state.
    for rep, phase, how, fate in itertools.product(range(args.reps), phases, hows, fates):
        for backend, transport in setups:
            if phase == "bootstrap" and backend != "zcoll":
                continue  # the hook that kills a rank while the group forms is zcoll's
            t = trial(backend, transport, phase, how, fate, args.cap, args.world)
            t["rep"] = rep
            trials.append(t)
            got = ", ".join(fmt(s["seconds"], args.cap) for s in t["survivors"])
            print(f"  [{time.perf_counter() - started:6.1f} s] {backend}/{transport} {phase} {how} {fate} "
                  f"(victim {t['victim_state']}): {got}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    leaked = sorted(set(zcoll_segments()) - shm_before)

    print(f"death to error, {args.world} ranks (rank {VICTIM} dies), seconds; {args.reps} repetition(s) of "
          f"{'/'.join(hows)} x {'/'.join(fates)}; cap {args.cap:g} s; {os.cpu_count()} cores, load "
          f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after; {len(trials)} trials in {elapsed:.0f} s")
    head = (f"{'backend/transport':<18} {'phase':<16} {'median':>8} {'max':>8} {'raised':>8} "
            f"{'call median':>12} {'next median':>12} {'next max':>9}")
    print(head)
    rows = []
    for backend, transport in setups:
        for phase in phases:
            sel = [t for t in trials if (t["backend"], t["transport"], t["phase"]) == (backend, transport, phase)]
            if not sel:
                continue
            med, mx, n_raised, n, cmed, nmed, nmax = summarize(sel, args.cap)
            rows.append({"backend": backend, "transport": transport, "phase": phase, "median": med, "max": mx,
                         "raised": n_raised, "survivors": n, "call_median": cmed, "next_median": nmed,
                         "next_max": nmax})
            print(f"{backend + '/' + transport:<18} {phase:<16} {fmt(med, args.cap):>8} {fmt(mx, args.cap):>8} "
                  f"{f'{n_raised}/{n}':>8} {fmt(cmed):>12} {fmt(nmed):>12} {fmt(nmax):>9}")
            if args.detail:
                for how, fate in itertools.product(hows, fates):
                    sub = [t for t in sel if (t["how"], t["fate"]) == (how, fate)]
                    if sub:
                        m2, x2, r2, n2, cm2, nm2, nx2 = summarize(sub, args.cap)
                        print(f"{'':<18} {'  ' + how + '/' + fate:<16} {fmt(m2, args.cap):>8} "
                              f"{fmt(x2, args.cap):>8} {f'{r2}/{n2}':>8} {fmt(cm2):>12} {fmt(nm2):>12} "
                              f"{fmt(nx2):>9}")
    odd = [(t, s) for t in trials for s in t["survivors"] if not s["raised"]]
    for t, s in odd[:10]:
        print(f"not raised within {args.cap:g} s: {t['backend']}/{t['transport']} {t['phase']} {t['how']} "
              f"{t['fate']} rep {t['rep']} rank {s['rank']}: {s['error'] or ''} {s['message'] or ''}"[:400])
    zombies = [t for t in trials if t["fate"] == "zombie" and t["victim_state"] != "Z"]
    if zombies:
        print(f"note: {len(zombies)} 'zombie' trial(s) whose victim was not a zombie when the survivors "
              f"reported (still running or gone): {[t['victim_state'] for t in zombies]}")
    if leaked:
        print(f"zcoll segments left in /dev/shm by the run: {leaked}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cap": args.cap, "world": args.world, "reps": args.reps,
                                               "seconds": elapsed, "rows": rows, "trials": trials,
                                               "shm_leaked": leaked}, indent=1))


if __name__ == "__main__":
    main()
