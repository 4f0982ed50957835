"""zcoll.sync: how often and with whom workers synchronise (docs/sync.md), on zcoll's (or any
torch.distributed group's) collectives and point-to-point.

- ``PeriodicAverager``: local SGD, parameters averaged every ``period`` steps (compressed, with
  error feedback, if asked);
- ``DiLoCo``: inner steps locally, an outer Nesterov step on the averaged pseudo-gradient;
- ``GossipAverager``: decentralised push-sum averaging with one or two peers a step;
- ``AsyncParameterServer``: sharded parameter servers, versioned pushes, DC-ASGD's delay
  compensation, stale pushes refused.

Each has ``state_dict``/``load_state_dict`` and counts the bytes its rank sends
(``bytes_sent``)."""
from __future__ import annotations

import importlib

_MODULES = {"PeriodicAverager": "periodic", "DiLoCo": "diloco", "GossipAverager": "gossip",
            "AsyncParameterServer": "parameter_server", "StalePushError": "parameter_server"}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    # Each strategy loads on first use: `import zcoll.sync` costs nothing until then.
    if name in _MODULES:
        return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
