"""The c10d surface, call by call, as a table: every case runs the same torch.distributed call on
a zcoll group and on a gloo group of the same processes, so tests/test_gloo_parity.py can hold
zcoll to gloo's results and exception types (torch's contract as gloo implements it).

A case is `fn(rank, world, group) -> result`, where result is anything made of tensors, lists,
tuples, dicts and plain values. Inputs are small integers, so every sum, product and average is
exact in every dtype and reduction order: results must be equal bit for bit, whatever the
algorithm. Every case raises (or not) the same way on every rank that makes the call, so an
argument error on one backend cannot leave the other ranks waiting.

Where gloo is not the oracle, the case says why and gives zcoll's `expect(rank, world)` instead
(a result, or Raises(type)):
- gloo="refuses": gloo lacks what zcoll (and NCCL) has, e.g. PREMUL_SUM or int16; gloo must
  raise;
- gloo="wrong": gloo returns wrong data (e.g. it broadcasts a non-contiguous view's storage as
  if it were contiguous); gloo must still do so, so the note stays true;
- gloo="accepts": gloo takes a form torch deprecated and NCCL refuses (several tensors per rank:
  the old multi-device mode); zcoll refuses it as NCCL does, gloo must still take it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass
class Raises:
    """An expected exception: zcoll's must be an instance of `type`."""
    type: type


@dataclass
class Case:
    name: str
    fn: Callable[[int, int, Any], Any]
    expect: Callable[[int, int], Any] | None = None  # zcoll's result where gloo is not the oracle
    gloo: str | None = None  # "refuses", "wrong" or "accepts" (with expect)
    why: str = ""
    min_world: int = 1


CASES: list[Case] = []


def case(name, expect=None, gloo=None, why="", min_world=1):
    assert (expect is None) == (gloo is None) and gloo in (None, "refuses", "wrong", "accepts"), name
    assert gloo is None or why, name

    def register(fn):
        assert all(c.name != name for c in CASES), name
        CASES.append(Case(name, fn, expect, gloo, why, min_world))
        return fn
    return register


def rank_data(rank, shape, dtype, offset=0):
    """Small integers that differ per rank and position (bool: a per-rank pattern)."""
    n = 1
    for s in shape:
        n *= s
    v = (torch.arange(n, dtype=torch.int64) + 3 * rank + offset) % 7 + 1
    if dtype == torch.bool:
        return ((v + rank) % 3 == 0).reshape(shape)
    return v.to(dtype).reshape(shape)


def out_of_place(shape, dtype):
    """An output buffer holding a sentinel, so unwritten elements show."""
    if dtype == torch.bool:
        return torch.ones(shape, dtype=dtype)
    return torch.full(shape, -3 if dtype.is_signed or dtype.is_floating_point else 200, dtype=dtype)


def wait(work):
    if work is not None:
        work.wait()


# ---------------------------------------------------------------------------------------------
# all_reduce

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
          torch.int16, torch.int32, torch.int64, torch.bool)
OPS = {"sum": dist.ReduceOp.SUM, "product": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
       "max": dist.ReduceOp.MAX, "band": dist.ReduceOp.BAND, "bor": dist.ReduceOp.BOR,
       "bxor": dist.ReduceOp.BXOR}


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def reduce_exact(op, parts):
    """The exact reduction of the ranks' parts (int64 / bool arithmetic, then the parts' dtype)."""
    dtype = parts[0].dtype
    if dtype == torch.bool:
        fold = {"sum": torch.logical_or, "product": torch.logical_and, "min": torch.logical_and,
                "max": torch.logical_or, "band": torch.logical_and, "bor": torch.logical_or,
                "bxor": torch.logical_xor}[op]
    else:
        fold = {"sum": torch.add, "product": torch.mul, "min": torch.minimum, "max": torch.maximum,
                "band": torch.bitwise_and, "bor": torch.bitwise_or, "bxor": torch.bitwise_xor}[op]
    acc = parts[0] if dtype == torch.bool else parts[0].to(torch.int64)
    for p in parts[1:]:
        acc = fold(acc, p if dtype == torch.bool else p.to(torch.int64))
    return acc.to(dtype)


def _all_reduce_case(dtype, op):
    def run(rank, world, group):
        t = rank_data(rank, (3, 5), dtype)
        dist.all_reduce(t, op=OPS[op], group=group)
        return t

    def expect(rank, world):
        return reduce_exact(op, [rank_data(r, (3, 5), dtype) for r in range(world)])

    if dtype == torch.int16:
        case(f"all_reduce/{op}/int16", expect=expect, gloo="refuses", why="gloo has no int16 reductions")(run)
    else:
        case(f"all_reduce/{op}/{dtype_name(dtype)}")(run)


