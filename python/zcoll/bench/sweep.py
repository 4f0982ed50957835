"""One rank's side of a zcoll-bench run: the process groups, the interleaved sweep, timing and
checking. Every rank computes the same rows (timings and checks are combined over a control
group); rank 0 prints them.

Timing: per cell, one probe call (which tells an unsupported combination from a working one),
-w warm-up calls, a barrier of the backend under test, then -n calls back to back; a rank's time
is their mean (as nccl-tests), and the reported time is, by default, the max over ranks (-a).
Checking comes after timing, as in nccl-tests: the inputs are rewritten with verifiable values,
outputs with a sentinel (NaN, or the integer type's extreme), one call runs, and each rank
compares its output with the closed-form expectation.

With --device cuda the buffers live on the rank's GPU, and the GPU is synchronised before the
clock starts and before it stops: NCCL's calls return once queued, zcoll's once done.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import time
import zlib
from dataclasses import dataclass

from .. import __version__
from . import report
from .collectives import COLLECTIVES, DTYPES, compresses, gaussian_values, rank_values, relerr_bound
from .report import Cell, Row

# Test-only: perturb one output element after each checked call, on every rank that checks, so
# the tests can prove that a wrong result shows as #wrong > 0 (or relerr out of bound) and a
# non-zero exit status. Never set it for a real measurement.
CORRUPT_ENV = "ZCOLL_BENCH_CORRUPT"


class Control:
    """Agreement between ranks (timings, error counts, n/a reasons) over a gloo group of its own,
    so a broken backend under test cannot corrupt the bookkeeping."""

    def __init__(self, group, rank: int, world: int):
        self.group, self.rank, self.world = group, rank, world

    def reduce(self, values: list[float], op: str) -> list[float]:
        import torch
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            if op == "rank0":
                dist.broadcast(t, 0, group=self.group)
            else:
                red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
                dist.all_reduce(t, op=red["sum" if op == "mean" else op], group=self.group)
                if op == "mean":
                    t /= self.world
        return t.tolist()

    def gather(self, obj) -> list:
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out


@dataclass
class Backend:
    label: str    # what the table shows: zcoll, zcoll+int8, gloo, mpi, deepspeed
    kind: str     # zcoll | gloo | mpi | nccl | deepspeed
    codec: str
    handle: object  # torch ProcessGroup, an MPI communicator, or deepspeed.comm
    kernel_level: int = 0  # deepspeed: its shm kernel's vector level (1: avx2, 2: avx512bw)

    def barrier(self) -> None:
        import torch.distributed as dist
        if self.kind == "mpi":
            self.handle.Barrier()
        elif self.kind == "deepspeed":
            dist.barrier()  # its all-reduce works on the default group
        else:
            dist.barrier(group=self.handle)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def _sentinel(tensor):
    import torch
    if tensor.dtype.is_floating_point:
        return float("nan")
    info = torch.iinfo(tensor.dtype)
    return info.min if info.min < 0 else info.max


class Sweep:
    def __init__(self, args, kind: str, rank: int, world: int, control: Control, backends: list[Backend],
                 device=None):
        self.args, self.kind, self.rank, self.world = args, kind, rank, world
        self.device = device  # a torch.device for --device cuda, else None (the CPU)
        self.control, self.backends = control, backends
        self.corrupt = os.environ.get(CORRUPT_ENV, "") not in ("", "0")
        self.rows: list[Row] = []
        self.agg = {0: "rank0", 1: "mean", 2: "min", 3: "max"}[args.average]

    def out(self, line: str = "") -> None:
        if self.rank == 0:
            print(line, flush=True)

    # -- one cell ---------------------------------------------------------------------------------

    def cell(self, b: Backend, coll, dtype, op, root, count, inplace, inputs) -> Cell:
        import torch
        if inplace and not coll.has_inplace:
            return Cell(status="n/a", reason="no in-place form")
        if b.kind == "mpi":
            why = coll.mpi_unsupported(dtype, op)
            if why:
                return Cell(status="n/a", reason=why)
        if b.kind == "deepspeed":
            why = coll.deepspeed_unsupported(dtype, op, b.kernel_level)
            if why:
                return Cell(status="n/a", reason=why)
        lossy = b.kind == "zcoll" and compresses(coll, b.codec, dtype, op)
        values, expected = inputs(lossy)
        bufs = coll.alloc(count, self.world, self.rank, dtype.torch, inplace, b.kind == "mpi", self.device)
        own = torch.from_numpy(values(self.rank, bufs.inp.numel())).to(dtype.torch).to(bufs.inp.device)
        sentinel = _sentinel(bufs.full)

        def fill():
            if bufs.full.numel() != bufs.inp.numel() or bufs.full.data_ptr() != bufs.inp.data_ptr():
                bufs.full.fill_(sentinel)
            bufs.inp.copy_(own)

        fill()
        if b.kind == "mpi":
            call = coll.mpi_call(bufs, b.handle, op, root, inplace, self.rank, self.world)
        elif b.kind == "deepspeed":
            call = coll.deepspeed_call(bufs, b.handle, inplace)
        else:
            call = coll.torch_call(bufs, b.handle, op, root, inplace, self.rank, self.world)
        # The probe: gloo or MPI may not implement a combination; they refuse it on every rank
        # before communicating. zcoll implements them all, so an error there is a real failure.
        error = None
        try:
            call()
        except Exception as e:  # noqa: BLE001
            if b.kind == "zcoll":
                raise
            error = _first_line(e)
        if self.control.reduce([1.0 if error else 0.0], "max")[0]:
            reasons = [r for r in self.control.gather(error) if r]
            return Cell(status="n/a", reason=reasons[0])

        a = self.args
        for _ in range(a.warmup_iters):
            call()
        self.sync()
        b.barrier()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            call()
        self.sync()
        seconds = (time.perf_counter() - t0) / a.iters
        seconds = self.control.reduce([seconds], self.agg)[0]
        size = count * bufs.full.element_size()
        algbw = size / seconds / 1e9
        c = Cell(time_us=seconds * 1e6, algbw=algbw, busbw=algbw * coll.factor(self.world))
        if a.check == 0:
            return c

        exp = expected()
        wrong, err2, nrm2 = 0, 0.0, 0.0
        exp_t = None if exp is None else torch.from_numpy(exp).to(bufs.out.device)
        exp_typed = None if exp_t is None or lossy else exp_t.to(dtype.torch)
        for _ in range(a.check):
            fill()
            self.sync()
            b.barrier()
            call()
            self.sync()
            if exp_t is None:  # this rank's output is undefined (reduce, off the root)
                continue
            got = bufs.out
            if self.corrupt:
                got[:1] += max(1.0, float(exp_t.norm())) if lossy else 1
            if lossy:
                d = got.double() - exp_t
                err2 += float((d * d).sum())
                nrm2 += float((exp_t * exp_t).sum())
            else:
                wrong += int((got != exp_typed).sum())
        wrong, err2, nrm2 = self.control.reduce([wrong, err2, nrm2], "sum")
        if lossy:
            c.relerr = math.sqrt(err2 / nrm2) if nrm2 > 0 else (0.0 if err2 == 0 else math.inf)
            c.bound = relerr_bound(b.codec, self.world, dtype)
        else:
            c.wrong = int(wrong)
        return c

    def sync(self) -> None:
        """Waits for everything queued on this rank's GPU (nothing to do on the CPU)."""
        if self.device is not None:
            import torch
            torch.cuda.synchronize(self.device)

    # -- the sweep ------------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        colls = [COLLECTIVES[c] for c in a.collectives]
        roots = list(range(self.world)) if a.root is None else [a.root]
        plan = []
        for coll in colls:
            cases = [(DTYPES[d], op, root) for d in a.dtypes
                     for op in (a.ops if coll.reduces else ["none"])
                     for root in (roots if coll.rooted else [-1])]
            plan.append((coll, cases))
        total = sum(len(cases) * len(a.sizes) * len(self.backends) for _, cases in plan)
        progress = report.Progress(total, self.rank == 0)
        labels = [b.label for b in self.backends]
        try:
            for coll, cases in plan:
                if self.world < coll.min_ranks:
                    self.out(f"# {coll.name}: skipped, needs {coll.min_ranks} ranks")
                    self.out()
                    progress.done += len(cases) * len(a.sizes) * len(self.backends)
                    continue
                rows = self.table(coll, cases, progress)
                for line in report.footer(rows, labels):
                    self.out(line)
                ratio = report.ratio_table(rows, labels)
                if ratio:
                    self.out()
                    for line in ratio:
                        self.out(line)
                self.out()
        finally:
            progress.close()

    def table(self, coll, cases, progress) -> list[Row]:
        a = self.args
        lossy_codecs = sorted({b.codec for b in self.backends if b.kind == "zcoll" and any(
            compresses(coll, b.codec, d, op) for d, op, _ in cases)})
        for line in report.header(coll.name, bool(lossy_codecs), {
                c: relerr_bound(c, self.world, DTYPES["double"]) for c in lossy_codecs}):
            self.out(line)
        rows = []
        for dtype, op, root in cases:
            seen = set()
            salt = zlib.crc32(f"{coll.name}/{dtype.name}/{op}".encode())
            for size in a.sizes:
                count = coll.count_for(size, self.world, dtype.torch.itemsize)
                if count == 0 or count in seen:  # too small to split over the ranks, or a repeat
                    progress.done += len(self.backends)
                    continue
                seen.add(count)
                inputs = self.inputs(coll, dtype, op, root, count, salt)
                # Interleaved: every backend runs this size before any runs the next, so they
                # share the machine's state (frequency, other load) as closely as possible.
                for b in self.backends:
                    row = Row(backend=b.label, collective=coll.name, size=count * dtype.torch.itemsize,
                              count=count, dtype=dtype.name, op=op, root=root, codec=b.codec)
                    row.out_of_place = self.cell(b, coll, dtype, op, root, count, False, inputs)
                    row.in_place = self.cell(b, coll, dtype, op, root, count, True, inputs)
                    rows.append(row)
                    self.out(report.format_row(row))
                    progress.step(f"{coll.name} {row.size} B {b.label}")
        self.rows += rows
        return rows

    def inputs(self, coll, dtype, op, root, count, salt):
        """values(r, length) and a cached expected() for this size, exact or lossy inputs."""
        n, rank = self.world, self.rank
        cache: dict = {}
        reduces = coll.reduces

        def get(lossy: bool):
            if lossy:
                def values(r, length):
                    return gaussian_values(r, length, dtype, salt)
            else:
                def values(r, length):
                    return rank_values(r, n, length, dtype, op, reduces)

            def expected():
                if lossy not in cache:
                    cache[lossy] = coll.expected(values, op, count, n, rank, root)
                return cache[lossy]
            return values, expected
        return get


