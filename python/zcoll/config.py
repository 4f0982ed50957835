"""zcoll.Options: per-group configuration, from pg_options over ZCOLL_* environment defaults.

The environment is read here and nowhere else (the C++ below the backend never calls getenv).
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass, field, fields

TRANSPORTS = ("auto", "shm", "tcp", "ucx")
NETS = ("tcp", "ucx")  # what carries the ranks on other hosts under transport "auto"
SOCKET_FAMILIES = {"": 0, "af_inet": socket.AF_INET, "af_inet6": socket.AF_INET6}
COMPRESSIONS = ("none", "fp16", "bf16", "int8", "int4")
# ZCOLL_DEBUG's levels, each including the ones before it (csrc/util/log.h).
LOG_LEVELS = ("WARN", "INFO", "TRACE")
# ZCOLL_TUNING: the tuner's cost model as compiled in (or from ZCOLL_TUNING_FILE), or measured
# when each group is created (docs/architecture.md, "Algorithms and the tuner").
TUNINGS = ("defaults", "measure")
MAX_SHM_RING_BYTES = 1 << 30  # per directed pair (csrc/transport/transport.h, kMaxShmRingBytes)
# shm messages this large or larger are read from the sender's memory (transport.h,
# kDefaultShmSingleCopyBytes)
DEFAULT_SHM_SINGLE_COPY_BYTES = 16 << 10

# The algorithms of each collective that has a choice (docs/arithmetic.md §4).
ALGORITHMS = {
    "allreduce": ("ring", "tree", "oneshot", "twoshot", "hierarchical"),
    "reduce": ("tree", "oneshot", "hierarchical"),
    "reduce_scatter": ("ring", "twoshot", "hierarchical"),
}


def parse_algo(spec: str, source: str = "algo") -> dict[str, str]:
    """``"ring"`` (every collective that has it) or ``"allreduce:tree,reduce:oneshot"`` ->
    {collective: algorithm}; collectives left out use the tuner. Raises ValueError on unknowns."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip().lower() for part in spec.split(","))):
        coll, sep, algo = item.rpartition(":")
        if not sep:  # a bare name: every collective that has this algorithm
            targets = [c for c, algos in ALGORITHMS.items() if item in algos]
            if not targets:
                raise ValueError(f"{source}={spec!r}: unknown algorithm {item!r} "
                                 f"(ring, tree, oneshot, twoshot, hierarchical)")
            out.update({c: item for c in targets})
            continue
        if coll not in ALGORITHMS:
            raise ValueError(f"{source}={spec!r}: unknown collective {coll!r} "
                             f"(expected one of {', '.join(ALGORITHMS)})")
        if algo not in ALGORITHMS[coll]:
            raise ValueError(f"{source}={spec!r}: {coll} has no algorithm {algo!r} "
                             f"(expected one of {', '.join(ALGORITHMS[coll])})")
        out[coll] = algo
    return out


def _env_int(name: str, default: int, allow_zero: bool = False) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None


def parse_log_level(value, source: str = "debug") -> str:
    """WARN, INFO or TRACE (any case; WARNING for WARN) -> the level's name. Flag values also
    work (ZCOLL_DEBUG=1): True/1/"true" mean INFO and False/0/"false"/"" mean WARN. Raises
    ValueError naming `source` otherwise."""
    if isinstance(value, bool):
        return "INFO" if value else "WARN"
    name = str(value).strip().upper()
    name = {"": "WARN", "WARNING": "WARN", "0": "WARN", "FALSE": "WARN", "1": "INFO", "TRUE": "INFO"}.get(name, name)
    if name not in LOG_LEVELS:
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(LOG_LEVELS)}")
    return name


def logs(threshold: str, level: str) -> bool:
    """Whether a message at `level` is logged by a group whose level is `threshold`."""
    return LOG_LEVELS.index(level) <= LOG_LEVELS.index(threshold)


def harness_settings(rank: int) -> dict:
    """Test-only settings of a rank's BackendConfig, from the environment (tests/):
    ZCOLL_TEST_DEVICE_PATH=1: CPU tensors take the CUDA tensors' path (host staging, codecs on an
    emulated device), so machines without a GPU test it (docs/architecture.md);
    ZCOLL_TEST_FAULT: a fault this rank injects while the group forms (tests/test_failures.py);
    ZCOLL_TEST_FLIP_BIT="<rank>:<n>": that rank corrupts the n-th message it receives (from 0),
    as a faulty link would (-1: none)."""
    flip = os.environ.get("ZCOLL_TEST_FLIP_BIT", "")
    flip_at = -1
    if flip:
        who, _, n = flip.partition(":")
        flip_at = int(n) if int(who) == rank else -1
    return {"stage_cpu": os.environ.get("ZCOLL_TEST_DEVICE_PATH", "") == "1",
            "test_fault": os.environ.get("ZCOLL_TEST_FAULT", ""),
            "test_flip_bit_at": flip_at}