for _dtype in DTYPES:
    for _op in OPS:
        _all_reduce_case(_dtype, _op)


@case("all_reduce/avg/float32")
def _(rank, world, group):
    t = rank_data(rank, (4,), torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.AVG, group=group)
    return t


AVG_INT_WHY = "gloo's AVG makes a float it cannot store in an integer tensor; zcoll truncates (arithmetic.md §3)"


@case("all_reduce/avg/int32", gloo="refuses", why=AVG_INT_WHY,
      expect=lambda rank, world: reduce_exact("sum", [rank_data(r, (4,), torch.int32) for r in range(world)]))
def _(rank, world, group):
    t = rank_data(rank, (4,), torch.int32) * world
    dist.all_reduce(t, op=dist.ReduceOp.AVG, group=group)
    return t


@case("all_reduce/premul_sum/float64", gloo="refuses", why="gloo has no PREMUL_SUM (NCCL has; FSDP uses it)",
      expect=lambda rank, world: sum(rank_data(r, (4,), torch.float64) * 0.5 for r in range(world)))
def _(rank, world, group):
    t = rank_data(rank, (4,), torch.float64)
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(0.5), group=group)
    return t


@case("all_reduce/non_contiguous")
def _(rank, world, group):
    base = rank_data(rank, (4, 6), torch.float32)
    t = base.t()  # a transposed view: reduced in place through the view
    dist.all_reduce(t, group=group)
    return base


@case("all_reduce/scalar")
def _(rank, world, group):
    t = torch.tensor(rank + 1.0)
    dist.all_reduce(t, group=group)
    return t


@case("all_reduce/empty")
def _(rank, world, group):
    t = torch.ones(0, 3)
    dist.all_reduce(t, group=group)
    return t


@case("all_reduce/complex64")
def _(rank, world, group):
    t = torch.complex(rank_data(rank, (5,), torch.float32), rank_data(rank, (5,), torch.float32, 2))
    dist.all_reduce(t, group=group)
    return t


@case("all_reduce/complex_max_refused")
def _(rank, world, group):
    t = torch.ones(3, dtype=torch.complex64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


@case("all_reduce/async_future")
def _(rank, world, group):
    t = rank_data(rank, (7,), torch.int32)
    work = dist.all_reduce(t, group=group, async_op=True)
    value = work.get_future().wait()
    work.wait()
    return t, value, work.is_completed(), work.is_success()


@case("all_reduce/unsupported_dtype")
def _(rank, world, group):
    dist.all_reduce(torch.ones(4, dtype=torch.uint16), group=group)


def sparse_of(rank, dtype=torch.float32):
    """An uncoalesced sparse tensor whose indices and nnz differ per rank (index 1 twice)."""
    idx = [[1, 1 + rank, 1, 5]]
    return torch.sparse_coo_tensor(idx, rank_data(rank, (4,), dtype), (8,))


def sparse_result(t):
    return t.is_sparse, t.is_coalesced(), t._indices(), t._values(), t.to_dense()


@case("all_reduce/sparse")
def _(rank, world, group):
    t = sparse_of(rank)
    dist.all_reduce(t, group=group)
    return sparse_result(t)


@case("all_reduce/sparse_int64_async")
def _(rank, world, group):
    t = sparse_of(rank, torch.int64)
    work = dist.all_reduce(t, group=group, async_op=True)
    value = work.get_future().wait()[0]
    return sparse_result(t), sparse_result(value)


@case("all_reduce/sparse_hybrid")
def _(rank, world, group):
    # 2 sparse dims, 1 dense dim; rank r has r + 1 entries
    idx = torch.tensor([[q % 3 for q in range(rank + 1)], [1] * (rank + 1)])
    t = torch.sparse_coo_tensor(idx, rank_data(rank, (rank + 1, 2), torch.float64), (3, 2, 2))
    dist.all_reduce(t, group=group)
    return sparse_result(t)


@case("all_reduce/sparse_empty")
def _(rank, world, group):
    t = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0), (4,))
    dist.all_reduce(t, group=group)
    return sparse_result(t)


@case("all_reduce/sparse_max_refused")
def _(rank, world, group):
    dist.all_reduce(sparse_of(rank), op=dist.ReduceOp.MAX, group=group)


@case("all_reduce_coalesced/mixed")
def _(rank, world, group):
    ts = [rank_data(rank, (3,), torch.float32), rank_data(rank, (2, 2), torch.float32, 1)]
    dist.all_reduce_coalesced(ts, group=group)
    return ts


