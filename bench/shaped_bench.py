"""zcoll-bench across shaped "hosts": one network namespace per rank, joined by veth pairs on a
bridge, every link limited with `tc ... tbf` in both directions (bench/shaped_allreduce.py's
make_hosts), and one `python -m zcoll.bench` per namespace started the way torchrun would (RANK,
WORLD_SIZE, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1, MASTER_ADDR = rank 0's address), zcoll forced to
tcp. Everything after `--` goes to zcoll-bench unchanged; rank 0's table is printed as it comes.

    python bench/shaped_bench.py [--world 4] [--rate 1gbit|none] [--timeout 900] -- <zcoll-bench args>
    python bench/shaped_bench.py --world 4 -- all_reduce -b 1M -e 64M -f 4 --backend zcoll,gloo \\
        --compress none,bf16,int8,int4 -n 3 -w 1

Exit status: rank 0's (0: every check passed, 1: a check failed or a rank died, 2: bad flags),
124 when --timeout ran out (every rank is killed), 130 on Ctrl-C. The namespaces and the bridge
are removed in every case. Needs root and iproute2 (ip, tc); the only addresses ever targeted
are the namespaces' own.

No MPI here: mpirun does not start ranks inside network namespaces, so `--backend mpi` is
refused. Ranks are not pinned to cores (zcoll-bench pins only the ranks its own --nproc starts),
so more namespaces than cores just share them; each rank gets OMP_NUM_THREADS = cores / ranks
(at least 1) unless the caller set it, as zcoll-bench --nproc does.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shaped_allreduce import make_hosts  # the same shaped hosts as shaped_allreduce.py's

# Not shaped_allreduce.py's bridge and subnet (nor tests/test_netns.py's), so they can run at once.
BRIDGE, SUBNET, NAMES = "zcbn0", "10.231.79", "zcoll-sb"
PORT = 29500  # rank 0's namespace is new and empty: every port in it is free (and below the ephemeral range)
GRACE = 15    # seconds the other ranks get after one fails before they are killed
# Variables that would make zcoll-bench think it runs under another launcher (or as one of the
# ranks its own --nproc starts), or point it at another rendezvous.
DROP = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "GROUP_RANK", "ROLE_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
        "PMIX_RANK", "TORCHELASTIC_RUN_ID", "ZCOLL_BENCH_SPAWNED", "ZCOLL_BENCH_CPU")


def parse(argv: list[str]):
    if "--" in argv:
        own, bench = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        own, bench = argv, []
    ap = argparse.ArgumentParser(prog="shaped_bench.py", description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [options] -- <zcoll-bench arguments>")
    ap.add_argument("--world", type=int, default=4, help="ranks, one network namespace each (default: 4)")
    ap.add_argument("--rate", default="1gbit",
                    help="tc tbf rate of every link, both directions, or none for unshaped (default: 1gbit)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds for the whole run; then every rank is killed (default: 900)")
    ap.add_argument("--bridge", default=BRIDGE, help=f"bridge to create (default: {BRIDGE})")
    ap.add_argument("--subnet", default=SUBNET, help=f"its /24, rank i at SUBNET.(10+i) (default: {SUBNET})")
    ap.add_argument("--names", default=NAMES, help=f"namespace name prefix (default: {NAMES})")
    args = ap.parse_args(own)
    if not 1 <= args.world <= 200:
        ap.error(f"--world must be in 1..200, got {args.world}")
    if args.timeout <= 0:
        ap.error(f"--timeout must be positive, got {args.timeout}")
    if not (len(args.bridge) <= 15 and args.bridge[-2:].isalnum()):
        ap.error(f"--bridge {args.bridge!r}: an interface name of at most 15 characters")
    parts = args.subnet.split(".")
    if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
        ap.error(f"--subnet {args.subnet!r}: the first three octets of a /24, e.g. {SUBNET}")
    args.rate = None if args.rate.lower() in ("none", "off", "0", "") else args.rate
    args.bench = bench
    # zcoll-bench's own checks, before any namespace exists: a bad flag is its usage error (exit 2)
    from zcoll.bench import cli
    flags = cli.parse_args(bench)
    if "mpi" in flags.backends:
        ap.error("--backend mpi: MPI is not part of this scenario (mpirun does not start ranks "
                 "inside network namespaces); use zcoll and gloo")
    if flags.transport not in (None, "tcp"):
        ap.error(f"--transport {flags.transport}: the namespaces are separate hosts, zcoll runs over tcp here")
    problem = cli.check_world(flags, args.world)
    if problem:
        ap.error(f"zcoll-bench: {problem}")
    return args


def rank_env(world: int, subnet: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROP}
    env.update(WORLD_SIZE=str(world), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR=f"{subnet}.10",
               MASTER_PORT=str(PORT), ZCOLL_TRANSPORT="tcp",
               ZCOLL_SOCKET_IFNAME="eth0",   # zcoll's tcp transport advertises eth0's address
               GLOO_SOCKET_IFNAME="eth0")    # gloo would otherwise resolve the (shared) hostname
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // world)))
    return env


def _die_with_parent():
    """In each rank (survives `ip netns exec`'s exec): SIGKILL when this script dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(log, limit: int = 4000) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode(errors="replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run_ranks(args, hosts: list[str]) -> int:
    env = rank_env(args.world, args.subnet)
    deadline = time.monotonic() + args.timeout
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in hosts]
        return _run(args, hosts, env, deadline, logs)


