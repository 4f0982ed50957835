"""`python -m zcoll.tune`: measure this machine's cost model and write it as a tuning file.

Each of --repeats zcoll groups measures its links as ZCOLL_TUNING=measure does (ping-pongs of 8
bytes and 256 KiB between a pair of ranks per link, a timed reduction; docs/architecture.md,
"Algorithms and the tuner"); rank 0 takes the median of every number, times the codecs, and
writes the file (keeping the sections of an existing file it did not measure, such as another
network's). Use it with ZCOLL_TUNING_FILE=<file>.

  python -m zcoll.tune --nproc 2 -o zcoll-tuning.json                   # shm between local ranks
  python -m zcoll.tune --nproc 2 --transport tcp -o zcoll-tuning.json   # adds the tcp section
  torchrun --nnodes 2 --nproc-per-node 4 -m zcoll.tune -o tuning.json   # shm and the network

Under torchrun (or with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set) it runs as one of the
ranks; otherwise it starts --nproc local ranks itself.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys

LINK_FIELDS = ("alpha", "beta", "gamma")  # what the probe measures; the rest comes from the base model


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m zcoll.tune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__[__doc__.index("\n\n"):])
    ap.add_argument("-o", "--output", default="zcoll-tuning.json", help="the tuning file to write (default: %(default)s)")
    ap.add_argument("--nproc", type=int, default=2, help="local ranks to start when no launcher did (default: 2)")
    ap.add_argument("--transport", default="auto", choices=("auto", "shm", "tcp", "ucx"),
                    help="the groups' transport (auto: shm on a host, ZCOLL_NET between hosts)")
    ap.add_argument("--repeats", type=int, default=5, help="groups measured; the median is written (default: 5)")
    ap.add_argument("--codec-elements", type=int, default=1 << 22,
                    help="float32 elements the codec timing encodes (0: keep the base's codec rates)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.nproc < 2 or args.repeats < 1 or args.codec_elements < 0:
        ap.error("--nproc must be at least 2, --repeats at least 1, --codec-elements at least 0")
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv, args) -> int:
    """Starts args.nproc ranks of this command on this host; their worst exit status."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(args.nproc))
    procs = [subprocess.Popen([sys.executable, "-m", "zcoll.tune", *argv], env=dict(env, RANK=str(r)))
             for r in range(args.nproc)]
    status = 0
    for p in procs:
        try:
            status = max(status, p.wait(timeout=args.timeout))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            print(f"zcoll.tune: gave up after {args.timeout} s", file=sys.stderr)
            return 1
    return status


def codec_rates(elements: int) -> dict[str, tuple[float, float]]:
    """(encode, decode) float32 bytes/s of each native codec, median of 5."""
    import numpy as np

    from zcoll import _C
    from zcoll.timing import median_seconds

    x = np.random.default_rng(0).standard_normal(elements).astype(np.float32)
    out = {}
    for codec in ("fp16", "bf16", "int8", "int4"):
        wire = _C.codec_encode(codec, x)
        encode = median_seconds(lambda: _C.codec_encode(codec, x), 5, warmup=1)
        decode = median_seconds(lambda: _C.codec_decode(codec, wire, elements), 5)
        out[codec] = (x.nbytes / encode, x.nbytes / decode)
    return out


def median_model(models, measured: list[dict]):
    """The first model with the median of each measured link's alpha, beta and gamma, and of the cores."""
    out = models[0].copy()
    for link in ("shm", "net"):
        if not any(m[link] for m in measured):
            continue
        target = getattr(out, link)
        for name in LINK_FIELDS:
            setattr(target, name, statistics.median(getattr(getattr(m, link), name) for m in models))
    out.cores = int(statistics.median(m.cores for m in models))
    out.source = "measured"
    return out


def run_rank(args) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    import zcoll
    from zcoll.tuning import save_cost_model

    opts = zcoll.Options(transport=args.transport, tuning="measure")
    dist.init_process_group("zcoll", timeout=datetime.timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    models, measured = [], []
    for _ in range(args.repeats):
        group = dist.new_group(backend="zcoll", pg_options=opts)
        backend = group._get_backend(torch.device("cpu"))
        models.append(backend.cost_model)
        measured.append(backend.measurement)
        net = backend.config.net
        transport = backend.transport
        dist.destroy_process_group(group)
    dist.barrier()
    if rank == 0:
        model = median_model(models, measured)
        if args.codec_elements:
            for codec, (encode, decode) in codec_rates(args.codec_elements).items():
                model.set_codec(codec, encode, decode)
        shm = any(m["shm"] for m in measured)
        has_net = any(m["net"] for m in measured)
        took = statistics.median(m["seconds"] for m in measured)
        save_cost_model(model, args.output, net if has_net else None, shm,
                        comment=f"python -m zcoll.tune: {world} ranks, transport {transport}, "
                                f"{args.repeats} groups, {socket.gethostname()}")
        print(f"zcoll.tune: wrote {args.output} ({'shm' if shm else ''}{' and ' if shm and has_net else ''}"
              f"{net if has_net else ''} measured, {took * 1e3:.1f} ms per group): {model.describe()}")
        if not shm and not has_net:
            print("zcoll.tune: no link was measured (one rank?); the file holds the defaults", file=sys.stderr)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if os.environ.get("RANK") and os.environ.get("WORLD_SIZE") and os.environ.get("MASTER_ADDR"):
        run_rank(args)
        return
    sys.exit(spawn(argv, args))


if __name__ == "__main__":
    main()
