"""One rank of tests/test_netns.py, run inside its own network namespace: joins a zcoll group
forced to tcp through a store in the root namespace, and checks an all-reduce and an
all-gather against the reference."""
import argparse
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

import zcoll
from zcoll import reference as R

ap = argparse.ArgumentParser()
ap.add_argument("--store", required=True)
ap.add_argument("--rank", type=int, required=True)
ap.add_argument("--world", type=int, required=True)
args = ap.parse_args()
host, port = args.store.rsplit(":", 1)
store = dist.TCPStore(host, int(port), None, False, timedelta(seconds=60))
dist.init_process_group("zcoll", store=store, rank=args.rank, world_size=args.world,
                        pg_options=zcoll.Options(transport="tcp"))
backend = dist.group.WORLD._get_backend(torch.device("cpu"))
inputs = [np.random.default_rng(r).standard_normal(100_000).astype(np.float32) for r in range(args.world)]
x = torch.from_numpy(inputs[args.rank].copy())
dist.all_reduce(x)
most = max(list(backend.host_of).count(h) for h in backend.host_of)  # ranks on the busiest host
algo, _ = zcoll._C.tune("allreduce", x.nbytes, args.world, backend.transport, most)  # what the backend ran
ok = np.array_equal(x.numpy(), R.all_reduce(inputs, "sum", algo)[0])
parts = [torch.empty(3, dtype=torch.int64) for _ in range(args.world)]
dist.all_gather(parts, torch.full((3,), args.rank))
ok = ok and all((p.numpy() == r).all() for r, p in enumerate(parts))
print(f"rank {args.rank} transport={backend.transport} {'ok' if ok else 'WRONG'}", flush=True)
dist.destroy_process_group()
sys.exit(0 if ok else 1)