@case("all_reduce_coalesced/mixed_dtypes")
def _(rank, world, group):
    ts = [rank_data(rank, (3,), torch.float32), rank_data(rank, (2,), torch.int64)]
    dist.all_reduce_coalesced(ts, group=group)
    return ts


# ---------------------------------------------------------------------------------------------
# broadcast, reduce

def _broadcast_case(dtype, root):
    @case(f"broadcast/root{root}/{dtype_name(dtype)}", min_world=root + 1)
    def _(rank, world, group):
        t = rank_data(rank, (2, 3), dtype)
        dist.broadcast(t, src=root, group=group)
        return t


for _dtype in (torch.float32, torch.bfloat16, torch.int64, torch.bool):
    for _root in (0, 1):
        _broadcast_case(_dtype, _root)


def _broadcast_column_expect(rank, world):
    base = rank_data(rank, (3, 4), torch.float64)
    base[:, 1] = rank_data(1 % world, (3, 4), torch.float64)[:, 1]
    return base


@case("broadcast/non_contiguous", expect=_broadcast_column_expect, gloo="wrong",
      why="gloo sends and receives a non-contiguous view's storage as if it were contiguous")
def _(rank, world, group):
    base = rank_data(rank, (3, 4), torch.float64)
    dist.broadcast(base[:, 1], src=1 % world, group=group)
    return base


@case("broadcast/empty")
def _(rank, world, group):
    t = torch.ones(0)
    dist.broadcast(t, src=0, group=group)
    return t


@case("broadcast/bad_root")
def _(rank, world, group):
    dist.broadcast(torch.ones(2), src=world, group=group)


def _reduce_case(dtype, op, root):
    @case(f"reduce/{op}/root{root}/{dtype_name(dtype)}", min_world=root + 1)
    def _(rank, world, group):
        t = rank_data(rank, (2, 3), dtype)
        dist.reduce(t, dst=root, op=OPS[op], group=group)
        return t if rank == root else None  # only the root's tensor is defined afterwards (torch's docs)


for _dtype in (torch.float32, torch.int32, torch.bool):
    for _op in ("sum", "max", "product"):
        for _root in (0, 1):
            _reduce_case(_dtype, _op, _root)


@case("reduce/avg_float32")
def _(rank, world, group):
    t = rank_data(rank, (5,), torch.float32) * world
    dist.reduce(t, dst=0, op=dist.ReduceOp.AVG, group=group)
    return t if rank == 0 else None


@case("reduce/avg_int64", gloo="refuses", why=AVG_INT_WHY,
      expect=lambda rank, world: reduce_exact("sum", [rank_data(r, (5,), torch.int64) for r in range(world)])
      if rank == 0 else None)
def _(rank, world, group):
    t = rank_data(rank, (5,), torch.int64) * world
    dist.reduce(t, dst=0, op=dist.ReduceOp.AVG, group=group)
    return t if rank == 0 else None


@case("reduce/non_contiguous")
def _(rank, world, group):
    base = rank_data(rank, (4, 3), torch.float32)
    dist.reduce(base.t(), dst=0, group=group)
    return base if rank == 0 else None


@case("reduce/bad_root")
def _(rank, world, group):
    dist.reduce(torch.ones(2), dst=world + 3, group=group)


# ---------------------------------------------------------------------------------------------
# all_gather and its forms

INTO_WHY = "gloo takes only the [world * n, ...] output; zcoll, like NCCL, any output of world x numel elements"

@case("all_gather/float32")
def _(rank, world, group):
    outs = [out_of_place((2, 3), torch.float32) for _ in range(world)]
    dist.all_gather(outs, rank_data(rank, (2, 3), torch.float32), group=group)
    return outs


@case("all_gather/bool")
def _(rank, world, group):
    outs = [out_of_place((5,), torch.bool) for _ in range(world)]
    dist.all_gather(outs, rank_data(rank, (5,), torch.bool), group=group)
    return outs


@case("all_gather/non_contiguous")
def _(rank, world, group):
    bases = [out_of_place((2, 3), torch.int64) for _ in range(world)]
    dist.all_gather([b.t() for b in bases], rank_data(rank, (6, 2), torch.int64)[::2], group=group)
    return bases


@case("all_gather/scalar")
def _(rank, world, group):
    outs = [torch.tensor(-1.0) for _ in range(world)]
    dist.all_gather(outs, torch.tensor(float(rank)), group=group)
    return outs


@case("all_gather/empty")
def _(rank, world, group):
    outs = [torch.ones(0) for _ in range(world)]
    dist.all_gather(outs, torch.ones(0), group=group)
    return outs


