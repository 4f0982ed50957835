"""Time and bytes to a target accuracy for each synchronisation strategy (docs/sync.md), side by
side in one run: a communication-bound MLP on scikit-learn's digits (64-H-H-10; H=2048 gives 4.3M
parameters, H=4096 17M), every rank in its own network namespace on a tbf-shaped link, the same
initial weights and data order for every strategy.

Strategies: synchronous DDP on gloo, on zcoll, and on zcoll int8 with error feedback; zcoll.sync's
PeriodicAverager, DiLoCo (exact and int8), GossipAverager, and AsyncParameterServer with and
without delay compensation. For each: wall-clock seconds and bytes sent per rank until rank 0's
model (for the parameter server: the first worker's) reaches the target test accuracy, the final
accuracy, and the accuracy-vs-time curve (--plot).

    python bench/time_to_accuracy.py [--world 4] [--rate 1gbit] [--hidden 4096] [--target 0.95]
                                     [--max-seconds 300] [--configs ...] [--seeds 0,1,2]
                                     [--ps-servers 1] [--ps-momentum 0.9] [--json F] [--plot F.png]
    python bench/time_to_accuracy.py --smoke     # local ranks on loopback, a small model (tests)

Needs root and iproute2 (except --smoke); only the namespaces' own addresses are targeted, and
they are removed on exit. Evaluation pauses the clock.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from shaped_allreduce import make_hosts, run_ranks  # noqa: E402  (what every shaped bench shares)

BRIDGE, SUBNET = "zcbt0", "10.231.85"
# What launch() passes on to every rank (with --configs, --seed, --store-host, --port, --rank).
RANK_SETTINGS = ("world", "hidden", "target", "max_seconds", "max_steps", "batch", "lr", "inner_lr", "period",
                 "dc_lambda", "ps_momentum", "ps_servers", "eval_every", "after", "seed")
CONFIGS = ("ddp-gloo", "ddp-zcoll", "ddp-zcoll-int8ef", "periodic", "diloco", "diloco-int8", "gossip", "ps", "ps-dc")


def load_digits_split(seed: int = 0):
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25,
                                                        random_state=seed, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3
    return (torch.from_numpy((x_train - mean) / std), torch.from_numpy(y_train).long(),
            torch.from_numpy((x_test - mean) / std), torch.from_numpy(y_test).long())


def model_of(hidden: int, seed: int):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


class Clock:
    """Wall time that stops while the model is evaluated."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def pause(self):
        return _Paused(self)


class _Paused:
    def __init__(self, clock):
        self.clock = clock

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.clock.paused += time.perf_counter() - self.t0


