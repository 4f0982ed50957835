"""Registration of "zcoll" as a torch.distributed backend."""
from __future__ import annotations

import os
import sys

import torch.distributed as dist

from . import _C
from .config import Options, host_identity, parse_algo


def _pick_transport(store, rank: int, size: int, requested: str) -> str:
    """auto: shm when every rank reports the same host identity, else tcp."""
    if requested != "auto":
        return requested
    store.set(f"zcoll/host/{rank}", host_identity())
    hosts = {store.get(f"zcoll/host/{r}").decode() for r in range(size)}
    return "shm" if len(hosts) == 1 else "tcp"


def _create_backend(dist_opts, pg_options):
    if pg_options is not None and not isinstance(pg_options, Options):
        raise TypeError(f"zcoll pg_options must be zcoll.Options, got {type(pg_options).__name__}")
    opts = (pg_options or Options()).resolved()
    store, rank, size = dist_opts.store, dist_opts.group_rank, dist_opts.group_size
    transport = _pick_transport(store, rank, size, opts.transport)
    algos = parse_algo(opts.algo)
    if opts.debug and rank == 0:
        print(f"zcoll INFO: transport {transport} (requested {opts.transport}), "
              f"algorithms {algos or 'by the tuner'}, "
              f"chunk {opts.chunk_bytes or 'by the tuner'} bytes, compression {opts.compression}, "
              f"group of {size}", file=sys.stderr, flush=True)
    return _C.ProcessGroupZcoll(
        store, rank, size, dist_opts.timeout, transport, opts.chunk_bytes, opts.shm_ring_bytes,
        opts.socket_ifname, os.environ.get("MASTER_ADDR", ""), opts.debug,
        algos.get("allreduce", ""), algos.get("reduce", ""), algos.get("reduce_scatter", ""),
        opts.compression, opts.compress_min_bytes, opts.compress_block,
        # Test-only: CPU tensors take the CUDA tensors' path (host staging, codecs on an
        # emulated device), so machines without a GPU test it (docs/architecture.md).
        os.environ.get("ZCOLL_TEST_DEVICE_PATH", "") == "1")


def register() -> None:
    if "zcoll" not in dist.Backend.backend_list:
        # cuda too: CUDA tensors reach zcoll's device path (or, in a build without CUDA, a
        # clear error instead of torch's "no backend for device").
        dist.Backend.register_backend("zcoll", _create_backend, extended_api=True, devices=["cpu", "cuda"])