@case("all_gather/complex")
def _(rank, world, group):
    outs = [torch.zeros(3, dtype=torch.complex64) for _ in range(world)]
    x = torch.complex(rank_data(rank, (3,), torch.float32), rank_data(rank, (3,), torch.float32, 1))
    dist.all_gather(outs, x, group=group)
    return outs


@case("all_gather/output_shape_differs_same_numel", gloo="refuses",
      why="gloo wants outputs of the input's shape; zcoll, like NCCL, of its element count",
      expect=lambda rank, world: [rank_data(q, (2, 3), torch.float32).reshape(3, 2) for q in range(world)])
def _(rank, world, group):
    outs = [out_of_place((3, 2), torch.float32) for _ in range(world)]
    dist.all_gather(outs, rank_data(rank, (2, 3), torch.float32), group=group)
    return outs


@case("all_gather/uneven_sizes")
def _(rank, world, group):
    outs = [out_of_place((r + 1,), torch.float32) for r in range(world)]
    dist.all_gather(outs, rank_data(rank, (rank + 1,), torch.float32), group=group)
    return outs


@case("all_gather/wrong_list_length")
def _(rank, world, group):
    outs = [out_of_place((2,), torch.float32) for _ in range(world + 1)]
    dist.all_gather(outs, rank_data(rank, (2,), torch.float32), group=group)
    return outs


@case("all_gather/dtype_mismatch")
def _(rank, world, group):
    outs = [out_of_place((2,), torch.float64) for _ in range(world)]
    dist.all_gather(outs, rank_data(rank, (2,), torch.float32), group=group)
    return outs


@case("all_gather/size_mismatch")
def _(rank, world, group):
    outs = [out_of_place((3,), torch.float32) for _ in range(world)]
    dist.all_gather(outs, rank_data(rank, (2,), torch.float32), group=group)
    return outs


@case("all_gather_into_tensor/flat", gloo="refuses", why=INTO_WHY,
      expect=lambda rank, world: torch.cat([rank_data(q, (2, 3), torch.float32).reshape(-1) for q in range(world)]))
def _(rank, world, group):
    out = out_of_place((world * 6,), torch.float32)
    dist.all_gather_into_tensor(out, rank_data(rank, (2, 3), torch.float32), group=group)
    return out


@case("all_gather_into_tensor/stacked", gloo="refuses", why=INTO_WHY,
      expect=lambda rank, world: torch.stack([rank_data(q, (2, 3), torch.int16) for q in range(world)]))
def _(rank, world, group):
    out = out_of_place((world, 2, 3), torch.int16)
    dist.all_gather_into_tensor(out, rank_data(rank, (2, 3), torch.int16), group=group)
    return out


@case("all_gather_into_tensor/concatenated_dim0")
def _(rank, world, group):
    out = out_of_place((world * 2, 3), torch.bfloat16)
    dist.all_gather_into_tensor(out, rank_data(rank, (2, 3), torch.bfloat16), group=group)
    return out


@case("all_gather_into_tensor/non_contiguous_input")
def _(rank, world, group):
    out = out_of_place((world * 2, 3), torch.float32)
    dist.all_gather_into_tensor(out, rank_data(rank, (3, 2), torch.float32).t(), group=group)
    return out


@case("all_gather_into_tensor/wrong_size")
def _(rank, world, group):
    out = out_of_place((world * 6 + 1,), torch.float32)
    dist.all_gather_into_tensor(out, rank_data(rank, (6,), torch.float32), group=group)
    return out


@case("all_gather_into_tensor/dtype_mismatch")
def _(rank, world, group):
    out = out_of_place((world * 6,), torch.float64)
    dist.all_gather_into_tensor(out, rank_data(rank, (6,), torch.float32), group=group)
    return out


@case("all_gather_into_tensor/empty")
def _(rank, world, group):
    out = torch.ones(0)
    dist.all_gather_into_tensor(out, torch.ones(0), group=group)
    return out


@case("all_gather_into_tensor/async")
def _(rank, world, group):
    out = out_of_place((world * 4,), torch.int64)
    work = dist.all_gather_into_tensor(out, rank_data(rank, (4,), torch.int64), group=group, async_op=True)
    work.wait()
    return out


def _gather_coalesced_case(name, inputs_of):
    @case(f"all_gather_coalesced/{name}")
    def _(rank, world, group):
        ins = inputs_of(rank)
        outs = [[out_of_place(t.shape, t.dtype) for t in inputs_of(0)] for _ in range(world)]
        dist.all_gather_coalesced(outs, ins, group=group)
        return outs


