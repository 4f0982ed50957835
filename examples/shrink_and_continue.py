"""Shrink and continue: DDP training that survives the death of a rank.

Four ranks train a tiny MLP (regression on synthetic data from a fixed seed) with DDP and SGD
over zcoll. At --kill-step, rank --kill-rank crashes (os._exit(1)). The survivors' next
collective (DDP's gradient all-reduce in backward) raises a DistBackendError (DistNetworkError
over tcp) naming the dead rank; each survivor then calls zcoll.shrink_group([dead]) (torch's
shrink_group, with the shrunk group's backend registered as what it is, which DDP needs), which
makes the default group the survivors (renumbered in their old order), re-wraps the same module in a fresh
DDP (whose constructor broadcasts every parameter from the new rank 0), re-shards the data for
the smaller world, redoes the failed step and finishes. The loss curve carries on where it was.

    python examples/shrink_and_continue.py --nproc 4 --kill-rank 3 --kill-step 15

By default the script starts its own --nproc ranks as subprocesses and hosts their TCPStore
itself, so the store outlives any rank (even rank 0). torchrun works for runs without a kill
(--kill-rank -1) but not for this demo: when any worker exits non-zero, torchrun's agent stops
all the others, and it has no option to leave them running.

New rank 0 prints one line per step, then a JSON line with the losses, the world size at each
step, the final loss and whether every survivor ends with bit-identical parameters.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import zcoll  # registers the "zcoll" backend

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--nproc", type=int, default=4, help="ranks to start (self-spawning mode)")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--kill-rank", type=int, default=3, help="rank that crashes; -1: none")
p.add_argument("--kill-step", type=int, default=15)
p.add_argument("--batch", type=int, default=32, help="samples per rank per step")
p.add_argument("--lr", type=float, default=0.03)
p.add_argument("--rank", type=int, help=argparse.SUPPRESS)  # set for the ranks this script starts
p.add_argument("--port", type=int, help=argparse.SUPPRESS)
args = p.parse_args()


def make_data(n=2048, dim=16):
    """Every rank makes the same data set: y = a random 'teacher' function of x, plus noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 32, generator=g) / 4, torch.randn(32, 1, generator=g) / 4
    return x, torch.tanh(x @ w1) @ w2 + 0.01 * torch.randn(n, 1, generator=g)


def batch_for(step, x, y):
    """This rank's share of the step's global batch (batch * world samples). It depends only on
    the step, the rank and the world size, so after a shrink the data re-shards by itself."""
    world, rank = dist.get_world_size(), dist.get_rank()
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 + step))[: args.batch * world]
    mine = idx[rank * args.batch:(rank + 1) * args.batch]
    return x[mine], y[mine]


def dead_rank(err):
    """zcoll names the dead rank in the message: "... rank N (host) died ..."."""
    m = re.search(r"rank (\d+) \([^)]*\) died", str(err))
    if m is None:
        raise err  # some other failure: nothing to shrink around
    return int(m.group(1))


def train():
    torch.manual_seed(0)  # same initial weights everywhere (DDP would broadcast them anyway)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)  # the module's own parameters
    x, y = make_data()
    losses, worlds, step = [], [], 0
    doomed = dist.get_rank() == args.kill_rank  # decided now: ranks are renumbered by a shrink
    while step < args.steps:
        if doomed and step == args.kill_step:
            os._exit(1)  # simulate a crash: no cleanup, no goodbye
        xb, yb = batch_for(step, x, y)
        try:
            opt.zero_grad()
            torch.nn.functional.mse_loss(ddp(xb), yb).backward()  # DDP all-reduces grads here
        except dist.DistError as e:  # DistBackendError, or DistNetworkError over tcp
            dead = dead_rank(e)
        else:
            opt.step()
            with torch.no_grad():  # loss on the whole data set: every rank has it, no traffic
                losses.append(torch.nn.functional.mse_loss(model(x), y).item())
            worlds.append(dist.get_world_size())
            if dist.get_rank() == 0:
                print(f"step {step:3d}  world {worlds[-1]}  loss {losses[-1]:.5f}", flush=True)
            step += 1
            continue
        # Recovery (outside the except block, so a failure here is not reported as a chained one).
        # opt.step() did not run, so the parameters are still those of the last good step.
        if dist.get_rank() == 0:
            print(f"step {step:3d}  rank {dead} died: shrinking the group", flush=True)
        zcoll.shrink_group([dead])  # every survivor calls it; new ranks 0..n-2
        ddp = DDP(model)  # same module, new default group: broadcasts params from new rank 0
        # ...and redo `step` with the smaller world (batch_for re-shards)
    # Every survivor should hold bit-identical parameters: compare a hash of their bytes.
    digest = hashlib.sha256(b"".join(q.detach().numpy().tobytes() for q in model.parameters())).hexdigest()
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if dist.get_rank() == 0:
        print(json.dumps({"losses": losses, "world_sizes": worlds, "final_loss": losses[-1],
                          "params_equal_across_ranks": len(set(digests)) == 1}), flush=True)
    dist.destroy_process_group()


def spawn():
    """Parent: host the store, start --nproc copies of this script, wait for them all."""
    store = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--rank", str(r), "--port", str(store.port)])
             for r in range(args.nproc)]
    try:
        codes = [q.wait() for q in procs]
    finally:
        for q in procs:
            q.kill()  # only matters if we were interrupted
    # The crashed rank is expected to exit 1; every other rank must succeed.
    ok = all(c == (1 if r == args.kill_rank else 0) for r, c in enumerate(codes))
    print(f"exit codes per rank: {codes}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    torch.set_num_threads(1)  # several ranks share this machine's cores
    if "RANK" in os.environ:  # started by torchrun: its env:// variables say everything
        dist.init_process_group("zcoll", timeout=timedelta(seconds=60))
        train()
    elif args.rank is not None:  # one of the ranks spawn() started
        store = dist.TCPStore("127.0.0.1", args.port, None, False, timedelta(seconds=60))
        dist.init_process_group("zcoll", store=store, rank=args.rank, world_size=args.nproc,
                                timeout=timedelta(seconds=60))
        train()
    else:
        spawn()
