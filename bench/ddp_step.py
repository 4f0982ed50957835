"""DDP training step time: gloo vs zcoll exact vs zcoll int8 + error feedback vs zcoll bf16, side
by side in one run, next to the same step without communication.

    python bench/ddp_step.py [--nproc 2] [--model mlp|transformer] [--params 25M] [--steps 100]
                             [--warmup 5] [--batch 8] [--json FILE]

Every rank builds one model (fixed seed) and, for each configuration, a copy of it with the same
start weights and its own optimizer, in the same processes:

  compute        the bare model, no DDP: forward, backward, optimizer step (no communication)
  gloo           DDP over a gloo group
  zcoll          DDP over a zcoll group, no compression (the reference for the ratios)
  zcoll-int8+EF  DDP over a zcoll group with zcoll.Options(compression="int8") (default block and
                 threshold, the tuner's schedule), comm hook zcoll.hooks.compressed_allreduce_hook
                 with an ErrorFeedbackState
  zcoll-bf16     plain DDP over a zcoll group with zcoll.Options(compression="bf16")

One group per configuration (dist.new_group(..., pg_options=...)). Each step runs every
configuration once, after a barrier, in an order that rotates from step to step, so all see the
same machine state and none always follows the same neighbour. A step is timed from zero_grad to
the end of optimizer.step() (DDP's backward returns only once its bucketed all-reduces have
finished); a step's time is the max over ranks, and the figure is the median over the timed steps
(the p25-p75 range beside it). Ranks are pinned one per core when there are enough (--bind auto,
as bench/allreduce_compare.py and mpirun do), one torch thread each.

Columns: median ms/step, each configuration's time over zcoll's, the time above `compute` (what
DDP adds: gradient copies into buckets and the all-reduce) and that as a share of the step. The
default model is an MLP of 6 square layers (~25M float32 parameters = 100 MB of gradients per step)
on a small batch (8 examples per rank), so what DDP adds is about half the step on 2 cores; its
buckets are DDP's default (25 MB cap). Measured figures: bench/figures/ddp_step.txt.
"""
import argparse
import copy
import json
import os
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import zcoll  # registers the "zcoll" backend
import zcoll.hooks
from local_ranks import launch
from torch.nn.parallel import DistributedDataParallel as DDP

CONFIGS = ("compute", "gloo", "zcoll", "zcoll-int8+EF", "zcoll-bf16")
REFERENCE = "zcoll"
MODELS = ("mlp", "transformer")


def parse_count(s: str) -> int:
    """'25M', '200K', '1.5M', '3000' -> a count."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    s = s.strip()
    return int(float(s[:-1]) * units[s[-1].upper()]) if s[-1].upper() in units else int(float(s))


def build_model(kind: str, params: int, seed: int):
    """(model, input shape per example) with about `params` parameters. mlp: input width w, 6 x
    [Linear(w, w), ReLU], Linear(w, 10). transformer: 4 encoder layers of width d (8 heads,
    feed-forward 4d, no dropout) over 32 positions, mean-pooled, Linear(d, 10)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        depth = 6
        w = max(16, round((params / depth) ** 0.5 / 8) * 8)
        layers = []
        for _ in range(depth):
            layers += [torch.nn.Linear(w, w), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(w, 10)), (w,)
    if kind == "transformer":
        depth, seq = 4, 32
        d = max(64, round((params / (12 * depth)) ** 0.5 / 64) * 64)

        class Encoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                layer = torch.nn.TransformerEncoderLayer(d, nhead=8, dim_feedforward=4 * d, dropout=0.0,
                                                         batch_first=True)
                self.body = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
                self.head = torch.nn.Linear(d, 10)

            def forward(self, x):
                return self.head(self.body(x).mean(dim=1))

        return Encoder(), (seq, d)
    raise ValueError(f"unknown model {kind!r} (one of {', '.join(MODELS)})")


def make_group(name: str):
    if name == "gloo":
        return dist.new_group(backend="gloo")
    options = {"zcoll": zcoll.Options(compression="none"),
               "zcoll-int8+EF": zcoll.Options(compression="int8"),
               "zcoll-bf16": zcoll.Options(compression="bf16")}[name]
    return dist.new_group(backend="zcoll", pg_options=options)


def bind_to_core(rank: int) -> int:
    """Pins every thread of this process to one core (rank r -> the r-th allowed core); threads
    started later (torch's, zcoll's, gloo's) inherit it. Returns the core."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[rank % len(cores)]
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:  # a thread that just exited
            pass
    return core


def run_rank(rank: int, world: int, store, settings: dict) -> dict:
    """One rank: builds every configuration, runs warmup + steps steps of each in turn; returns
    this rank's step times (seconds) per configuration, its final loss and a parameter checksum."""
    core = bind_to_core(rank) if settings["bind"] else None
    torch.set_num_threads(1)
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=settings["pg_timeout"]))
    sync = dist.group.WORLD  # exact zcoll: the barrier before every timed step

    initial, shape = build_model(settings["model"], settings["params"], settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"] * 1000 + rank + 1)  # each rank its own batch
    x = torch.randn(settings["batch"], *shape, generator=gen)
    y = torch.randint(10, (settings["batch"],), generator=gen)

    runs = {}
    for name in settings["configs"]:  # groups are created in the same order on every rank
        if name == "compute":
            model = copy.deepcopy(initial)
        else:
            group = make_group(name)
            model = DDP(copy.deepcopy(initial), process_group=group, bucket_cap_mb=settings["bucket_mb"])
            if name == "zcoll-int8+EF":
                model.register_comm_hook(zcoll.hooks.ErrorFeedbackState(process_group=group),
                                         zcoll.hooks.compressed_allreduce_hook)
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=settings["lr"]))

    times = {name: [] for name in runs}
    losses = {}
    names = list(runs)
    for step in range(settings["warmup"] + settings["steps"]):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            model, opt = runs[name]
            dist.barrier(group=sync)
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            if step >= settings["warmup"]:
                times[name].append(t1 - t0)
            losses[name] = loss.item()

    out = {"core": core, "times": times, "loss": losses, "checksum": {}}
    with torch.no_grad():
        for name, (model, _) in runs.items():
            flat = torch.cat([p.reshape(-1) for p in model.parameters()]).double()
            out["checksum"][name] = flat.sum().item() + (flat ** 2).sum().item()
    dist.barrier(group=sync)
    dist.destroy_process_group()
    return out