_gather_coalesced_case("one", lambda r: [rank_data(r, (3,), torch.float32)])
_gather_coalesced_case("two", lambda r: [rank_data(r, (2,), torch.float32), rank_data(r, (2,), torch.float32, 1)])
_gather_coalesced_case("three_shapes", lambda r: [rank_data(r, (1,), torch.float32),
                                                  rank_data(r, (2, 2), torch.float32, 1),
                                                  rank_data(r, (3, 3, 3), torch.float32, 2)])
_gather_coalesced_case("mixed_dtypes", lambda r: [rank_data(r, (2,), torch.float32),
                                                  rank_data(r, (3,), torch.int64, 1)])
_gather_coalesced_case("with_empty", lambda r: [rank_data(r, (2, 2), torch.float32), torch.ones(0),
                                                rank_data(r, (3,), torch.float32, 1), torch.ones(0)])


@case("all_gather_coalesced/complex")
def _(rank, world, group):
    ins = [torch.complex(rank_data(rank, (2,), torch.float32), rank_data(rank, (2,), torch.float32, 4))]
    outs = [[torch.zeros(2, dtype=torch.complex64)] for _ in range(world)]
    dist.all_gather_coalesced(outs, ins, group=group)
    return outs


@case("all_gather_coalesced/wrong_output_count")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32)]
    outs = [[out_of_place((2,), torch.float32)] for _ in range(world + 1)]
    dist.all_gather_coalesced(outs, ins, group=group)
    return outs


@case("all_gather_coalesced/wrong_inner_length")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32), rank_data(rank, (2,), torch.float32)]
    outs = [[out_of_place((2,), torch.float32)] for _ in range(world)]
    dist.all_gather_coalesced(outs, ins, group=group)
    return outs


@case("all_gather_coalesced/size_mismatch")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32)]
    outs = [[out_of_place((3,), torch.float32)] for _ in range(world)]
    dist.all_gather_coalesced(outs, ins, group=group)
    return outs


@case("all_gather_coalesced/dtype_mismatch")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32)]
    outs = [[out_of_place((2,), torch.int32)] for _ in range(world)]
    dist.all_gather_coalesced(outs, ins, group=group)
    return outs


@case("all_gather_coalesced/no_inputs")
def _(rank, world, group):
    outs = [[] for _ in range(world)]
    dist.all_gather_coalesced(outs, [], group=group)
    return outs


@case("all_gather_object")
def _(rank, world, group):
    objs = [None] * world
    dist.all_gather_object(objs, {"rank": rank, "payload": list(range(rank * 3))}, group=group)
    return objs


@case("broadcast_object_list")
def _(rank, world, group):
    objs = [f"from {rank}", {"x": rank}, None]
    dist.broadcast_object_list(objs, src=world - 1, group=group)
    return objs


# ---------------------------------------------------------------------------------------------
# gather, scatter

@case("gather/root0")
def _(rank, world, group):
    outs = [out_of_place((2, 2), torch.float32) for _ in range(world)] if rank == 0 else None
    dist.gather(rank_data(rank, (2, 2), torch.float32), outs, dst=0, group=group)
    return outs


@case("gather/root_last_int64")
def _(rank, world, group):
    root = world - 1
    outs = [out_of_place((3,), torch.int64) for _ in range(world)] if rank == root else None
    dist.gather(rank_data(rank, (3,), torch.int64), outs, dst=root, group=group)
    return outs


@case("gather/non_contiguous")
def _(rank, world, group):
    bases = [out_of_place((3, 2), torch.float32) for _ in range(world)]
    outs = [b.t() for b in bases] if rank == 0 else None
    dist.gather(rank_data(rank, (3, 2), torch.float32).t(), outs, dst=0, group=group)
    return bases if rank == 0 else None


@case("gather/wrong_list_length")
def _(rank, world, group):
    if rank != 0:  # the root's check fails; the others must not wait for it
        return None
    outs = [out_of_place((2,), torch.float32) for _ in range(world + 1)]
    dist.gather(rank_data(rank, (2,), torch.float32), outs, dst=0, group=group)
    return outs


@case("gather/size_mismatch")
def _(rank, world, group):
    if rank != 0:  # the root's check fails; the others must not wait for it
        return None
    outs = [out_of_place((3,), torch.float32) for _ in range(world)]
    dist.gather(rank_data(rank, (2,), torch.float32), outs, dst=0, group=group)
    return outs


@case("gather_object")
def _(rank, world, group):
    objs = [None] * world if rank == 0 else None
    dist.gather_object(("rank", rank), objs, dst=0, group=group)
    return objs


@case("scatter/root0")
def _(rank, world, group):
    ins = [rank_data(r, (2, 3), torch.float32) for r in range(world)] if rank == 0 else None
    out = out_of_place((2, 3), torch.float32)
    dist.scatter(out, ins, src=0, group=group)
    return out