def run_config(name: str, args, rank: int, world: int, data, control) -> dict:
    """One strategy from the same start; returns rank 0's (the observer's) curve."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import zcoll
    import zcoll.hooks
    from zcoll.reference.codecs import encoded_bytes
    from zcoll.sync import AsyncParameterServer, DiLoCo, GossipAverager, PeriodicAverager
    from zcoll.sync._common import ring_bytes

    x, y, x_test, y_test = data
    xs, ys = x[rank::world], y[rank::world]
    model = model_of(args.hidden, args.seed)
    numel = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)
    observer = args.ps_servers if name.startswith("ps") else 0  # the parameter server's first worker
    curve, bytes_sent, reached = [], 0, None
    step_fn, counted = None, None

    if name.startswith("ddp"):
        backend = "gloo" if name == "ddp-gloo" else "zcoll"
        options = zcoll.Options(compression="int8", compress_min_bytes=0) if name.endswith("int8ef") else None
        group = dist.new_group(backend=backend, pg_options=options) if options else dist.new_group(backend=backend)
        net = DDP(model, process_group=group, bucket_cap_mb=25)
        if options:
            net.register_comm_hook(zcoll.hooks.ErrorFeedbackState(process_group=group),
                                   zcoll.hooks.compressed_allreduce_hook)
        per_step = ring_bytes(encoded_bytes("int8", numel) if options else 4 * numel, world)
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)

        def step_fn(bx, by):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(bx), by).backward()
            opt.step()

        def counted(steps):
            return steps * per_step
    elif name in ("periodic", "gossip") or name.startswith("diloco"):  # a local step, then the strategy's
        if name.startswith("diloco"):
            opt = torch.optim.AdamW(model.parameters(), lr=args.inner_lr)
            sync = DiLoCo(model, opt, period=args.period, compression="int8" if name.endswith("int8") else None)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
            sync = PeriodicAverager(model, period=args.period) if name == "periodic" else \
                GossipAverager(model, topology="exponential")

        def step_fn(bx, by):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(bx), by).backward()
            opt.step()
            sync.step()

        def counted(steps):
            return sync.bytes_sent
    else:  # the parameter server: the first ranks serve, the others train without waiting for each other
        workers = world - args.ps_servers
        opt = torch.optim.SGD(model.parameters(), lr=args.lr / workers, momentum=args.ps_momentum)
        ps = AsyncParameterServer(model, opt, servers=list(range(args.ps_servers)), max_staleness=4 * world,
                                  delay_compensation=args.dc_lambda if name == "ps-dc" else 0.0)
        ps.start()
        if rank < args.ps_servers:  # a server serves until every worker has said it is done
            dist.barrier(group=control)  # the workers' start
            ps.close()
            dist.barrier(group=control)
            return {}

        def step_fn(bx, by):
            ps.worker_step(lambda m: torch.nn.functional.cross_entropy(m(bx), by))

        def counted(steps):
            return ps.bytes_sent

    store = dist.distributed_c10d._get_default_store()
    dist.barrier(group=control)
    clock = Clock()
    steps = 0
    flag = torch.zeros(1)
    while True:
        idx = torch.randint(len(xs), (args.batch,), generator=gen)
        step_fn(xs[idx], ys[idx])
        steps += 1
        if steps % args.eval_every == 0:
            with clock.pause():
                if rank == observer:
                    with torch.no_grad():
                        acc = float((model(x_test).argmax(dim=1) == y_test).float().mean())
                    bytes_sent = counted(steps)
                    curve.append((clock.now(), acc, bytes_sent))
                    if reached is None and acc >= args.target:
                        reached = (clock.now(), bytes_sent, steps)
                    done = reached is not None and steps >= (reached[2] + args.eval_every * args.after) or \
                        clock.now() > args.max_seconds
                    flag.fill_(1.0 if done else 0.0)
                if not name.startswith("ps"):
                    dist.all_reduce(flag, group=control)  # everyone stops together (on the control group)
                else:  # workers do not wait for each other: the observer's verdict goes through the store
                    stop_key = f"time_to_accuracy/{name}/stop"
                    if rank == observer and flag.item() > 0:
                        store.set(stop_key, "1")
                    elif rank != observer and store.check([stop_key]):
                        flag.fill_(1.0)
            if flag.item() > 0 or steps >= args.max_steps:
                break
    if name.startswith("ps"):
        ps.close()
        dist.barrier(group=control)
    return {"curve": curve, "reached": reached, "final": curve[-1][1] if curve else None, "steps": steps,
            "numel": numel} if rank == observer else {}


def worker(args):
    import torch
    import torch.distributed as dist

    import zcoll  # noqa: F401  (registers the backend)
    torch.set_num_threads(1)
    store = dist.TCPStore(args.store_host, args.port, None, False, timedelta(seconds=120))
    dist.init_process_group("zcoll", store=store, rank=args.rank, world_size=args.world,
                            timeout=timedelta(seconds=600))
    control = dist.new_group(backend="zcoll")
    data = load_digits_split(args.seed)
    results = {}
    for name in args.configs:
        out = run_config(name, args, args.rank, args.world, data, control)
        gathered = [None] * args.world
        dist.all_gather_object(gathered, out, group=control)
        results[name] = next(g for g in gathered if g)
    if args.rank == 0:
        print(json.dumps(results), flush=True)
    dist.barrier(group=control)
    dist.destroy_process_group()


def launch(args) -> dict:
    import torch.distributed as dist
    hosts, undo = ([None] * args.world, lambda: None) if args.smoke else \
        make_hosts(args.world, args.rate, BRIDGE, SUBNET, "zcoll-t")
    try:
        host = "127.0.0.1" if args.smoke else f"{SUBNET}.1"
        server = dist.TCPStore(host, 0, None, True, timedelta(seconds=120), wait_for_workers=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "ZCOLL_"))}
        env.update(MASTER_ADDR=host)
        if not args.smoke:
            env["GLOO_SOCKET_IFNAME"] = "eth0"
        settings = {k: getattr(args, k) for k in RANK_SETTINGS}
        settings.update(configs=",".join(args.configs), store_host=host, port=server.port)
        base = [sys.executable, __file__, *(x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v)))]
        # Each namespace is a host of its own (ZCOLL_HOSTID): zcoll then crosses the shaped links
        # rather than share memory through the /dev/shm every namespace sees.
        return run_ranks([(["ip", "netns", "exec", ns] if ns else []) + [*base, "--rank", str(r)]
                          for r, ns in enumerate(hosts)],
                         [env if args.smoke else {**env, "ZCOLL_HOSTID": f"tta-host{r}"} for r in range(len(hosts))],
                         args.timeout)
    finally:
        undo()


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarise(runs: dict) -> dict:
    """Per strategy over the seeds' runs: medians of seconds, bytes and steps to the target over
    the runs that reached it, the median final accuracy, and how many runs reached it."""
    out = {}
    for name in next(iter(runs.values())):
        rs = [run[name] for run in runs.values()]
        got = [r["reached"] for r in rs if r["reached"]]
        out[name] = {"runs": len(rs), "reached_in": len(got),
                     "seconds": _median([g[0] for g in got]) if got else None,
                     "bytes": _median([g[1] for g in got]) if got else None,
                     "steps": _median([g[2] for g in got]) if got else None,
                     "final": _median([r["final"] for r in rs if r["final"] is not None]),
                     "numel": rs[0]["numel"]}
    return out


def report(args, runs: dict) -> str:
    summary = summarise(runs)
    numel = next(r["numel"] for r in summary.values())
    where = "local ranks on loopback" if args.smoke else f"one per network namespace, links {args.rate} (tbf)"
    seeds = list(runs)
    over = f"median of {len(seeds)} seeds ({','.join(map(str, seeds))}); " if len(seeds) > 1 else f"seed {seeds[0]}; "
    lines = [f"digits MLP 64-{args.hidden}-{args.hidden}-10 ({numel / 1e6:.1f}M parameters), {args.world} ranks, {where}; "
             f"target {args.target:.0%} test accuracy, batch {args.batch} per rank; {over}"
             f"at most {args.max_seconds:g} s per strategy",
             f"{'strategy':<18} {'seconds':>9} {'MB sent':>9} {'steps':>6} {'s/step':>7} {'final acc':>9} {'reached':>8}"]
    base = summary.get("ddp-gloo")
    for name, r in summary.items():
        got = r["seconds"] is not None
        sec = f"{r['seconds']:9.1f}" if got else f"{'-':>9}"
        mb = f"{r['bytes'] / 1e6:9.1f}" if got else f"{'-':>9}"
        steps = f"{r['steps']:6.0f}" if got else f"{'-':>6}"
        per = f"{r['seconds'] / r['steps']:7.3f}" if got else f"{'-':>7}"
        extra = f"   {base['seconds'] / r['seconds']:.1f}x sooner, {base['bytes'] / max(r['bytes'], 1):.0f}x fewer bytes " \
            "than ddp-gloo" if got and base and base["seconds"] and name != "ddp-gloo" else ""
        lines.append(f"{name:<18} {sec} {mb} {steps} {per} {r['final']:9.3f} {r['reached_in']:>4}/{r['runs']:<3}{extra}")
    return "\n".join(lines)


def plot(results: dict, path: str, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in results.items():
        if r["curve"]:
            ax.plot([c[0] for c in r["curve"]], [c[1] for c in r["curve"]], label=name)
    ax.axhline(args.target, color="gray", linestyle=":")
    ax.set_xlabel("seconds (evaluation excluded)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_ylim(0.5, 1.0)
    ax.legend()
    ax.set_title(f"time to accuracy, {args.world} ranks, MLP hidden {args.hidden}")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--rate", default="1gbit", help="each link's tbf rate")
    ap.add_argument("--hidden", type=int, default=4096, help="hidden width (4096: 17M parameters)")
    ap.add_argument("--target", type=float, default=0.95, help="test accuracy to reach")
    ap.add_argument("--max-seconds", type=float, default=300, help="per strategy, evaluation excluded")
    ap.add_argument("--max-steps", type=int, default=5000, help="per strategy")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--batch", type=int, default=32, help="examples per rank and step")
    ap.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (DDP, periodic, gossip, servers)")
    ap.add_argument("--inner-lr", type=float, default=1e-3, help="DiLoCo's inner AdamW learning rate")
    ap.add_argument("--period", type=int, default=10, help="PeriodicAverager's and DiLoCo's period")
    ap.add_argument("--dc-lambda", type=float, default=0.04, help="ps-dc's delay compensation")
    ap.add_argument("--ps-momentum", type=float, default=0.9, help="the parameter server's SGD momentum")
    ap.add_argument("--ps-servers", type=int, default=1, help="ranks serving the parameter server's shards")
    ap.add_argument("--eval-every", type=int, default=5, help="steps between evaluations")
    ap.add_argument("--after", type=int, default=2, help="evaluations to go on after the target")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: one run each, the table shows medians")
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # a rank's seed
    ap.add_argument("--smoke", action="store_true", help="local ranks on loopback, a small model and target")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", metavar="FILE.png", help="accuracy vs time (needs matplotlib)")
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--store-host", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
    if not args.seeds:
        ap.error("--seeds needs at least one seed")
    if not 1 <= args.ps_servers < args.world:
        ap.error(f"--ps-servers must leave at least one worker: 1 to {args.world - 1}")
    if set(args.configs) - set(CONFIGS):
        ap.error(f"unknown configs {sorted(set(args.configs) - set(CONFIGS))}")
    if args.rank is not None:
        return worker(args)
    if args.smoke:
        args.hidden, args.target, args.max_seconds, args.world = min(args.hidden, 64), min(args.target, 0.85), \
            min(args.max_seconds, 20), min(args.world, 3)
    elif os.geteuid() != 0:
        sys.exit("time_to_accuracy.py needs root (network namespaces, tc); --smoke runs without")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still remove the namespaces
    runs = {}
    for seed in args.seeds:  # each seed: its own initial weights, train/test split and data order
        args.seed = seed
        runs[seed] = launch(args)
    print(report(args, runs))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()
                                                            if k not in ("rank", "port", "store_host", "seed")},
                                               "summary": summarise(runs), "runs": runs}, indent=1))
    if args.plot:
        plot(runs[args.seeds[0]], args.plot, args)


if __name__ == "__main__":
    main()
