"""The ProcessGroup a zcoll group lives in, named "zcoll".

torch puts a plugin's backend into a ProcessGroup of its own making, which names itself after the
backend's type, CUSTOM: "custom" (ProcessGroup::getBackendName in c10d/ProcessGroup.hpp). DDP's
logging data (`backend_name`), pg.name() and torch's error messages take the name from there, not
from the backend. A creator may instead return a ProcessGroup, which torch then uses as the group
(distributed_c10d._new_process_group_helper), so zcoll's creator returns a zcoll._C.ZcollGroup:
torch's ProcessGroup in all but its name, holding the zcoll backend for every device, as torch's
would. What torch would have done to that group and now cannot, this does: the
TORCH_DISTRIBUTED_DEBUG=DETAIL wrapper and the bound device.

Only where zcoll is the group's one backend: beside another ("cpu:zcoll,cuda:nccl") torch must
make the group itself, to create the other backend, and the group is named "custom" as before.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from . import _C
from .backend import _create_backend


def _helper_locals() -> dict:
    """The variables of torch's _new_process_group_helper that is calling the creator (the
    group's backend configuration, bound device and store are not handed to creators); empty if
    some other caller is."""
    code = dist.distributed_c10d._new_process_group_helper.__code__
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    return {} if frame is None else dict(frame.f_locals)


def create_group(dist_opts, pg_options):
    """zcoll's creator (registered by zcoll.backend.register): the group, named "zcoll", or, beside
    other backends, the bare backend."""
    backend = _create_backend(dist_opts, pg_options)
    helper = _helper_locals()
    config = helper.get("backend_config")
    devices = list(config.get_device_backend_map().items()) if config is not None else []
    if not devices or any(name != "zcoll" for _, name in devices):
        return backend
    c10d = dist.distributed_c10d
    rank, size = dist_opts.group_rank, dist_opts.group_size
    if c10d.get_debug_level() == c10d.DebugLevel.DETAIL and c10d._GLOO_AVAILABLE:
        # As torch wraps plugin backends: collectives checked against each other first.
        backend = c10d._create_process_group_wrapper(
            wrapped_pg=backend, store_prefix=dist_opts.group_id, store=dist_opts.store,
            rank=rank, world_size=size, timeout=dist_opts.timeout)
    group = _C.ZcollGroup(helper.get("prefix_store", dist_opts.store), rank, size)
    custom = dist.ProcessGroup.BackendType.CUSTOM
    for device, _ in devices:
        group._register_backend(torch.device(device), custom, backend)
    group._set_default_backend(custom)
    if helper.get("device_id"):
        group.bound_device_id = helper["device_id"]
    return group
