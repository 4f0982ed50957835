"""Registration of "zcoll" as a torch.distributed backend."""
from __future__ import annotations

import torch
import torch.distributed as dist

from . import _C
from .config import Options, harness_settings, host_identity, launcher_master_addr, logs, parse_algo
from .tuning import TuningFileError, load_cost_model


def _key_space(store, rank: int) -> str:
    """A prefix for this group's keys that no earlier group under the same store prefix used.
    torch reuses group names, so store prefixes (a new_group after shrink_group is named like
    the world was): every group made under one prefix has ranks 0..size-1, each counting its
    creations here, so all ranks of one group get the same, new, number."""
    return f"zcoll/{store.add(f'zcoll/created/{rank}', 1)}"


def _topology(store, space: str, rank: int, size: int, tuning: str = "defaults") -> tuple[list[int], list[str], list[str]]:
    """Every rank's host (numbered in order of each host's lowest rank), the hosts' names and
    every rank's `tuning` ("defaults", "file" or "measure"), from each rank's host identity
    (zcoll.config.host_identity) and tuning, published together through the store."""
    store.set(f"{space}/host/{rank}", f"{host_identity()}\n{tuning}")
    entries = [store.get(f"{space}/host/{r}").decode().split("\n") for r in range(size)]
    identities = [e[0] for e in entries]
    tunings = [e[1] if len(e) > 1 else "defaults" for e in entries]
    hosts: dict[str, int] = {}
    host_of = [hosts.setdefault(identity, len(hosts)) for identity in identities]
    return host_of, [identity.split("/")[0] for identity in hosts], tunings


def _group_tuning(tunings: list[str]) -> str:
    """What the group does with its cost model (BackendConfig.tuning), the same on every rank:
    "measure" if every rank asks for it (some but not all is an error: the probe is collective),
    "agree" (rank 0's model everywhere) if some rank read a tuning file, else "defaults". A rank
    whose tuning file could not be read published why: every rank raises it."""
    for t in tunings:
        if t.startswith("error "):
            raise TuningFileError(t[len("error "):])
    measuring = [r for r, t in enumerate(tunings) if t == "measure"]
    if measuring and len(measuring) != len(tunings):
        others = next(r for r, t in enumerate(tunings) if t != "measure")
        raise ValueError(f"zcoll: rank {measuring[0]} has ZCOLL_TUNING=measure but rank {others} does not: every "
                         f"rank of a group must set the same ZCOLL_TUNING (Options.tuning)")
    if measuring:
        return "measure"
    return "agree" if "file" in tunings else "defaults"


def _store_host(store) -> str:
    """The host of the TCPStore behind `store` (torch wraps it in PrefixStores), else MASTER_ADDR
    (file:// and other stores have no host): the tcp transport advertises the local address
    that routes there (docs/multi-host.md)."""
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    if isinstance(store, dist.TCPStore):
        return store.host
    return launcher_master_addr()


