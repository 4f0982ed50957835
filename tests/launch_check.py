"""A rank of a launcher test (run by torchrun or mpirun from tests/test_launch.py): joins the
default group over zcoll, all-reduces rank-dependent data and checks it against the reference."""
import sys

import numpy as np
import torch
import torch.distributed as dist

import zcoll
from zcoll import reference as R
from zcoll.launch import mpi_env

if sys.argv[1] == "mpi":
    mpi_env()
dist.init_process_group("zcoll")
rank, world = dist.get_rank(), dist.get_world_size()
inputs = [np.random.default_rng(r).standard_normal(1000).astype(np.float32) for r in range(world)]
x = torch.from_numpy(inputs[rank].copy())
dist.all_reduce(x)
backend = dist.group.WORLD._get_backend(torch.device("cpu"))
most = max(list(backend.host_of).count(h) for h in backend.host_of)  # ranks on the busiest host
algo, _ = zcoll._C.tune("allreduce", x.nbytes, world, backend.transport, most)  # what the backend ran
assert np.array_equal(x.numpy(), R.all_reduce(inputs, "sum", algo)[0]), "all_reduce differs from the reference"
print(f"rank {rank}/{world} ok via {sys.argv[1]} on zcoll {zcoll.__version__}", flush=True)
dist.destroy_process_group()
