"""The native ring all-reduce (csrc/algorithms/ring) over real transports between processes
equals zcoll.reference's ring bit for bit (NaN payloads aside), for every dtype and op, with
chunk sizes that split segments into many pipelined messages or none."""
import numpy as np
import pytest
from contract_cases import (DTYPES, VALID_OPS, assert_matches, bits_of, dtype_kw, make_inputs, nan_of,
                            premul_factor, seed_of)
from multiproc import run_ranks

from zcoll import reference as R

SIZES = [0, 1, 5, 97, 1000, 40000]


def inputs_for(t, op, world, n):
    rng = np.random.default_rng(seed_of("ring", t, op, world, n))
    return make_inputs(t, world, n, rng)


def ranks_all_reduce(rank, world, store, kind, cases, chunk_bytes):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport(kind, store, "ring", rank, world, timeout=60)
    out = []
    for seq, (t, op, n) in enumerate(cases):
        x = inputs_for(t, op, world, n)[rank].copy()
        if op == "premul_sum":  # the backend scales locally before the reduction
            x = _C.premultiply(t, x, premul_factor(t))
        tr.ring_all_reduce(x, t, op, seq=seq, chunk_bytes=chunk_bytes, timeout=60)
        out.append(x)
    return out


def check(kind, world, cases, chunk_bytes):
    res = run_ranks(ranks_all_reduce, world, kind, cases, chunk_bytes, timeout=150)
    for i, (t, op, n) in enumerate(cases):
        premul = premul_factor(t) if op == "premul_sum" else None
        want = R.all_reduce(inputs_for(t, op, world, n), op, "ring", premul=premul, **dtype_kw(t))[0]
        for rank in range(world):
            assert_matches(t, res[rank][i], (bits_of(t, want), nan_of(t, want)),
                           f"{kind} p={world} rank {rank} {t} {op} n={n}")


ALL_CASES = [(t, op, n) for t in DTYPES for op in VALID_OPS[t] for n in SIZES]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_ring_all_reduce_every_dtype_and_op_shm(world):
    check("shm", world, ALL_CASES, chunk_bytes=4096)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_ring_all_reduce_chunking_does_not_change_results(chunk_bytes):
    cases = [("float32", "sum", 40000), ("bfloat16", "avg", 40000), ("float16", "sum", 1000)]
    check("shm", 3, cases, chunk_bytes)


@pytest.mark.timeout(200)
def test_ring_all_reduce_oversubscribed_8_ranks():
    check("shm", 8, [("float32", "sum", 40000), ("int64", "max", 1000), ("float16", "avg", 5)], 1 << 14)
