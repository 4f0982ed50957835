"""zcoll-bench's command line: nccl-tests' flags, plus backends, codecs and a launcher of its own.

Every check that needs no process group happens here, so a bad flag is a usage error (exit 2,
one line on stderr) before any rank starts.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re

from ..config import COMPRESSIONS, NETS, TRANSPORTS, Options, parse_algo
from .collectives import ALIASES, COLLECTIVES, DTYPE_ALIASES, DTYPES, OP_ALIASES, OPS

BACKENDS = ("zcoll", "gloo", "mpi", "nccl", "deepspeed")
DEVICES = ("cpu", "cuda")
MAX_SIZES = 1000  # a sweep longer than this is a typo (-i 1 with -e 1G), not a benchmark
AVERAGE_MODES = {0: "rank 0's", 1: "the mean over ranks of the", 2: "the min over ranks of the",
                 3: "the max over ranks of the"}

EPILOG = """\
collectives (or 'all'; nccl-tests' binary names, all_reduce_perf etc., work too):
{colls}
datatypes: {dtypes} (or 'all'; float16, float32, float64, bf16 name them too)
ops:       {ops} (or 'all')

Sizes take K, M, G suffixes (powers of 1024). size is the bytes of the full vector (all_gather:
the output, reduce_scatter: the input), rounded down to a multiple of ranks x element size for
the collectives that split it; algbw = size / time, and busbw = algbw x the collective's factor
above, as nccl-tests defines them. time is the mean over -n iterations of one call, after
-w warm-up calls and a barrier; across ranks, -a picks which (default: the max, the slowest
rank; nccl-tests' default is the mean).

In-place: all_gather's input is the rank's slice of the output, reduce_scatter's output the
rank's slice of the input; alltoall and sendrecv have none. torch's all_reduce, broadcast and
reduce only work in place, so their out-of-place column times out.copy_(in) plus the call (MPI's
real out-of-place forms for MPI). Results are checked after timing, against inputs whose exact
result is known (small integers that no reduction order can round).

Devices: --device cuda puts every tensor on a GPU, rank r on GPU (local rank r mod the GPU
count). zcoll stages CUDA tensors through host memory, so its ranks may share one GPU; nccl
needs a GPU per rank; gloo runs what it supports on CUDA (n/a otherwise); mpi runs on the host
only. Times then include waiting for the GPU (a device synchronize after the timed calls).

DeepSpeed: --backend deepspeed times deepspeed.comm.inference_all_reduce, DeepSpeed's shared-memory
all-reduce for CPU inference (the strongest CPU peer on one host): all_reduce of float, half or
bfloat16 sums, every rank on one host (zcoll-bench sets LOCAL_SIZE, without which DeepSpeed
crashes); other cells are n/a, since DeepSpeed would quietly run the process group's all_reduce.

Launch: under mpirun (rank and size from the MPI environment; rendezvous through mpi4py), under
torchrun, or with --nproc N (N local ranks; with mpi among the backends it re-runs itself under
`mpirun -n N` so that MPI runs in the same processes). Several backends run side by side,
interleaved per size, and a ratio table follows (each backend's time over zcoll's).

Exit status: 0 when every check passed, 1 when any #wrong > 0 or a lossy relerr exceeded its
bound, 2 on bad flags.

examples:
  zcoll-bench --nproc 2 -b 8 -e 64M -f 4 --backend zcoll,gloo,mpi
  mpirun -n 4 zcoll-bench all_gather reduce_scatter -b 1K -e 16M -f 4 -d bfloat16
  zcoll-bench --nproc 2 all_reduce -b 64K -e 16M -f 4 --compress none,int8,int4 --plot busbw.png
"""


def parse_size(text: str) -> int:
    """'8', '64K', '1.5M', '2G' (also '64KB', '64KiB'): bytes, powers of 1024 as nccl-tests."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (expected e.g. 8, 64K, 16M, 1G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if value != int(value):
        raise argparse.ArgumentTypeError(f"size {text!r} is not a whole number of bytes")
    return int(value)


def _positive(name: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value
    return parse


def _pick(values: str, known, aliases: dict, what: str, parser) -> list[str]:
    """A comma list of names (aliases allowed, 'all' for every one), in order, deduplicated."""
    out: list[str] = []
    for item in filter(None, (v.strip().lower() for v in values.split(","))):
        if item == "all":
            names = list(known)
        else:
            name = aliases.get(item, item)
            if name not in known:
                parser.error(f"unknown {what} {item!r} (expected one of {', '.join(known)} or all)")
            names = [name]
        out += [n for n in names if n not in out]
    if not out:
        parser.error(f"no {what} given")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="zcoll-bench",
        description="nccl-tests-style microbenchmarks of torch.distributed collectives: zcoll side by\n"
                    "side with gloo and MPI (bandwidth, latency, and a check of every result).",
        epilog=EPILOG.format(colls="\n".join(f"  {c.name:<15} {c.doc}" for c in COLLECTIVES.values()),
                             dtypes=", ".join(DTYPES), ops=", ".join(OPS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collective", nargs="*", default=["all_reduce"],
                    help="collectives to run, one table each (default: all_reduce)")
    g = ap.add_argument_group("nccl-tests flags")
    g.add_argument("-b", "--minbytes", type=parse_size, default=32 << 20, metavar="SIZE",
                   help="smallest size (default: 32M)")
    g.add_argument("-e", "--maxbytes", type=parse_size, default=32 << 20, metavar="SIZE",
                   help="largest size (default: 32M)")
    g.add_argument("-i", "--stepbytes", type=parse_size, default=1 << 20, metavar="SIZE",
                   help="increment between sizes when -f is 1 (default: 1M)")
    g.add_argument("-f", "--stepfactor", type=_positive("-f/--stepfactor"), default=1, metavar="N",
                   help="multiply the size by N at each step; 1 = add -i instead (default: 1)")
    g.add_argument("-n", "--iters", type=_positive("-n/--iters"), default=20, metavar="N",
                   help="timed iterations per size (default: 20)")
    g.add_argument("-w", "--warmup_iters", type=_positive("-w/--warmup_iters", 0), default=5, metavar="N",
                   help="untimed iterations before them (default: 5)")
    g.add_argument("-c", "--check", type=_positive("-c/--check", 0), default=1, metavar="N",
                   help="check the result N times per size, 0 = off (default: 1)")
    g.add_argument("-d", "--datatype", default="float", metavar="TYPE",
                   help="element type(s), comma separated, or all (default: float)")
    g.add_argument("-o", "--op", default="sum", metavar="OP",
                   help="reduction(s) of all_reduce/reduce/reduce_scatter, comma separated, or all "
                        "(default: sum)")
    g.add_argument("-r", "--root", default="0", metavar="RANK",
                   help="root of broadcast/reduce, or all (default: 0)")
    g.add_argument("-a", "--average", type=int, choices=sorted(AVERAGE_MODES), default=3, metavar="N",
                   help="time reported across ranks: 0 rank 0's, 1 mean, 2 min, 3 max (default: 3)")
    z = ap.add_argument_group("backends")
    z.add_argument("--backend", default="zcoll", metavar="LIST",
                   help="comma list of zcoll, gloo, mpi, nccl, deepspeed: several run side by side, "
                        "interleaved per size (nccl needs --device cuda; deepspeed is its shm all_reduce, "
                        "one host) (default: zcoll)")
    z.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where the tensors live: cpu, or cuda (a GPU per local rank, shared when there "
                        "are fewer GPUs than ranks) (default: cpu)")
    z.add_argument("--compress", default="none", metavar="LIST",
                   help=f"zcoll codecs, comma list of {', '.join(COMPRESSIONS)}: one zcoll line each "
                        "(compression on from 0 bytes; lossy rows report relerr, the relative L2 error, "
                        "checked against docs/compression.md's bound) (default: none)")
    z.add_argument("--checksum", choices=("off", "on", "both"), default="off",
                   help="zcoll with ZCOLL_CHECKSUM (a CRC32C on every message): off, on, or both side by "
                        "side (a zcoll+crc line next to each zcoll line) (default: off)")
    z.add_argument("--algo", default=None, metavar="SPEC",
                   help="force zcoll's algorithms: 'ring', or 'allreduce:tree,reduce:oneshot' "
                        "(default: ZCOLL_ALGO, else the tuner)")
    z.add_argument("--transport", choices=TRANSPORTS, default=None,
                   help="zcoll transport (default: ZCOLL_TRANSPORT, else auto)")
    z.add_argument("--net", choices=NETS, default=None,
                   help="zcoll's network transport between hosts under auto: tcp or ucx (docs/ucx.md) "
                        "(default: ZCOLL_NET, else tcp)")
    run = ap.add_argument_group("launch and output")
    run.add_argument("--nproc", type=_positive("--nproc"), default=None, metavar="N",
                     help="start N local ranks (not needed under mpirun or torchrun)")
    run.add_argument("--bind", choices=("auto", "core", "none"), default="auto",
                     help="with --nproc: pin rank r to core r (auto: when there are enough cores, as "
                          "mpirun binds its ranks)")
    run.add_argument("--json", metavar="FILE", help="write every row (and the run's settings) as JSON")
    run.add_argument("--plot", metavar="FILE.png",
                     help="plot busbw vs size, one line per backend/codec (needs matplotlib)")
    return ap


def parse_args(argv: list[str] | None):
    ap = build_parser()
    args = ap.parse_intermixed_args(argv)
    args.parser = ap
    args.collectives = _pick(",".join(args.collective), COLLECTIVES, ALIASES, "collective", ap)
    args.dtypes = _pick(args.datatype, DTYPES, DTYPE_ALIASES, "datatype", ap)
    args.ops = _pick(args.op, OPS, OP_ALIASES, "op", ap)
    args.backends = _pick(args.backend, BACKENDS, {}, "backend", ap)
    args.codecs = _pick(args.compress, COMPRESSIONS, {}, "codec", ap)
    if "deepspeed" in args.backends and importlib.util.find_spec("deepspeed") is None:
        ap.error("backend deepspeed needs DeepSpeed installed (pip install deepspeed)")
    if args.codecs != ["none"] and "zcoll" not in args.backends:
        ap.error("--compress applies to zcoll: add zcoll to --backend")
    if args.checksum != "off" and "zcoll" not in args.backends:
        ap.error("--checksum applies to zcoll: add zcoll to --backend")
    problem = check_device(args)
    if problem:
        ap.error(problem)
    if args.root.strip().lower() == "all":
        args.root = None
    else:
        try:
            args.root = int(args.root)
        except ValueError:
            ap.error(f"argument -r/--root: expected a rank or all, got {args.root!r}")
        if args.root < 0:
            ap.error(f"argument -r/--root: must be >= 0, got {args.root}")
    if args.minbytes < 1:
        ap.error("argument -b/--minbytes: must be at least 1 byte")
    if args.minbytes > args.maxbytes:
        ap.error(f"-b/--minbytes ({args.minbytes}) is larger than -e/--maxbytes ({args.maxbytes})")
    if args.stepfactor == 1 and args.stepbytes < 1 and args.maxbytes > args.minbytes:
        ap.error("argument -i/--stepbytes: must be at least 1 byte when -f is 1")
    args.sizes = sizes(args.minbytes, args.maxbytes, args.stepbytes, args.stepfactor)
    if len(args.sizes) > MAX_SIZES:
        ap.error(f"the sweep has {len(args.sizes)} sizes (limit {MAX_SIZES}): raise -i or use -f")
    for codec in args.codecs:  # what Options would refuse at group creation, refused here
        try:
            Options(algo=args.algo, transport=args.transport, net=args.net, compression=codec,
                    compress_min_bytes=0).resolved()
        except ValueError as e:
            ap.error(f"zcoll options: {e}")
    if args.algo is not None:
        try:
            parse_algo(args.algo)
        except ValueError as e:
            ap.error(f"argument --algo: {e}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401  (imported for real by report.plot)
        except ImportError:
            ap.error("--plot needs matplotlib: pip install matplotlib (or pip install 'zcoll[bench]')")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        problem = output_path_problem(path)
        if problem:
            ap.error(f"argument {flag}: {problem}")
    return args


def output_path_problem(path: str | None) -> str | None:
    """Why the sweep could not write its output to `path` (checked before it runs, not after
    minutes of measuring), or None."""
    if path is None:
        return None
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return f"{path!r} is a directory"
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        return f"cannot write {path!r}: {folder} {what}"
    if not os.access(folder, os.W_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
        return f"cannot write {path!r}: permission denied"
    return None


def check_device(args) -> str | None:
    """--device against the backends and this machine; a message for parser.error, or None."""
    if args.device == "cpu":
        if "nccl" in args.backends:
            return "backend nccl needs --device cuda"
        return None
    if "deepspeed" in args.backends:
        return "--device cuda: the deepspeed backend is DeepSpeed's CPU shared-memory all-reduce; use --device cpu"
    if "mpi" in args.backends:
        return "--device cuda: the mpi backend (mpi4py) runs on host memory only; drop mpi or use --device cpu"
    import torch
    if not torch.cuda.is_available():
        return "--device cuda: no CUDA device here (torch.cuda.is_available() is False)"
    if "nccl" in args.backends:
        import torch.distributed as dist
        if not dist.is_nccl_available():
            return "backend nccl: this torch was built without NCCL"
    return None


def local_world_size(world: int) -> int:
    """Ranks on this host, as the launcher says (torchrun, mpirun); else all `world` of them."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or world)


def check_world(args, world: int) -> str | None:
    """The checks that need the number of ranks; a message for parser.error, or None. (With the
    deepspeed backend it also sets LOCAL_SIZE, which DeepSpeed's shm op reads, when unset.)"""
    if args.root is not None and args.root >= world:
        return f"argument -r/--root: rank {args.root} is out of range for {world} ranks"
    if args.nproc is not None and args.nproc != world:
        return f"--nproc {args.nproc}, but the launcher started {world} ranks"
    if "deepspeed" in args.backends:
        local = local_world_size(world)
        if local != world:
            return (f"backend deepspeed: its shm all-reduce needs every rank on one host ({local} of {world} "
                    "here); across hosts it runs the process group's all_reduce")
        if os.environ.setdefault("LOCAL_SIZE", str(world)) != str(world):
            return f"backend deepspeed: LOCAL_SIZE={os.environ['LOCAL_SIZE']}, but {world} ranks share this host"
    if "nccl" in args.backends:
        import torch
        gpus = torch.cuda.device_count()
        local = local_world_size(world)
        if local > gpus:  # NCCL refuses two ranks on one GPU
            return (f"backend nccl needs a GPU per rank: {local} ranks on this host, "
                    f"{gpus} GPU{'s' if gpus != 1 else ''}")
    return None


def sizes(lo: int, hi: int, step: int, factor: int) -> list[int]:
    out, size = [], lo
    while size <= hi:
        out.append(size)
        if len(out) > MAX_SIZES:
            break
        size = size * factor if factor > 1 else size + step
        if factor == 1 and step < 1:
            break
    return out