def _groups(args):
    import torch
    import torch.distributed as dist

    import zcoll

    backends, notes = [], []
    for name in args.backends:
        if name == "zcoll":
            checksums = {"off": (False,), "on": (True,), "both": (False, True)}[args.checksum]
            for codec, checksum in ((c, k) for c in args.codecs for k in checksums):
                opts = zcoll.Options(algo=args.algo, transport=args.transport, net=args.net, compression=codec,
                                     compress_min_bytes=0 if codec != "none" else None, checksum=checksum)
                group = dist.new_group(backend="zcoll", pg_options=opts)
                label = ("zcoll" if codec == "none" else f"zcoll+{codec}") + ("+crc" if checksum else "")
                backends.append(Backend(label, "zcoll", codec, group))
                if codec == args.codecs[0] and checksum == checksums[0]:
                    transport = group._get_backend(torch.device("cpu")).transport
                    notes.append(f"zcoll ({transport}"
                                 + (f", algo {args.algo}" if args.algo else "") + ")")
        elif name == "gloo":
            backends.append(Backend("gloo", "gloo", "none", dist.new_group(backend="gloo")))
            notes.append("gloo")
        elif name == "mpi":
            from mpi4py import MPI
            backends.append(Backend("mpi", "mpi", "none", MPI.COMM_WORLD.Dup()))
            notes.append(f"mpi ({MPI.Get_library_version().split(',')[0].strip()})")
        elif name == "deepspeed":
            comm, level, version = _deepspeed()
            backends.append(Backend("deepspeed", "deepspeed", "none", comm, kernel_level=level))
            notes.append(f"deepspeed {version} (shm inference_all_reduce)")
        elif name == "nccl":
            backends.append(Backend("nccl", "nccl", "none", dist.new_group(backend="nccl")))
            version = torch.cuda.nccl.version()
            notes.append("nccl " + (".".join(map(str, version)) if isinstance(version, tuple) else str(version)))
    return backends, notes


