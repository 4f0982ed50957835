"""Error-feedback accuracy study: DDP training of a small MLP on scikit-learn's digits, exact vs
compressed gradient all-reduce, side by side in one run.

    python bench/digits_ddp.py [--nproc 4] [--steps 400] [--block 4096] [--json FILE]

Every configuration trains its own copy of the same initial model on the same batches, in the
same processes, one step of each in turn (so all see the same machine state):

  exact          zcoll, no compression (plain DDP)
  int8+EF        zcoll int8, the tuner's schedule, zcoll.hooks error feedback
  int4-ring+EF   zcoll int4, ring forced, error feedback
  int4-ring      zcoll int4, ring forced, the same compressed AVG all-reduce without a residual
  gloo           gloo, exact (a reference point for the time per step)

Prints per configuration the test accuracy, the final loss on the whole training set, the drift
(how far the final parameters are from the exact run's, relative: what the compression error
accumulated to) and the median time of a training step (forward, backward with its all-reduce,
optimizer) on rank 0. Fixed split and seeds, and zcoll's rounding stream is fixed by each
group's sequence number, so a run gives the same accuracies, losses and drifts every time;
tests/test_error_feedback.py asserts them. Findings: docs/compression.md.
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
from torch.nn.parallel import DistributedDataParallel as DDP

import zcoll  # registers the "zcoll" backend
import zcoll.hooks
from local_ranks import launch

CONFIGS = ("exact", "int8+EF", "int4-ring+EF", "int4-ring", "gloo")


def default_settings(**overrides) -> dict:
    """The study's setup. The int4 block of 4096 elements puts the output layer's gradient and
    most of the 64x64 hidden layer's under one scale (absmax / 7), set by the output layer's
    larger entries: most hidden-layer entries round to 0 or one step, unbiased but noisy."""
    settings = dict(steps=400, batch=16, hidden=64, lr=0.1, block=4096, seed=0,
                    configs=list(CONFIGS))
    unknown = set(overrides) - set(settings)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    settings.update(overrides)
    return settings


def load_data(seed: int):
    """Digits (1797 8x8 images), a fixed stratified 75/25 split, features standardised on the
    training part."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25,
                                                        random_state=seed, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3  # some border pixels are always 0
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


