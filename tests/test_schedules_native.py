"""The native schedules (csrc/algorithms: ring, tree, one-shot, two-shot all-reduce; ring and
two-shot reduce-scatter; tree and one-shot reduce) over real transports between processes equal
zcoll.reference's same algorithm bit for bit (NaN payloads aside), for every dtype and op, with
chunk sizes that split segments into many pipelined messages or none."""
import numpy as np
import pytest
from contract_cases import (DTYPES, VALID_OPS, assert_matches, bits_of, dtype_kw, make_inputs, nan_of,
                            premul_factor, seed_of)
from multiproc import run_ranks

from zcoll import reference as R

SIZES = [0, 1, 5, 97, 1000, 40000]
ALL_REDUCE_ALGOS = ("ring", "tree", "oneshot", "twoshot")


def inputs_for(t, op, world, n, salt="allreduce"):
    rng = np.random.default_rng(seed_of(salt, t, op, world, n))
    return make_inputs(t, world, n, rng)


def scaled(_C, t, op, x):
    """PREMUL_SUM's local step: the backend scales before any schedule runs."""
    return _C.premultiply(t, x, premul_factor(t)) if op == "premul_sum" else x


def ranks_run(rank, world, store, kind, cases, chunk_bytes):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport(kind, store, "sched", rank, world, timeout=60)
    out = []
    for seq, (coll, algo, t, op, n, root) in enumerate(cases):
        x = scaled(_C, t, op, inputs_for(t, op, world, n, coll)[rank].copy())
        kw = dict(seq=seq, chunk_bytes=chunk_bytes, timeout=60)
        if coll == "allreduce":
            tr.all_reduce(x, t, op, algo, **kw)
        elif coll == "reduce_scatter":
            tr.reduce_scatter(x, [n // world] * world, t, op, algo, **kw)
            x = x[rank * (n // world):(rank + 1) * (n // world)]
        else:
            tr.reduce(x, root, t, op, algo, **kw)
        out.append(x)
    return out


def expected(coll, algo, t, op, world, n, root):
    premul = premul_factor(t) if op == "premul_sum" else None
    xs = inputs_for(t, op, world, n, coll)
    if coll == "allreduce":
        return [R.all_reduce(xs, op, algo, premul=premul, **dtype_kw(t))[0]] * world
    if coll == "reduce_scatter":
        return R.reduce_scatter(xs, op, algo, premul=premul, **dtype_kw(t))
    return {root: R.reduce(xs, root, op, algo, premul=premul, **dtype_kw(t))}


def check(kind, world, cases, chunk_bytes=4096):
    res = run_ranks(ranks_run, world, kind, cases, chunk_bytes, timeout=150)
    for i, case in enumerate(cases):
        coll, algo, t, op, n, root = case
        want = expected(coll, algo, t, op, world, n, root)
        ranks = [root] if coll == "reduce" else range(world)
        for rank in ranks:
            w = want[rank] if isinstance(want, list) else want[rank]
            assert_matches(t, res[rank][i], (bits_of(t, w), nan_of(t, w)),
                           f"{kind} p={world} rank {rank} {coll} {algo} {t} {op} n={n}")


def all_reduce_cases(algo, sizes=SIZES):
    return [("allreduce", algo, t, op, n, 0) for t in DTYPES for op in VALID_OPS[t] for n in sizes]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_all_reduce_every_dtype_and_op_shm(world, algo):
    check("shm", world, all_reduce_cases(algo))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", ALL_REDUCE_ALGOS)
def test_all_reduce_tcp(algo):
    cases = [c for c in all_reduce_cases(algo, [1, 1000]) if c[2] in ("float32", "bfloat16", "int64", "bool")]
    check("tcp", 3, cases)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("algo", ALL_REDUCE_ALGOS)
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_chunking_does_not_change_results(chunk_bytes, algo):
    cases = [("allreduce", algo, t, op, n, 0)
             for t, op, n in [("float32", "sum", 40000), ("bfloat16", "avg", 40000), ("float16", "sum", 1000)]]
    check("shm", 3, cases, chunk_bytes)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [5, 8])
def test_oversubscribed_ranks_every_algorithm(world):
    cases = [("allreduce", algo, t, op, n, 0) for algo in ALL_REDUCE_ALGOS
             for t, op, n in [("float32", "sum", 40000), ("int64", "max", 1000), ("float16", "avg", 5)]]
    cases += [("reduce", algo, "float32", "sum", 3000, root) for algo in ("tree", "oneshot") for root in (0, world - 1)]
    check("shm", world, cases, 1 << 14)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_reduce_scatter_and_reduce_every_dtype_and_op(world):
    cases = []
    for t in DTYPES:
        for op in VALID_OPS[t]:
            for n in (0, world * 7, world * 1000):
                cases += [("reduce_scatter", algo, t, op, n, 0) for algo in ("ring", "twoshot")]
            cases += [("reduce", algo, t, op, 1000, root) for algo in ("tree", "oneshot") for root in range(world)]
    check("shm", world, cases)


class DictStore:
    def __init__(self):
        self.d = {}

    def set(self, k, v):
        self.d[k] = v

    def get(self, k):
        return self.d[k]

    def check(self, keys):
        return all(k in self.d for k in keys)


def test_unknown_or_unsupported_algorithms_raise():
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport("shm", DictStore(), "alone", 0, 1)
    x = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="unknown algorithm 'fast'"):
        tr.all_reduce(x, "float32", "sum", "fast")
    with pytest.raises(RuntimeError, match="reduce_scatter has no tree algorithm"):
        tr.reduce_scatter(x, [8], "float32", "sum", "tree")
    with pytest.raises(RuntimeError, match="reduce has no ring algorithm"):
        tr.reduce(x, 0, "float32", "sum", "ring")
    with pytest.raises(ValueError, match="one slice per rank and add up"):
        tr.reduce_scatter(x, [4, 4], "float32", "sum", "ring")
    with pytest.raises(ValueError, match="one slice per rank and add up"):
        tr.reduce_scatter(x, [7], "float32", "sum", "ring")
    with pytest.raises(ValueError, match="unknown collective 'gather'"):
        _C.tune("gather", 4096, 2, "shm")


@pytest.mark.parametrize("coll", ["allreduce", "reduce", "reduce_scatter"])
def test_tuner_choices_are_algorithms_of_the_collective(coll):
    from zcoll import _C
    from zcoll.config import ALGORITHMS
    for ranks in (2, 3, 4, 8, 16):
        for transport in ("shm", "tcp"):
            for bytes_ in (0, 4, 4096, 1 << 16, 1 << 18, 1 << 22, 1 << 26):
                algo, chunk = _C.tune(coll, bytes_, ranks, transport)
                assert algo in ALGORITHMS[coll], (coll, ranks, transport, bytes_, algo)
                assert chunk > 0