@case("scatter/root_last_uint8")
def _(rank, world, group):
    root = world - 1
    ins = [rank_data(r, (4,), torch.uint8) for r in range(world)] if rank == root else None
    out = out_of_place((4,), torch.uint8)
    dist.scatter(out, ins, src=root, group=group)
    return out


@case("scatter/non_contiguous")
def _(rank, world, group):
    ins = [rank_data(r, (3, 2), torch.float32).t() for r in range(world)] if rank == 0 else None
    base = out_of_place((3, 2), torch.float32)
    dist.scatter(base.t(), ins, src=0, group=group)
    return base


@case("scatter/wrong_list_length")
def _(rank, world, group):
    if rank != 0:
        return None
    ins = [rank_data(r, (2,), torch.float32) for r in range(world + 1)]
    dist.scatter(out_of_place((2,), torch.float32), ins, src=0, group=group)


@case("scatter/size_mismatch")
def _(rank, world, group):
    if rank != 0:
        return None
    ins = [rank_data(r, (3,), torch.float32) for r in range(world)]
    dist.scatter(out_of_place((2,), torch.float32), ins, src=0, group=group)


@case("scatter_object_list")
def _(rank, world, group):
    out = [None]
    dist.scatter_object_list(out, [{"to": r} for r in range(world)] if rank == 0 else None, src=0, group=group)
    return out


# ---------------------------------------------------------------------------------------------
# reduce_scatter and its forms

@case("reduce_scatter_tensor/flat")
def _(rank, world, group):
    out = out_of_place((4,), torch.float32)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world * 4,), torch.float32), group=group)
    return out


@case("reduce_scatter_tensor/stacked_max", gloo="refuses",
      why="gloo takes only the [world * n, ...] input; zcoll, like NCCL, any input of world x numel elements",
      expect=lambda rank, world: reduce_exact("max", [rank_data(r, (world, 2, 3), torch.int32)
                                                      for r in range(world)])[rank])
def _(rank, world, group):
    out = out_of_place((2, 3), torch.int32)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world, 2, 3), torch.int32), op=dist.ReduceOp.MAX, group=group)
    return out


@case("reduce_scatter_tensor/avg")
def _(rank, world, group):
    out = out_of_place((4,), torch.float32)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world * 4,), torch.float32) * world, op=dist.ReduceOp.AVG,
                               group=group)
    return out


@case("reduce_scatter_tensor/premul_sum", gloo="refuses", why="gloo has no PREMUL_SUM (NCCL has; FSDP uses it)",
      expect=lambda rank, world: sum(rank_data(r, (world * 4,), torch.float32) * 0.5
                                     for r in range(world)).reshape(world, 4)[rank])
def _(rank, world, group):
    out = out_of_place((4,), torch.float32)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world * 4,), torch.float32), op=dist._make_nccl_premul_sum(0.5),
                               group=group)
    return out


@case("reduce_scatter_tensor/wrong_size")
def _(rank, world, group):
    out = out_of_place((4,), torch.float32)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world * 4 + 2,), torch.float32), group=group)
    return out


@case("reduce_scatter_tensor/dtype_mismatch")
def _(rank, world, group):
    out = out_of_place((4,), torch.float64)
    dist.reduce_scatter_tensor(out, rank_data(rank, (world * 4,), torch.float32), group=group)
    return out


@case("reduce_scatter/list")
def _(rank, world, group):
    out = out_of_place((3,), torch.float32)
    dist.reduce_scatter(out, [rank_data(rank, (3,), torch.float32, q) for q in range(world)], group=group)
    return out


# ---------------------------------------------------------------------------------------------
# all_to_all

@case("all_to_all_single/even")
def _(rank, world, group):
    out = out_of_place((world * 2, 3), torch.float32)
    dist.all_to_all_single(out, rank_data(rank, (world * 2, 3), torch.float32), group=group)
    return out


@case("all_to_all_single/uneven")
def _(rank, world, group):
    # rank r sends q + 1 rows to rank q; so it receives r + 1 rows from everyone
    in_splits = [q + 1 for q in range(world)]
    out_splits = [rank + 1] * world
    out = out_of_place((sum(out_splits), 2), torch.int64)
    dist.all_to_all_single(out, rank_data(rank, (sum(in_splits), 2), torch.int64), out_splits, in_splits,
                           group=group)
    return out