# (No postponed annotations in this module: DDP checks that a hook's return annotation is
# exactly torch.futures.Future[torch.Tensor].)
def averaged_allreduce_hook(group, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook without error feedback: the bucket averaged by a plain all-reduce, which on a
    compressed zcoll group is the same compressed AVG all-reduce the EF hook runs, minus the
    residual."""
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.AVG, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def make_group(name: str, block: int):
    if name == "gloo":
        return dist.new_group(backend="gloo")
    options = {
        "exact": zcoll.Options(compression="none"),
        # int8 as one would deploy it: the default block and the tuner's schedule
        "int8+EF": zcoll.Options(compression="int8", compress_min_bytes=0),
        # the tuner takes two-shot for int4; the study is about the ring, which requantises at
        # every hop
        "int4-ring+EF": zcoll.Options(compression="int4", compress_min_bytes=0, compress_block=block,
                                      algo="allreduce:ring"),
        "int4-ring": zcoll.Options(compression="int4", compress_min_bytes=0, compress_block=block,
                                   algo="allreduce:ring"),
    }[name]
    return dist.new_group(backend="zcoll", pg_options=options)


def train_ranks(rank: int, world: int, store, settings: dict) -> dict:
    """One rank: trains every configuration, one step of each in turn; returns this rank's figures
    per configuration (summarise takes rank 0's, and compares the parameter checksums)."""
    torch.set_num_threads(1)  # 4 ranks share 2 cores; one thread each also keeps results bit-stable
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=120))
    sync = dist.new_group(backend="zcoll")  # exact: barriers between timed steps

    x_train, y_train, x_test, y_test = load_data(settings["seed"])
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_test, y_test = torch.from_numpy(x_test), torch.from_numpy(y_test)
    shard = torch.arange(rank, len(x_train), world)  # each rank its own part of the training set
    gen = torch.Generator().manual_seed(settings["seed"] * 1000 + rank)
    batches = shard[torch.randint(len(shard), (settings["steps"], settings["batch"]), generator=gen)]

    torch.manual_seed(settings["seed"])
    initial = torch.nn.Sequential(torch.nn.Linear(64, settings["hidden"]), torch.nn.ReLU(),
                                  torch.nn.Linear(settings["hidden"], 10))
    runs = {}
    for name in settings["configs"]:  # every group is created in the same order on every rank
        group = make_group(name, settings["block"])
        ddp = DDP(copy.deepcopy(initial), process_group=group)
        if name.endswith("+EF"):
            ddp.register_comm_hook(zcoll.hooks.ErrorFeedbackState(process_group=group),
                                   zcoll.hooks.compressed_allreduce_hook)
        elif name == "int4-ring":
            ddp.register_comm_hook(group, averaged_allreduce_hook)
        runs[name] = (ddp, torch.optim.SGD(ddp.parameters(), lr=settings["lr"]), [])

    for step in range(settings["steps"]):
        idx = batches[step]
        for name, (ddp, opt, times) in runs.items():
            dist.barrier(group=sync)
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x_train[idx]), y_train[idx]).backward()
            opt.step()
            times.append(time.perf_counter() - t0)

    out = {}
    with torch.no_grad():
        flat = {name: torch.cat([p.reshape(-1) for p in ddp.module.parameters()]).double()
                for name, (ddp, _, _) in runs.items()}
        for name, (ddp, _, times) in runs.items():
            model = ddp.module
            out[name] = {
                "accuracy": 100.0 * (model(x_test).argmax(dim=1) == y_test).float().mean().item(),
                "train_loss": torch.nn.functional.cross_entropy(model(x_train), y_train).item(),
                "ms_per_step": 1e3 * float(np.median(times[len(times) // 10:])),  # after warm-up
                # how far the parameters ended from the exact run's (same start, same batches)
                "drift": ((flat[name] - flat["exact"]).norm() / flat["exact"].norm()).item()
                         if "exact" in flat else float("nan"),
                "checksum": flat[name].sum().item() + (flat[name] ** 2).sum().item(),
            }
    dist.barrier(group=sync)
    dist.destroy_process_group()
    return out


def summarise(per_rank: dict) -> dict:
    """Rank 0's figures per configuration, plus whether every rank ended with the same parameters
    (a compressed all-reduce gives every rank the same decoded result)."""
    table = {}
    for name, row in per_rank[0].items():
        row = dict(row)
        row["ranks_agree"] = all(per_rank[r][name]["checksum"] == row["checksum"] for r in per_rank)
        del row["checksum"]
        table[name] = row
    return table


def format_table(table: dict) -> str:
    lines = [f"{'config':<14} {'test acc %':>10} {'train loss':>10} {'drift':>8} {'ms/step':>8}"]
    for name, row in table.items():
        agree = "" if row["ranks_agree"] else "  (ranks disagree!)"
        lines.append(f"{name:<14} {row['accuracy']:>10.2f} {row['train_loss']:>10.4f} "
                     f"{row['drift']:>8.2e} {row['ms_per_step']:>8.2f}{agree}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = default_settings()
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--steps", type=int, default=defaults["steps"])
    ap.add_argument("--batch", type=int, default=defaults["batch"], help="examples per rank and step")
    ap.add_argument("--hidden", type=int, default=defaults["hidden"])
    ap.add_argument("--lr", type=float, default=defaults["lr"])
    ap.add_argument("--block", type=int, default=defaults["block"],
                    help="int4 codec block (elements); int8 keeps the default")
    ap.add_argument("--seed", type=int, default=defaults["seed"])
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    configs = args.configs.split(",")
    if set(configs) - set(CONFIGS):
        ap.error(f"unknown configs {sorted(set(configs) - set(CONFIGS))}")
    settings = default_settings(steps=args.steps, batch=args.batch, hidden=args.hidden, lr=args.lr,
                                block=args.block, seed=args.seed, configs=configs)
    table = summarise(launch(train_ranks, settings, args.nproc, args.timeout))
    print(f"digits MLP 64-{settings['hidden']}-10, {args.nproc} ranks x {settings['batch']} examples, "
          f"{settings['steps']} SGD steps, lr {settings['lr']}, int4 block {settings['block']} "
          f"({os.cpu_count()} cores)")
    print(format_table(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "nproc": args.nproc, "results": table}, f, indent=2)


if __name__ == "__main__":
    main()