def _create_backend(dist_opts, pg_options):
    if pg_options is not None and not isinstance(pg_options, Options):
        raise TypeError(f"zcoll pg_options must be zcoll.Options, got {type(pg_options).__name__}")
    opts = (pg_options or Options()).resolved()
    store, rank, size = dist_opts.store, dist_opts.group_rank, dist_opts.group_size
    space = _key_space(store, rank)
    model, mine = None, "measure" if opts.tuning == "measure" else "defaults"
    if opts.tuning_file:
        try:
            model = load_cost_model(opts.tuning_file, opts.net, rank)
            mine = "measure" if opts.tuning == "measure" else "file"
        except TuningFileError as e:  # told to every rank, which all raise it (none waits for this one)
            mine = "error " + " ".join(str(e).split())
    host_of, host_names, tunings = _topology(store, space, rank, size, mine)
    tuning = _group_tuning(tunings)
    algos = parse_algo(opts.algo)
    if logs(opts.debug, "INFO"):  # before the bootstrap, which may wait for the other ranks
        chunk = f"{opts.chunk_bytes} bytes" if opts.chunk_bytes else "by the tuner"
        net = f" (between hosts: {opts.net})" if opts.transport == "auto" else ""
        file = f", tuning file {opts.tuning_file}" if opts.tuning_file else ""
        _C.log("INFO", f"creating a group of {size}: transport {opts.transport}{net}, algorithms "
               f"{algos or 'by the tuner'}, chunk {chunk}, compression {opts.compression}, cost model "
               f"{opts.tuning}{file}", rank)
    config = _C.BackendConfig()
    config.transport = opts.transport
    config.net = opts.net
    config.ucx_library = opts.ucx_library
    config.chunk_bytes = opts.chunk_bytes
    if model is not None:
        config.cost_model = model
    config.tuning = tuning
    config.allreduce_algo = algos.get("allreduce", "")
    config.reduce_algo = algos.get("reduce", "")
    config.reduce_scatter_algo = algos.get("reduce_scatter", "")
    config.compression = opts.compression
    config.compress_min_bytes = opts.compress_min_bytes
    config.compress_block = opts.compress_block
    config.shm_ring_bytes = opts.shm_ring_bytes
    config.shm_single_copy_bytes = -1 if opts.shm_single_copy_bytes == "auto" else opts.shm_single_copy_bytes
    config.socket_ifname = opts.socket_ifname
    config.socket_family = opts.socket_family
    config.connect_timeout = opts.connect_timeout
    config.heartbeat_interval = opts.heartbeat_interval
    config.heartbeat_timeout = opts.heartbeat_timeout
    config.store_host = _store_host(store)
    config.host_of = host_of
    config.host_names = host_names
    config.log_level = opts.debug
    config.checksum = bool(opts.checksum)
    config.p2p_max_unexpected_bytes = opts.p2p_max_unexpected_bytes
    config.key_space = space
    for name, value in harness_settings(rank).items():
        setattr(config, name, value)
    return _C.ProcessGroupZcoll(store, rank, size, dist_opts.timeout, config)


def shrink_group(ranks_to_exclude, group=None, shrink_flags: int = 0):
    """torch.distributed.distributed_c10d.shrink_group for zcoll groups: the ranks not excluded
    form a new group (the default group when `group` is None) and go on (docs/failures.md).

    torch 2.13 registers a shrunk group's CPU backend as gloo whatever it is, and DDP then treats
    zcoll's backend as gloo's and crashes; this registers it as what it is. Returns the group."""
    c10d = dist.distributed_c10d
    new = c10d.shrink_group(list(ranks_to_exclude), group=group, shrink_flags=shrink_flags)
    pg = new if new is not None else dist.group.WORLD
    cpu, custom = torch.device("cpu"), dist.ProcessGroup.BackendType.CUSTOM
    backend = pg._get_backend(cpu)
    if isinstance(backend, _C.ProcessGroupZcoll) and pg._get_backend_name() != "zcoll":
        pg._register_backend(cpu, custom, backend)
        pg._set_default_backend(custom)
    return pg


def shared_memory(group=None) -> dict:
    """This rank's shared memory in a zcoll group (the default group when `group` is None):
    ``{"collectives": lane, "p2p": lane, "bytes": total}``, each lane ``{"ring_bytes",
    "rings_allocated", "bytes"}``: the ring size the group took, how many peers' rings into this
    rank exist so far (a pair's ring is allocated at its first message), and the bytes this
    rank's segment holds in /dev/shm (docs/architecture.md, shared memory); and
    ``"single_copy_peers", "single_copy_messages", "single_copy_bytes"``: the peers whose memory
    this rank reads large messages from directly, and the messages and bytes it has received
    that way (docs/architecture.md, single copy). Zeros where the group's ranks share no host."""
    backend = (group or dist.group.WORLD)._get_backend(torch.device("cpu"))
    if not isinstance(backend, _C.ProcessGroupZcoll):
        raise TypeError(f"shared_memory needs a zcoll process group, got {type(backend).__name__}")
    return backend.shared_memory


def register() -> None:
    if "zcoll" not in dist.Backend.backend_list:
        # cuda too: CUDA tensors reach zcoll's device path (or, in a build without CUDA, a
        # clear error instead of torch's "no backend for device").
        from .group import create_group  # (group.py builds on _create_backend)

        dist.Backend.register_backend("zcoll", create_group, extended_api=True, devices=["cpu", "cuda"])