def _deepspeed():
    """deepspeed.comm over the default group, its shm all-reduce initialised (its C++ op builds on
    first use); returns (deepspeed.comm, the kernel's vector level, deepspeed's version). The
    shm kernel only runs where LOCAL_SIZE equals the world size, so the caller has checked that
    every rank is on this host and set LOCAL_SIZE (cli.check_world)."""
    import deepspeed
    import deepspeed.comm as comm
    import deepspeed.comm.comm as state  # its backend object, set by init_distributed (`cdb`)
    comm.init_distributed(dist_backend="gloo", verbose=False)  # wraps the default group already made
    backend = state.cdb
    level = getattr(backend, "shm_vector_kernel_level", 0) if getattr(backend, "shm_comm_op", None) else 0
    return comm, level, deepspeed.__version__


def _device(args, rank: int):
    """This rank's GPU for --device cuda (local rank mod the GPU count), made current; else None."""
    if args.device != "cuda":
        return None
    import torch
    local = int(os.environ.get("LOCAL_RANK") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK") or rank)
    device = torch.device("cuda", local % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def _settle(backends: list[Backend], calls: int = 200, device=None) -> None:
    """The first few hundred calls of a fresh group run slower (connections, allocator, caches):
    small all-reduces on every group before any timing, so the first size is not penalised."""
    import torch
    import torch.distributed as dist
    x = torch.ones(1024, device=device)
    for b in backends:
        if b.kind == "mpi":
            from mpi4py import MPI
            y = x.numpy()
            for _ in range(calls):
                b.handle.Allreduce(MPI.IN_PLACE, y)
        elif b.kind == "deepspeed":
            for _ in range(calls):
                b.handle.inference_all_reduce(x)
        else:
            for _ in range(calls):
                dist.all_reduce(x, group=b.handle)
        b.barrier()


def run(args, kind: str) -> int:
    """One rank's whole run; returns the exit status (the same on every rank)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    import zcoll  # noqa: F401  (registers the backend)

    if kind == "single":
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = _device(args, rank)
    control = Control(dist.new_group(backend="gloo"), rank, world)
    backends, notes = _groups(args)
    _settle(backends, device=device)
    sweep = Sweep(args, kind, rank, world, control, backends, device)

    gpu = f" {device} ({torch.cuda.get_device_name(device)})" if device is not None else ""
    hosts = control.gather((rank, os.getpid(), socket.gethostname(), sorted(os.sched_getaffinity(0)), gpu))
    a = args
    step = f"x{a.stepfactor}" if a.stepfactor > 1 else f"+{a.stepbytes}"
    how = {"mpirun": "mpirun", "nproc": "--nproc", "torchrun": "torchrun", "env": "env://",
           "single": "one process"}[kind]
    ranks = f"{world} rank{'s' if world > 1 else ''}"
    on = "; tensors on cuda" if device is not None else ""
    sweep.out(f"# zcoll-bench {__version__} (torch {torch.__version__}): {ranks} via {how}; "
              f"backends: {', '.join(notes)}{on}")
    sweep.out(f"#  minBytes {a.minbytes} maxBytes {a.maxbytes} step: {step} ({len(a.sizes)} sizes) "
              f"warmup iters: {a.warmup_iters} iters: {a.iters} validation: {a.check}")
    sweep.out(f"#  time: {report_average(a.average)} mean time of one call over the iterations")
    if os.environ.get(CORRUPT_ENV, "") not in ("", "0"):
        sweep.out(f"#  {CORRUPT_ENV} is set: outputs are corrupted on purpose (test mode)")
    sweep.out("#")
    for r, pid, host, cpus, gpu in hosts:
        sweep.out(f"#  Rank {r:2d} Pid {pid:7d} on {host:>12} cpus {_cpus(cpus)}{gpu}")
    sweep.out("#")
    sweep.run()

    failed = [r for r in sweep.rows if any(c.failed for c in r.cells())]
    if rank == 0:
        meta = {"zcoll_version": __version__, "torch_version": torch.__version__, "world_size": world,
                "launcher": kind, "backends": [b.label for b in backends], "device": a.device,
                "argv": sys.argv[1:], "minbytes": a.minbytes, "maxbytes": a.maxbytes,
                "iters": a.iters, "warmup_iters": a.warmup_iters, "check": a.check,
                "time": f"{report_average(a.average)} mean time of one call, microseconds",
                "algbw_busbw_unit": "GB/s (1e9 bytes/s)", "failed": len(failed)}
        if a.json:
            report.write_json(a.json, meta, sweep.rows)
        if a.plot:
            report.plot(a.plot, sweep.rows, f"zcoll-bench, {world} ranks ({socket.gethostname()}), "
                        f"busbw: the better of out-of-place and in-place")
        if failed:
            print(f"# zcoll-bench: FAILED: {len(failed)} rows with wrong results", flush=True)
    for b in backends:
        if b.kind == "mpi":
            b.handle.Free()
    dist.destroy_process_group()
    return 1 if failed else 0


def report_average(mode: int) -> str:
    from .cli import AVERAGE_MODES
    return AVERAGE_MODES[mode]


def _cpus(cpus: list[int]) -> str:
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 2:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))