@case("all_to_all_single/zero_rows")
def _(rank, world, group):
    # rank 0 sends nothing and receives nothing (an MoE rank without tokens)
    in_splits = [0 if rank == 0 or q == 0 else 1 for q in range(world)]
    out_splits = [0 if rank == 0 or q == 0 else 1 for q in range(world)]
    out = out_of_place((sum(out_splits), 3), torch.float32)
    dist.all_to_all_single(out, rank_data(rank, (sum(in_splits), 3), torch.float32), out_splits, in_splits,
                           group=group)
    return out


@case("all_to_all_single/bad_splits")
def _(rank, world, group):
    out = out_of_place((world, 2), torch.float32)
    dist.all_to_all_single(out, rank_data(rank, (world, 2), torch.float32), [1] * world, [2] * world, group=group)
    return out


@case("all_to_all_single/indivisible", expect=lambda rank, world: Raises(ValueError), gloo="wrong",
      why="gloo returns uninitialised memory when dim 0 does not split evenly")
def _(rank, world, group):
    out = out_of_place((world + 1,), torch.float32)
    dist.all_to_all_single(out, rank_data(rank, (world + 1,), torch.float32), group=group)
    return out


@case("all_to_all/list", gloo="refuses", why="gloo's all_to_all wants equal sizes; zcoll, like NCCL, any",
      expect=lambda rank, world: [rank_data(q, (rank + 1,), torch.float32, rank) for q in range(world)])
def _(rank, world, group):
    ins = [rank_data(rank, (q + 1,), torch.float32, q) for q in range(world)]
    outs = [out_of_place((rank + 1,), torch.float32) for _ in range(world)]
    dist.all_to_all(outs, ins, group=group)
    return outs


# ---------------------------------------------------------------------------------------------
# barrier, point-to-point

@case("barrier")
def _(rank, world, group):
    dist.barrier(group=group)
    work = dist.barrier(group=group, async_op=True)
    work.wait()
    return work.is_completed()


@case("monitored_barrier")
def _(rank, world, group):
    from datetime import timedelta
    group.monitored_barrier(timedelta(seconds=30))
    group.monitored_barrier(timedelta(seconds=30), wait_all_ranks=True)


@case("send_recv/tags")
def _(rank, world, group):
    peer = (rank + 1) % world
    src = (rank - 1) % world
    got = [out_of_place((3,), torch.float32) for _ in range(2)]
    reqs = [dist.isend(rank_data(rank, (3,), torch.float32, tag), peer, group=group, tag=tag) for tag in (5, 9)]
    dist.recv(got[1], src, group=group, tag=9)
    dist.recv(got[0], src, group=group, tag=5)
    for r in reqs:
        r.wait()
    return got


@case("recv/any_source")
def _(rank, world, group):
    if rank == 0:
        got = []
        for _ in range(world - 1):
            t = out_of_place((2,), torch.float32)
            src = dist.recv(t, group=group)
            got.append((src, t))
        return sorted(got, key=lambda x: x[0])
    dist.send(rank_data(rank, (2,), torch.float32), 0, group=group)
    return None


@case("batch_isend_irecv/ring")
def _(rank, world, group):
    got = out_of_place((4,), torch.int32)
    ops = [dist.P2POp(dist.isend, rank_data(rank, (4,), torch.int32), (rank + 1) % world, group),
           dist.P2POp(dist.irecv, got, (rank - 1) % world, group)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    return got


@case("send/to_self")
def _(rank, world, group):
    dist.send(torch.ones(2), rank, group=group)


@case("recv/bad_peer")
def _(rank, world, group):
    dist.recv(torch.ones(2), world + 5, group=group)


# ---------------------------------------------------------------------------------------------
# coalesced forms through torch's coalescing manager (FSDP / DTensor use them)

@case("coalescing_manager/all_gather_into_tensor")
def _(rank, world, group):
    outs = [out_of_place((world * 2,), torch.float32), out_of_place((world * 3,), torch.float32)]
    ins = [rank_data(rank, (2,), torch.float32), rank_data(rank, (3,), torch.float32, 1)]
    with dist._coalescing_manager(group=group, async_ops=True) as cm:
        for o, i in zip(outs, ins):
            dist.all_gather_into_tensor(o, i, group=group)
    cm.wait()
    return outs


@case("coalescing_manager/reduce_scatter_tensor")
def _(rank, world, group):
    outs = [out_of_place((2,), torch.float32), out_of_place((3,), torch.float32)]
    ins = [rank_data(rank, (world * 2,), torch.float32), rank_data(rank, (world * 3,), torch.float32, 1)]
    with dist._coalescing_manager(group=group, async_ops=True) as cm:
        for o, i in zip(outs, ins):
            dist.reduce_scatter_tensor(o, i, group=group)
    cm.wait()
    return outs


@case("coalescing_manager/all_reduce")
def _(rank, world, group):
    ts = [rank_data(rank, (2,), torch.float32), rank_data(rank, (5,), torch.float32, 1)]
    with dist._coalescing_manager(group=group, async_ops=True) as cm:
        for t in ts:
            dist.all_reduce(t, group=group)
    cm.wait()
    return ts


# ---------------------------------------------------------------------------------------------
# the ProcessGroup methods themselves, with argument forms torch's Python functions never make

MULTI_DEVICE = "several tensors per rank is torch's deprecated multi-device mode; NCCL refuses it"


@case("pg.allreduce/two_tensors", expect=lambda rank, world: Raises(ValueError), gloo="accepts", why=MULTI_DEVICE)
def _(rank, world, group):
    ts = [rank_data(rank, (3,), torch.float32), rank_data(rank, (3,), torch.float32, 1)]
    group.allreduce(ts).wait()
    return ts


@case("pg.broadcast/two_tensors", expect=lambda rank, world: Raises(ValueError), gloo="accepts", why=MULTI_DEVICE)
def _(rank, world, group):
    ts = [rank_data(rank, (3,), torch.float32), rank_data(rank, (3,), torch.float32, 1)]
    group.broadcast(ts).wait()
    return ts


@case("pg.allgather/two_inputs")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32), rank_data(rank, (2,), torch.float32, 1)]
    outs = [[out_of_place((2,), torch.float32) for _ in range(world)] for _ in ins]
    group.allgather(outs, ins).wait()
    return outs


