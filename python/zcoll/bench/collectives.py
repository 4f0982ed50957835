"""The collectives zcoll-bench measures: buffers, how each backend runs them, bus-bandwidth factors
and verifiable inputs.

Sizes follow nccl-tests: `count` is the number of elements of the full vector (the all-reduce
buffer, the all-gather output, the reduce-scatter input, the all-to-all buffer, the broadcast /
reduce / sendrecv buffer) and `size` its bytes; the collectives that split the vector over the
ranks round `count` down to a multiple of the world size. algbw = size / time, and busbw =
algbw x factor(n), the factor that makes busbw comparable with a link's bandwidth.

In-place follows torch where torch has a form for it: all_reduce, broadcast and reduce *are*
in-place calls in torch, so their out-of-place column times `out.copy_(in)` plus the call (what
keeping the input costs a torch caller; MPI's all_reduce and reduce have a real out-of-place form
and use it); all_gather's in-place input is the rank's slice of the output, reduce_scatter's
in-place output the rank's slice of the input (as nccl-tests and FSDP do; MPI's in-place
reduce-scatter leaves the result at the front of the buffer). alltoall and sendrecv have no
in-place column: their send and receive buffers cannot alias.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# ---- datatypes and reduction ops ---------------------------------------------------------------


@dataclass(frozen=True)
class DType:
    name: str        # as nccl-tests prints it
    torch_name: str  # attribute of torch
    exact: int       # integers of magnitude <= exact are represented exactly
    signed: bool
    floating: bool
    unit_roundoff: float = 0.0  # relative rounding error of one rounding to this type

    @property
    def torch(self):
        import torch
        return getattr(torch, self.torch_name)


DTYPES = {d.name: d for d in (
    DType("int8", "int8", 127, True, False),
    DType("uint8", "uint8", 255, False, False),
    DType("int32", "int32", 2**31 - 1, True, False),
    DType("int64", "int64", 2**63 - 1, True, False),
    DType("half", "float16", 2**11, True, True, 2.0**-11),
    DType("float", "float32", 2**24, True, True, 2.0**-24),
    DType("double", "float64", 2**53, True, True, 2.0**-53),
    DType("bfloat16", "bfloat16", 2**8, True, True, 2.0**-8),
)}
DTYPE_ALIASES = {"float16": "half", "float32": "float", "float64": "double", "fp16": "half", "fp32": "float",
                 "fp64": "double", "bf16": "bfloat16", "char": "int8", "int": "int32", "long": "int64"}

OPS = ("sum", "prod", "max", "min", "avg")
OP_ALIASES = {"product": "prod", "mean": "avg"}
_TORCH_OPS = {"sum": "SUM", "prod": "PRODUCT", "max": "MAX", "min": "MIN", "avg": "AVG"}
_MPI_OPS = {"sum": "SUM", "prod": "PROD", "max": "MAX", "min": "MIN"}  # MPI has no average

# The relative L2 error bounds of the compressed all-reduce for Gaussian inputs, documented (and
# tested) in docs/compression.md: two-shot below these, the ring below these x sqrt(p/2). The
# compressed reduce-scatter is the first half of the same schedules and all_gather_into_tensor
# encodes each part once, so the all-reduce bound covers both.
CODEC_BOUNDS = {"fp16": 3.7e-4, "bf16": 3.0e-3, "int8": 0.0175, "int4": 0.32}
LOSSY_DTYPES = ("float", "half", "bfloat16")  # what zcoll ever compresses (docs/compression.md)


def torch_op(op: str):
    import torch.distributed as dist
    return getattr(dist.ReduceOp, _TORCH_OPS[op])


def relerr_bound(codec: str, world: int, dtype: DType) -> float:
    """The documented codec bound at `world` ranks (the ring's, the larger of the two schedules),
    plus one rounding of the result to the tensor's dtype (the exact result is kept in float64)."""
    return CODEC_BOUNDS[codec] * max(1.0, math.sqrt(world / 2)) + dtype.unit_roundoff


# ---- verifiable inputs -----------------------------------------------------------------------


def _mix(rank: int, i: np.ndarray) -> np.ndarray:
    """A splitmix64-style hash of (rank, position): pseudo-random, yet a closed form every rank
    can evaluate for every other rank (uint64 arithmetic wraps around on purpose)."""
    x = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(((rank + 1) * 0xBF58476D1CE4E5B9) % 2**64)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return x


def rank_values(rank: int, n: int, length: int, dtype: DType, op: str | None, reduces: bool) -> np.ndarray:
    """Rank `rank`'s input (float64 or int64): small integers chosen so that every partial result
    of the collective is exactly representable in `dtype`, whatever the reduction order. So the
    expected output is exact and known in closed form, and any wrong element is a real error."""
    i = np.arange(length, dtype=np.int64)
    if reduces and op == "prod":
        # One rank (or none) holds a 2 at each position, the others a 1: products are 1 or 2,
        # exact in every type, and still depend on the position.
        owner = (_mix(-1, i) % np.uint64(n + 1)).astype(np.int64)
        v = np.where(owner == rank, 2, 1)
    else:
        # Below `exact` (its extreme is the sentinel of unwritten outputs), and small anyway.
        top = min(dtype.exact - 1, 1 << 20)
        if reduces and op in ("sum", "avg"):
            # |partial sums| <= n x max|v| <= top; avg inputs are multiples of n (sum / n exact).
            # (With many ranks and a narrow type, avg's inputs can only be 0.)
            limit = top // (n * n if op == "avg" else n)
        else:  # min, max, or data that is only moved
            limit = top
        if dtype.signed:
            v = (_mix(rank, i) % np.uint64(2 * limit + 1)).astype(np.int64) - limit
        else:
            v = (_mix(rank, i) % np.uint64(limit + 1)).astype(np.int64)
        if reduces and op == "avg":
            v = v * n
    return v.astype(np.float64 if dtype.floating else np.int64)


def gaussian_values(rank: int, length: int, dtype: DType, salt: int) -> np.ndarray:
    """Inputs of the lossy (compressed) cells: Gaussian, as the documented bounds assume, rounded
    to the tensor's dtype (returned as float64 holding the rounded values)."""
    import torch
    x = np.random.default_rng([rank, length, salt]).standard_normal(length)
    return torch.from_numpy(x).to(dtype.torch).double().numpy()


def reduce_values(op: str, parts, n: int) -> np.ndarray:
    """The reduction of the ranks' inputs (an iterable, consumed one at a time to bound memory)."""
    parts = iter(parts)
    acc = next(parts).copy()
    for p in parts:
        if op in ("sum", "avg"):
            acc += p
        elif op == "prod":
            acc *= p
        elif op == "max":
            np.maximum(acc, p, out=acc)
        else:
            np.minimum(acc, p, out=acc)
    if op == "avg":
        acc = acc / n if acc.dtype.kind == "f" else acc // n  # exact: sums are multiples of n
    return acc


# ---- buffers --------------------------------------------------------------------------------


@dataclass
class Buffers:
    inp: object   # torch tensor: this rank's input (may alias `out`)
    out: object   # torch tensor: where the result lands (a view when in-place)
    full: object  # the whole output-side allocation (for filling sentinels)


@dataclass(frozen=True)
class Collective:
    name: str
    aliases: tuple[str, ...]
    reduces: bool
    rooted: bool
    splits: bool        # count must be a multiple of the world size
    has_inplace: bool
    min_ranks: int
    factor: Callable[[int], float]  # algbw -> busbw
    doc: str

    def count_for(self, nbytes: int, n: int, itemsize: int) -> int:
        count = nbytes // itemsize
        return count - count % n if self.splits else count

    def input_len(self, count: int, n: int) -> int:
        return count // n if self.name == "all_gather" else count

    def output_len(self, count: int, n: int) -> int:
        return count // n if self.name == "reduce_scatter" else count

    def alloc(self, count: int, n: int, rank: int, dtype, inplace: bool, mpi: bool, device=None) -> Buffers:
        import torch
        m = count // n if self.splits else count
        if not inplace:
            inp = torch.empty(self.input_len(count, n), dtype=dtype, device=device)
            out = torch.empty(self.output_len(count, n), dtype=dtype, device=device)
            return Buffers(inp, out, out)
        buf = torch.empty(count, dtype=dtype, device=device)
        if self.name == "all_gather":
            return Buffers(buf[rank * m:(rank + 1) * m], buf, buf)
        if self.name == "reduce_scatter":
            # MPI_IN_PLACE leaves rank r's block at the front of the buffer; torch at its slot.
            view = buf[:m] if mpi else buf[rank * m:(rank + 1) * m]
            return Buffers(buf, view, buf)
        return Buffers(buf, buf, buf)

    def expected(self, values: Callable[[int, int], np.ndarray], op: str | None, count: int, n: int,
                 rank: int, root: int) -> np.ndarray | None:
        """What this rank's output must hold, given values(r, length) = rank r's input; None when
        this rank's output is undefined (reduce off the root)."""
        m = count // n if self.splits else count
        if self.name == "all_reduce":
            return reduce_values(op, (values(r, count) for r in range(n)), n)
        if self.name == "reduce":
            return reduce_values(op, (values(r, count) for r in range(n)), n) if rank == root else None
        if self.name == "reduce_scatter":
            return reduce_values(op, (values(r, count)[rank * m:(rank + 1) * m] for r in range(n)), n)
        if self.name == "all_gather":
            return np.concatenate([values(r, m) for r in range(n)])
        if self.name == "broadcast":
            return values(root, count)
        if self.name == "alltoall":
            return np.concatenate([values(r, count)[rank * m:(rank + 1) * m] for r in range(n)])
        if self.name == "sendrecv":
            return values((rank - 1) % n, count)
        raise AssertionError(self.name)

    # -- torch.distributed ----------------------------------------------------------------------

    def torch_call(self, b: Buffers, group, op: str | None, root: int, inplace: bool, rank: int, n: int):
        import torch.distributed as dist

        # torch 2.13 renamed the tensor forms (the old names warn); older torch has only those.
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        inp, out = b.inp, b.out
        rop = torch_op(op) if self.reduces else None
        # The group's rank numbering is the world's: every bench group spans all ranks.
        if self.name == "all_reduce":
            if inplace:
                return lambda: dist.all_reduce(out, op=rop, group=group)
            return lambda: (out.copy_(inp), dist.all_reduce(out, op=rop, group=group))
        if self.name == "reduce":
            if inplace:
                return lambda: dist.reduce(out, root, op=rop, group=group)
            return lambda: (out.copy_(inp), dist.reduce(out, root, op=rop, group=group))
        if self.name == "broadcast":
            if inplace or rank != root:
                return lambda: dist.broadcast(out, root, group=group)
            return lambda: (out.copy_(inp), dist.broadcast(out, root, group=group))
        if self.name == "all_gather":
            return lambda: gather(out, inp, group=group)
        if self.name == "reduce_scatter":
            return lambda: scatter(out, inp, op=rop, group=group)
        if self.name == "alltoall":
            return lambda: dist.all_to_all_single(out, inp, group=group)
        if self.name == "sendrecv":
            nxt, prv = (rank + 1) % n, (rank - 1) % n

            def ring():
                ops = [dist.P2POp(dist.isend, inp, nxt, group), dist.P2POp(dist.irecv, out, prv, group)]
                for work in dist.batch_isend_irecv(ops):
                    work.wait()
            return ring
        raise AssertionError(self.name)

    # -- DeepSpeed's shared-memory all-reduce ---------------------------------------------------

    def deepspeed_unsupported(self, dtype: DType, op: str | None, kernel_level: int) -> str | None:
        """Why deepspeed.comm.inference_all_reduce cannot run this cell on its shm kernel (where it
        would quietly run the process group's all_reduce instead), or None."""
        if self.name != "all_reduce":
            return "deepspeed: its shm path is all_reduce only"
        if dtype.name not in ("float", "half", "bfloat16"):
            return "deepspeed's shm all-reduce takes float, half and bfloat16 only"
        if op != "sum":
            return "deepspeed's shm all-reduce sums only"
        if kernel_level < (1 if dtype.name == "float" else 2):
            return f"deepspeed's shm kernel for {dtype.name} needs " + ("avx2" if dtype.name == "float" else "avx512bw")
        return None

    def deepspeed_call(self, b: Buffers, comm, inplace: bool):
        out, inp = b.out, b.inp
        if inplace:
            return lambda: comm.inference_all_reduce(out)
        return lambda: (out.copy_(inp), comm.inference_all_reduce(out))

    # -- MPI (mpi4py) ---------------------------------------------------------------------------

    def mpi_unsupported(self, dtype: DType, op: str | None) -> str | None:
        if dtype.name == "bfloat16":
            return "MPI has no bfloat16 datatype"
        if self.reduces and op == "avg":
            return "MPI has no average reduction"
        return None

    def mpi_call(self, b: Buffers, comm, op: str | None, root: int, inplace: bool, rank: int, n: int):
        from mpi4py import MPI

        inp, out = b.inp.numpy(), b.out.numpy()
        full = b.full.numpy()
        mop = getattr(MPI, _MPI_OPS[op]) if self.reduces else None
        if self.name == "all_reduce":
            if inplace:
                return lambda: comm.Allreduce(MPI.IN_PLACE, out, op=mop)
            return lambda: comm.Allreduce(inp, out, op=mop)
        if self.name == "reduce":
            if inplace:
                send = MPI.IN_PLACE if rank == root else out
                recv = out if rank == root else None
                return lambda: comm.Reduce(send, recv, op=mop, root=root)
            return lambda: comm.Reduce(inp, out, op=mop, root=root)
        if self.name == "broadcast":
            if inplace or rank != root:
                return lambda: comm.Bcast(out, root=root)
            return lambda: (np.copyto(out, inp), comm.Bcast(out, root=root))
        if self.name == "all_gather":
            if inplace:
                return lambda: comm.Allgather(MPI.IN_PLACE, full)
            return lambda: comm.Allgather(inp, out)
        if self.name == "reduce_scatter":
            if inplace:
                return lambda: comm.Reduce_scatter_block(MPI.IN_PLACE, full, op=mop)
            return lambda: comm.Reduce_scatter_block(inp, out, op=mop)
        if self.name == "alltoall":
            return lambda: comm.Alltoall(inp, out)
        if self.name == "sendrecv":
            nxt, prv = (rank + 1) % n, (rank - 1) % n
            return lambda: comm.Sendrecv(inp, dest=nxt, recvbuf=out, source=prv)
        raise AssertionError(self.name)


def _ring(n: int) -> float:
    return 2 * (n - 1) / n


def _split(n: int) -> float:
    return (n - 1) / n


def _one(n: int) -> float:
    return 1.0


COLLECTIVES = {c.name: c for c in (
    Collective("all_reduce", ("allreduce", "all_reduce_perf"), True, False, False, True, 1, _ring,
               "dist.all_reduce / MPI_Allreduce; busbw = algbw x 2(n-1)/n"),
    Collective("all_gather", ("allgather", "all_gather_perf", "all_gather_into_tensor"), False, False, True, True,
               1, _split, "dist.all_gather_into_tensor / MPI_Allgather; busbw = algbw x (n-1)/n"),
    Collective("reduce_scatter", ("reducescatter", "reduce_scatter_perf", "reduce_scatter_tensor"), True, False,
               True, True, 1, _split,
               "dist.reduce_scatter_tensor / MPI_Reduce_scatter_block; busbw = algbw x (n-1)/n"),
    Collective("broadcast", ("bcast", "broadcast_perf"), False, True, False, True, 1, _one,
               "dist.broadcast / MPI_Bcast; busbw = algbw"),
    Collective("reduce", ("reduce_perf",), True, True, False, True, 1, _one,
               "dist.reduce / MPI_Reduce; busbw = algbw"),
    Collective("alltoall", ("all_to_all", "alltoall_perf", "all_to_all_single"), False, False, True, False, 1,
               _split, "dist.all_to_all_single / MPI_Alltoall; busbw = algbw x (n-1)/n"),
    Collective("sendrecv", ("sendrecv_perf", "send_recv"), False, False, False, False, 2, _one,
               "ring: send to rank+1, receive from rank-1 (dist.batch_isend_irecv / MPI_Sendrecv); "
               "busbw = algbw"),
)}

ALIASES = {alias: c.name for c in COLLECTIVES.values() for alias in c.aliases}


def compresses(coll: Collective, codec: str, dtype: DType, op: str | None) -> bool:
    """Whether a zcoll group with this codec runs the cell lossily (docs/compression.md): floating
    SUM/AVG all-reduce and reduce-scatter, and all_gather_into_tensor; all else stays exact."""
    if codec == "none" or dtype.name not in LOSSY_DTYPES:
        return False
    if coll.name == "all_gather":
        return True
    return coll.name in ("all_reduce", "reduce_scatter") and op in ("sum", "avg")