def _run(args, hosts, env, deadline, logs) -> int:
    procs: list[subprocess.Popen] = []
    status, why = None, ""
    try:
        for r, ns in enumerate(hosts):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "zcoll.bench", *args.bench],
                env=dict(env, RANK=str(r)), stdin=subprocess.DEVNULL,
                stdout=None if r == 0 else logs[r], stderr=logs[r],  # rank 0's table goes straight out
                start_new_session=True, preexec_fn=_die_with_parent))  # noqa: PLW1509 (no threads here)
        failed_at = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if now > deadline:
                status, why = 124, f"timed out after {args.timeout:g} s: killed every rank"
                break
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = now
            if failed_at is not None and now - failed_at > GRACE:
                why = f"a rank failed; killed the others after {GRACE} s"
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        status, why = 130, "interrupted: killed every rank"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    if why:
        print(f"shaped_bench: {why}", file=sys.stderr, flush=True)
    for r, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            text = _tail(log).strip()
            print(f"shaped_bench: rank {r} ({hosts[r]}) exit status {p.returncode}"
                  + (f", its output:\n{text}" if text else ", no output"), file=sys.stderr, flush=True)
    if status is None:
        code0 = procs[0].returncode
        status = code0 if code0 > 0 else 1 if code0 < 0 else 0
        if status == 0 and any(p.returncode != 0 for p in procs):
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("shaped_bench.py: needs root (network namespaces, tc)", file=sys.stderr)
        return 1

    def terminated(signum, _frame):
        print(f"shaped_bench: {signal.Signals(signum).name}: killing every rank, removing the hosts",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)  # unwinds through the finally below: the namespaces still go
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)
    try:
        hosts, undo = make_hosts(args.world, args.rate, args.bridge, args.subnet, args.names)
    except subprocess.CalledProcessError as e:
        print(f"shaped_bench.py: cannot build the hosts: {' '.join(e.cmd)}: {(e.stderr or '').strip()}",
              file=sys.stderr)
        if "File exists" in (e.stderr or ""):  # another run, or one killed by SIGKILL (no teardown then)
            print(f"shaped_bench.py: another run may be using bridge {args.bridge} (else remove its leftovers: "
                  f"ip link del {args.bridge}; ip netns del {args.names}<N>-<i>), or pass --bridge/--subnet",
                  file=sys.stderr)
        return 1
    try:
        shaping = f"tbf rate {args.rate} on every link, both directions" if args.rate else "unshaped"
        print(f"# shaped_bench: {args.world} hosts (network namespaces on bridge {args.bridge}, {shaping}); "
              f"zcoll over tcp; rank: namespace address: "
              + ", ".join(f"{r}: {ns} {args.subnet}.{10 + r}" for r, ns in enumerate(hosts)), flush=True)
        print(f"# shaped_bench: zcoll-bench {' '.join(args.bench)}", flush=True)
        return run_ranks(args, hosts)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the teardown
        undo()


if __name__ == "__main__":
    sys.exit(main())
