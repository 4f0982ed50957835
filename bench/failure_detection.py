"""Time from a rank's death to the error on every survivor: zcoll (shm and tcp) next to gloo, in
one run (docs/failures.md). Each trial is tests/fault_rank.py in 3 processes started here; rank 1
dies (os._exit or SIGKILL; left a zombie or reaped) while the others are idle (they call an
all-reduce 0.5 s later), in a stream of small all-reduces, in a 64 MiB all-reduce, or in a
receive from it. Reported: death to error, and the survivor's call to error. A survivor that
has not raised after --cap seconds (gloo's group timeout, which bounds its wait) counts as the
cap.

    python bench/failure_detection.py            # every combination, 2 repetitions
    python bench/failure_detection.py --reps 5 --json out.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

RANK = str(Path(__file__).resolve().parents[1] / "tests" / "fault_rank.py")
PHASES = ("idle", "small", "large", "p2p")


def trial(backend, transport, phase, how, fate, cap):
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZCOLL_")}
    env["ZCOLL_TRANSPORT"] = transport
    procs = [subprocess.Popen([sys.executable, RANK, "--rank", str(r), "--world", "3", "--port", str(server.port),
                               "--scenario", phase, "--how", how, "--backend", backend, "--timeout", str(cap)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                              start_new_session=True) for r in range(3)]
    if fate == "reaped":
        threading.Thread(target=procs[1].wait, daemon=True).start()
    out = []
    try:
        for r in (0, 2):
            line = procs[r].stdout.readline()
            out.append(json.loads(line) if line.startswith("{") else None)
        death = float(server.get("death").decode())
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.communicate()
    # (death to error, the survivor's call to error): they differ where the survivor was idle
    return [(min(cap, rep["t_error"] - death), min(cap, rep["waited"])) if rep and rep.get("error") else (cap, cap)
            for rep in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cap", type=float, default=20.0, help="seconds a survivor may take (gloo's group timeout)")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    setups = [("zcoll", "shm"), ("zcoll", "tcp"), ("gloo", "tcp")]
    rows = []
    for phase in args.phases.split(","):
        for backend, transport in setups:
            pairs = []
            for how, fate, _ in itertools.product(("exit", "sigkill"), ("zombie", "reaped"), range(args.reps)):
                pairs += trial(backend, transport, phase, how, fate, args.cap)
            times, calls = [p[0] for p in pairs], [p[1] for p in pairs]
            rows.append({"backend": backend, "transport": transport, "phase": phase, "seconds": times,
                         "call_to_error": calls})
            capped = sum(t >= args.cap for t in times)
            print(f"{backend:>6} {transport:>4} {phase:>6}: death to error median {statistics.median(times):7.3f} s, "
                  f"max {max(times):7.3f} s; call to error median {statistics.median(calls):7.3f} s "
                  f"({len(times)} survivor errors, {capped} at the {args.cap:g} s cap)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cap": args.cap, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