@case("pg.allgather_coalesced/mixed_dtypes")
def _(rank, world, group):
    ins = [rank_data(rank, (2,), torch.float32), rank_data(rank, (3,), torch.int64, 1),
           rank_data(rank, (2, 2), torch.bool)]
    outs = [[out_of_place(t.shape, t.dtype) for t in ins] for _ in range(world)]
    group.allgather_coalesced(outs, ins).wait()
    return outs


@case("pg.allgather_coalesced/empty_only")
def _(rank, world, group):
    ins = [torch.ones(0), torch.ones(0, 3)]
    outs = [[torch.ones(0), torch.ones(0, 3)] for _ in range(world)]
    group.allgather_coalesced(outs, ins).wait()
    return outs


@case("pg.reduce_scatter/two_outputs")
def _(rank, world, group):
    outs = [out_of_place((2,), torch.float32) for _ in range(2)]
    ins = [[rank_data(rank, (2,), torch.float32, q) for q in range(world)] for _ in outs]
    group.reduce_scatter(outs, ins).wait()
    return outs


# ---------------------------------------------------------------------------------------------
# running the table

def type_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def freeze(value):
    """A plain, picklable twin of a result: tensors become (dtype, shape, bytes)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous()
        if t.dtype == torch.bool:  # by value: gloo's bool SUM leaves bytes of 2 for True
            t = t != 0
        return ("tensor", str(t.dtype), tuple(t.shape), t.view(-1).view(torch.uint8).numpy().tobytes()
                if t.numel() else b"")
    if isinstance(value, (list, tuple)):
        return type(value)(freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: freeze(v) for k, v in value.items()}
    return value


def outcome(fn, *args):
    """("ok", frozen result) or ("raised", [names of the exception's classes, its MRO], message)."""
    try:
        return ("ok", freeze(fn(*args)))
    except Exception as e:  # noqa: BLE001  (the comparison needs every kind)
        return ("raised", [type_name(c) for c in type(e).__mro__], str(e).split("\n")[0][:300])


def run_table(rank, world, store, transport):
    """Runs every case on a zcoll world group and a gloo group of the same ranks; returns
    {name: (zcoll outcome, gloo outcome, zcoll's expected result or None)}, and last, under
    GROUPS_STILL_WORK, whether both groups still work after all the refused calls."""
    import warnings
    from datetime import timedelta

    import zcoll
    warnings.simplefilter("ignore")  # torch's deprecation warnings for the coalesced calls
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(transport=transport))
    gloo = dist.new_group(backend="gloo", timeout=timedelta(seconds=60))
    zc = dist.group.WORLD
    results = {}
    for c in CASES:
        if world >= c.min_world:
            results[c.name] = (outcome(c.fn, rank, world, zc), outcome(c.fn, rank, world, gloo),
                               freeze(c.expect(rank, world)) if c.expect else None)

    def still_works(group):
        t = torch.ones(3)
        dist.all_reduce(t, group=group)
        return t
    results[GROUPS_STILL_WORK] = (outcome(still_works, zc), outcome(still_works, gloo), None)
    dist.destroy_process_group()
    return results


GROUPS_STILL_WORK = "(both groups still work)"