def summarise(per_rank: dict) -> dict:
    """Per configuration: the median (and p25, p75) over steps of the step's max over ranks, in ms;
    the ratio to zcoll's; the time above `compute` and its share; rank 0's last loss; whether every
    rank ended with the same parameters (DDP keeps them equal; `compute` has no sync)."""
    table = {}
    for name in per_rank[0]["times"]:
        steps = np.max(np.array([per_rank[r]["times"][name] for r in sorted(per_rank)]), axis=0) * 1e3
        table[name] = {"ms_per_step": float(np.median(steps)),
                       "p25_ms": float(np.percentile(steps, 25)), "p75_ms": float(np.percentile(steps, 75)),
                       "last_loss": per_rank[0]["loss"][name],
                       "ranks_agree": name == "compute" or all(per_rank[r]["checksum"][name] ==
                                                              per_rank[0]["checksum"][name] for r in per_rank)}
    ref = table.get(REFERENCE, {}).get("ms_per_step", float("nan"))
    base = table.get("compute", {}).get("ms_per_step", float("nan"))
    for row in table.values():
        row["over_zcoll"] = row["ms_per_step"] / ref
        row["above_compute_ms"] = row["ms_per_step"] - base
        row["comm_share"] = row["above_compute_ms"] / row["ms_per_step"]
    return table


def format_table(table: dict) -> str:
    lines = [f"{'config':<14} {'ms/step':>9} {'p25-p75':>15} {'/zcoll':>7} {'+compute ms':>12} {'share':>6}"]
    for name, row in table.items():
        rng = f"{row['p25_ms']:.1f}-{row['p75_ms']:.1f}"
        share = "-" if name == "compute" else f"{100 * row['comm_share']:.0f}%"
        above = "-" if name == "compute" else f"{row['above_compute_ms']:.1f}"
        flag = "" if row["ranks_agree"] else "  (ranks disagree!)"
        lines.append(f"{name:<14} {row['ms_per_step']:>9.1f} {rng:>15} {row['over_zcoll']:>7.2f} "
                     f"{above:>12} {share:>6}{flag}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--model", choices=MODELS, default="mlp")
    ap.add_argument("--params", default="25M", help="about this many float32 parameters (K/M suffixes)")
    ap.add_argument("--batch", type=int, default=8, help="examples per rank and step (transformer: "
                    "sequences of 32 positions)")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per configuration first")
    ap.add_argument("--bucket-mb", type=float, default=25.0, help="DDP's bucket_cap_mb")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--bind", choices=("auto", "core", "none"), default="auto",
                    help="pin rank r to core r (auto: when there are enough cores, as mpirun does)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds for the whole run")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    if not configs or set(configs) - set(CONFIGS):
        ap.error(f"unknown configs {sorted(set(configs) - set(CONFIGS))} (one of {','.join(CONFIGS)})")
    if args.steps < 1 or args.warmup < 0 or args.nproc < 1 or args.batch < 1:
        ap.error("--steps, --nproc and --batch must be positive, --warmup >= 0")
    bind = args.bind == "core" or (args.bind == "auto" and args.nproc <= len(os.sched_getaffinity(0)))
    settings = {"model": args.model, "params": parse_count(args.params), "batch": args.batch,
                "steps": args.steps, "warmup": args.warmup, "bucket_mb": args.bucket_mb, "lr": args.lr,
                "seed": args.seed, "configs": configs, "bind": bind, "pg_timeout": max(120.0, args.timeout)}
    model, _ = build_model(args.model, settings["params"], args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    del model

    load_before = os.getloadavg()
    t0 = time.monotonic()
    per_rank = launch(run_rank, settings, args.nproc, args.timeout)
    wall = time.monotonic() - t0
    load_after = os.getloadavg()
    table = summarise(per_rank)

    cores = [per_rank[r]["core"] for r in sorted(per_rank)]
    print(f"DDP training step, {args.model} with {n_params / 1e6:.2f}M float32 parameters "
          f"({n_params * 4 / 1e6:.0f} MB of gradients), {args.nproc} ranks x {args.batch} examples, "
          f"SGD, DDP buckets {args.bucket_mb:g} MB; median over {args.steps} steps (after {args.warmup}) "
          f"of the max over ranks; {os.cpu_count()} cores, ranks "
          + (f"bound to cores {cores}" if bind else "not bound") + ", 1 torch thread each; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {wall:.0f} s")
    print(format_table(table))
    print("(+compute ms: the step's time above `compute`, the same step without DDP; share: that over the step)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "nproc": args.nproc, "parameters": n_params,
                       "gradient_bytes": n_params * 4, "cpu_count": os.cpu_count(), "cores": cores,
                       "load_average": {"before": load_before, "after": load_after}, "wall_s": wall,
                       "results": table}, f, indent=2)


if __name__ == "__main__":
    main()