def _env_choice(name: str, default: str, choices) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


@dataclass
class Options:
    """Configuration of one zcoll process group (pass as ``pg_options``); None = env/default."""

    transport: str | None = field(default=None, metadata={"env": "ZCOLL_TRANSPORT",
        "help": "auto (per peer: shm to ranks on the same host, the network transport to other hosts), shm, "
                "tcp or ucx (for all peers)"})
    net: str | None = field(default=None, metadata={"env": "ZCOLL_NET",
        "help": "the network transport between hosts: tcp (zcoll's own sockets) or ucx (UCX: verbs, tcp, ...; "
                "docs/ucx.md)"})
    ucx_library: str | None = field(default=None, metadata={"env": "ZCOLL_UCX_LIB",
        "help": "ucx: the libucp.so (or its directory) to load, e.g. a system UCX built with verbs "
                "(default: the libucx wheel's, else the loader's search path)"})
    algo: str | None = field(default=None, metadata={"env": "ZCOLL_ALGO",
        "help": "force algorithms: 'ring' or 'allreduce:tree,reduce:oneshot,reduce_scatter:twoshot' "
                "(unnamed collectives: the tuner)"})
    chunk_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_CHUNK_BYTES",
        "help": "pipelining unit: bytes per transport message inside a segment (0: the tuner's)"})
    tuning: str | None = field(default=None, metadata={"env": "ZCOLL_TUNING",
        "help": "the tuner's cost model: defaults (compiled in, or ZCOLL_TUNING_FILE's) or measure (each group "
                "measures latency and bandwidth of its links when it is created, a few ms; every rank must agree)"})
    tuning_file: str | None = field(default=None, metadata={"env": "ZCOLL_TUNING_FILE",
        "help": "a JSON file of cost-model parameters (python -m zcoll.tune writes one); with several ranks, "
                "rank 0's file is the group's"})
    compression: str | None = field(default=None, metadata={"env": "ZCOLL_COMPRESS",
        "help": "none, fp16, bf16, int8 or int4: compress floating SUM/AVG all-reduces (docs/compression.md)"})
    compress_min_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_COMPRESS_MIN_BYTES",
        "help": "tensors smaller than this stay exact"})
    compress_block: int | None = field(default=None, metadata={"env": "ZCOLL_COMPRESS_BLOCK",
        "help": "int8/int4 block size: a multiple of 16 in [16, 65536]"})
    shm_ring_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_SHM_RING_BYTES",
        "help": "bytes of each directed pair's shared-memory ring; 0 (the default): the group sizes them, "
                "at most 4 MiB, smaller for large groups or a small /dev/shm"})
    shm_single_copy_bytes: int | str | None = field(default=None, metadata={"env": "ZCOLL_SHM_SINGLE_COPY_BYTES",
        "help": "shm messages of at least this many bytes are read by the receiver straight from the "
                "sender's buffer (process_vm_readv) instead of through a ring; 0: never; 'auto' (the "
                f"default): {DEFAULT_SHM_SINGLE_COPY_BYTES} where the host's ranks have a core each, else never"})
    socket_ifname: str | None = field(default=None, metadata={"env": "ZCOLL_SOCKET_IFNAME",
        "help": "tcp: advertise an address of these interfaces (NCCL_SOCKET_IFNAME's syntax: 'eth0', "
                "'eth,ib' prefixes, '=eth0' exact, '^docker,lo' excluded)"})
    socket_family: int | None = field(default=None, metadata={"env": "ZCOLL_SOCKET_FAMILY",
        "help": "tcp: AF_INET or AF_INET6 addresses first (default: the store host's family, else IPv4)"})
    connect_timeout: float | None = field(default=None, metadata={"env": "ZCOLL_CONNECT_TIMEOUT",
        "help": "tcp: seconds a peer's address may leave connections unanswered before that is an error "
                "naming it (a refused or unroutable address fails within 2 s)"})
    heartbeat_interval: float | None = field(default=None, metadata={"env": "ZCOLL_HEARTBEAT_INTERVAL",
        "help": "seconds between the liveness heartbeats each rank sends every peer (docs/failures.md)"})
    heartbeat_timeout: float | None = field(default=None, metadata={"env": "ZCOLL_HEARTBEAT_TIMEOUT",
        "help": "seconds of silence after which a peer is declared dead (a vanished host, a cut link, a "
                "stopped process); a process that exits is seen at once, whatever this is"})
    p2p_max_unexpected_bytes: int | None = field(default=None, metadata={"env": "ZCOLL_P2P_MAX_UNEXPECTED_BYTES",
        "help": "bytes of point-to-point messages a rank holds before their receive is posted; beyond "
                "it, point-to-point fails with an error that says so"})
    checksum: bool | None = field(default=None, metadata={"env": "ZCOLL_CHECKSUM",
        "help": "1: a CRC32C of every message travels with it and is verified on receipt; a corrupted "
                "message raises on every rank, naming the link (docs/failures.md). Every rank must agree"})
    debug: str | None = field(default=None, metadata={"env": "ZCOLL_DEBUG",
        "help": "log level: WARN (default: warnings only), INFO (topology, addresses, transport, algorithm "
                "choices, compression applied or skipped) or TRACE (also one line per collective)"})

    def resolved(self) -> "Options":
        """A copy with every None replaced by its ZCOLL_* variable or default; validated."""
        out = Options(**{f.name: getattr(self, f.name) for f in fields(self)})
        if out.transport is None:
            out.transport = _env_choice("ZCOLL_TRANSPORT", "auto", TRANSPORTS)
        elif out.transport not in TRANSPORTS:
            raise ValueError(f"transport={out.transport!r}: expected one of {', '.join(TRANSPORTS)}")
        explicit_net = out.net is not None or os.environ.get("ZCOLL_NET", "").strip() != ""
        if out.net is None:
            out.net = _env_choice("ZCOLL_NET", "tcp", NETS)
        elif out.net not in NETS:
            raise ValueError(f"net={out.net!r}: expected one of {', '.join(NETS)}")
        if out.transport in NETS and not explicit_net:
            out.net = out.transport  # ucx for every peer: the network transport is ucx
        if out.transport in NETS and out.net != out.transport:
            raise ValueError(f"transport={out.transport!r} carries every peer over {out.transport}, but the network "
                             f"transport is {out.net!r} (ZCOLL_NET / Options.net): set one of them")
        if out.ucx_library is None:
            out.ucx_library = os.environ.get("ZCOLL_UCX_LIB", "")
        if "ucx" in (out.transport, out.net):
            out.ucx_library = ucx_library(out.ucx_library)
        if out.algo is None:
            out.algo = os.environ.get("ZCOLL_ALGO", "")
            parse_algo(out.algo, "ZCOLL_ALGO")
        else:
            parse_algo(out.algo)
        if out.compression is None:
            out.compression = _env_choice("ZCOLL_COMPRESS", "none", COMPRESSIONS)
        elif out.compression not in COMPRESSIONS:
            raise ValueError(f"compression={out.compression!r}: expected one of {', '.join(COMPRESSIONS)}")
        if out.compress_min_bytes is None:
            out.compress_min_bytes = _env_int("ZCOLL_COMPRESS_MIN_BYTES", 65536, allow_zero=True)
        if out.compress_block is None:
            out.compress_block = _env_int("ZCOLL_COMPRESS_BLOCK", 256)
        if out.compress_min_bytes < 0:
            raise ValueError(f"compress_min_bytes must be >= 0, got {out.compress_min_bytes}")
        if not (16 <= out.compress_block <= 65536 and out.compress_block % 16 == 0):
            raise ValueError(f"compress_block must be a multiple of 16 in [16, 65536], got {out.compress_block}")
        forced = parse_algo(out.algo).get("allreduce")
        if out.compression != "none" and forced not in (None, "ring", "twoshot", "hierarchical"):
            raise ValueError(f"algo forces allreduce:{forced}, but a compressed all-reduce runs ring, twoshot "
                             f"or hierarchical")
        if out.chunk_bytes is None:
            out.chunk_bytes = _env_int("ZCOLL_CHUNK_BYTES", 0, allow_zero=True)
        if out.tuning is None:
            out.tuning = _env_choice("ZCOLL_TUNING", "defaults", TUNINGS)
        elif out.tuning not in TUNINGS:
            raise ValueError(f"tuning={out.tuning!r}: expected one of {', '.join(TUNINGS)}")
        if out.tuning_file is None:
            out.tuning_file = os.environ.get("ZCOLL_TUNING_FILE", "").strip()
        if not isinstance(out.tuning_file, (str, os.PathLike)):
            raise ValueError(f"tuning_file must be a path, got {out.tuning_file!r}")
        out.tuning_file = os.fspath(out.tuning_file)
        if out.shm_ring_bytes is None:
            out.shm_ring_bytes = _env_int("ZCOLL_SHM_RING_BYTES", 0, allow_zero=True)
        if out.shm_single_copy_bytes is None:
            raw = os.environ.get("ZCOLL_SHM_SINGLE_COPY_BYTES", "").strip().lower()
            out.shm_single_copy_bytes = ("auto" if raw in ("", "auto") else
                                         _env_int("ZCOLL_SHM_SINGLE_COPY_BYTES", 0, allow_zero=True))
        if out.shm_single_copy_bytes != "auto" and (not isinstance(out.shm_single_copy_bytes, int)
                                                    or out.shm_single_copy_bytes < 0):
            raise ValueError(f"shm_single_copy_bytes must be 'auto' or a byte count >= 0 (0: never), "
                             f"got {out.shm_single_copy_bytes!r}")
        if out.chunk_bytes < 0:
            raise ValueError(f"chunk_bytes must be positive (or 0 for the tuner's), got {out.chunk_bytes}")
        if not 0 <= out.shm_ring_bytes <= MAX_SHM_RING_BYTES:
            raise ValueError(f"shm_ring_bytes must be at most {MAX_SHM_RING_BYTES} (1 GiB), or 0 for the "
                             f"group's choice, got {out.shm_ring_bytes}")
        if out.socket_ifname is None:
            out.socket_ifname = os.environ.get("ZCOLL_SOCKET_IFNAME", "")
        if out.socket_family is None:
            name = os.environ.get("ZCOLL_SOCKET_FAMILY", "").strip().lower()
            if name not in SOCKET_FAMILIES:
                raise ValueError(f"ZCOLL_SOCKET_FAMILY={name!r}: expected AF_INET or AF_INET6")
            out.socket_family = SOCKET_FAMILIES[name]
        elif out.socket_family not in SOCKET_FAMILIES.values():
            raise ValueError(f"socket_family={out.socket_family!r}: expected socket.AF_INET or socket.AF_INET6")
        for name, default in (("connect_timeout", 20.0), ("heartbeat_interval", 1.0), ("heartbeat_timeout", 30.0)):
            if getattr(out, name) is None:
                setattr(out, name, _env_seconds(f"ZCOLL_{name.upper()}", default))
            if not getattr(out, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(out, name)}")
        if out.heartbeat_timeout < 2 * out.heartbeat_interval:
            raise ValueError(f"heartbeat_timeout ({out.heartbeat_timeout} s) must be at least twice "
                             f"heartbeat_interval ({out.heartbeat_interval} s)")
        if out.p2p_max_unexpected_bytes is None:
            out.p2p_max_unexpected_bytes = _env_int("ZCOLL_P2P_MAX_UNEXPECTED_BYTES", 1 << 30)
        if out.p2p_max_unexpected_bytes <= 0:
            raise ValueError(f"p2p_max_unexpected_bytes must be positive, got {out.p2p_max_unexpected_bytes}")
        if out.checksum is None:
            raw = os.environ.get("ZCOLL_CHECKSUM", "").strip().lower()
            if raw not in ("", "0", "1", "true", "false"):
                raise ValueError(f"ZCOLL_CHECKSUM={raw!r}: expected 0 or 1")
            out.checksum = raw in ("1", "true")
        if out.debug is None:
            out.debug = parse_log_level(os.environ.get("ZCOLL_DEBUG", ""), "ZCOLL_DEBUG")
        else:
            out.debug = parse_log_level(out.debug)
        return out


def ucx_library(configured: str = "") -> str:
    """The libucp the ucx transport loads: `configured` (ZCOLL_UCX_LIB: a file or a directory)
    where given, else the libucx wheel's (pip install 'zcoll[ucx]'), else "" (the loader's search
    path: a system UCX on LD_LIBRARY_PATH or in ld.so.cache)."""
    if configured:
        return configured
    spec = importlib.util.find_spec("libucx")
    if spec is not None and spec.origin:
        lib = os.path.join(os.path.dirname(spec.origin), "lib", "libucp.so.0")
        if os.path.exists(lib):
            return lib
    return ""


def host_identity() -> str:
    """Ranks with the same identity share memory: hostname plus the kernel's boot id, or
    ZCOLL_HOSTID where set (like NCCL_HOSTID: containers on one machine that do not share
    /dev/shm, or one machine split into "hosts" for testing)."""
    override = os.environ.get("ZCOLL_HOSTID", "").strip()
    if override:
        return override
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def launcher_master_addr() -> str:
    """MASTER_ADDR, the launcher's store host (torchrun, zcoll.launch.mpi_env()), or "": where
    the tcp transport routes to when the group's store has no host of its own (file://)."""
    return os.environ.get("MASTER_ADDR", "")
