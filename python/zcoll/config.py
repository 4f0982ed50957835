"""zcoll.Options: per-group configuration, from pg_options over ZCOLL_* environment defaults.

The environment is read here and nowhere else (the C++ below the backend never calls getenv).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields

TRANSPORTS = ("auto", "shm", "tcp")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _env_choice(name: str, default: str, choices) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


@dataclass
class Options:
    """Configuration of one zcoll process group (pass as ``pg_options``); None = env/default."""

    transport: str | None = field(default=None, metadata={"env": "ZCOLL_TRANSPORT",
        "help": "auto (shm when all ranks share a host, else tcp), shm or tcp"})
    chunk_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_CHUNK_BYTES",
        "help": "pipelining unit: bytes per transport message inside a segment"})
    shm_ring_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_SHM_RING_BYTES",
        "help": "bytes of each directed pair's shared-memory ring"})
    socket_ifname: str | None = field(default=None, metadata={"env": "ZCOLL_SOCKET_IFNAME",
        "help": "tcp: advertise this interface's address"})
    debug: bool | None = field(default=None, metadata={"env": "ZCOLL_DEBUG",
        "help": "INFO: log transport and algorithm choices"})

    def resolved(self) -> "Options":
        """A copy with every None replaced by its ZCOLL_* variable or default; validated."""
        out = Options(**{f.name: getattr(self, f.name) for f in fields(self)})
        if out.transport is None:
            out.transport = _env_choice("ZCOLL_TRANSPORT", "auto", TRANSPORTS)
        elif out.transport not in TRANSPORTS:
            raise ValueError(f"transport={out.transport!r}: expected one of {', '.join(TRANSPORTS)}")
        if out.chunk_bytes is None:
            out.chunk_bytes = _env_int("ZCOLL_CHUNK_BYTES", 1 << 19)
        if out.shm_ring_bytes is None:
            out.shm_ring_bytes = _env_int("ZCOLL_SHM_RING_BYTES", 4 << 20)
        for name in ("chunk_bytes", "shm_ring_bytes"):
            if getattr(out, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(out, name)}")
        if out.socket_ifname is None:
            out.socket_ifname = os.environ.get("ZCOLL_SOCKET_IFNAME", "")
        if out.debug is None:
            out.debug = os.environ.get("ZCOLL_DEBUG", "").upper() in ("INFO", "1", "TRUE")
        return out


def host_identity() -> str:
    """Ranks with the same identity share memory: hostname plus the kernel's boot id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"
