"""The native compressed all-reduce schedules (csrc/algorithms/compressed: ring and two-shot,
every codec) over real transports equal zcoll.reference's compressed all_reduce bit for bit,
whatever the chunk size; NaN and inf inputs come out as NaN, never as finite numbers."""
import numpy as np
import pytest
from contract_cases import seed_of
from multiproc import run_ranks

from zcoll import reference as R

CODECS = ("fp16", "bf16", "int8", "int4")
SIZES = [0, 1, 100, 1000, 40000]


def inputs_for(world, n, salt):
    rng = np.random.default_rng(seed_of("compressed", world, n, salt))
    return [(rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)).astype(np.float32) for _ in range(world)]


def ranks_run(rank, world, store, kind, cases, chunk_bytes):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport(kind, store, "compressed", rank, world, timeout=60)
    out = []
    for seq, (codec, algo, op, n, block, salt) in enumerate(cases):
        x = inputs_for(world, n, salt)[rank].copy()
        if salt == "special" and n > 50:
            x[7], x[30] = np.nan, np.inf
        tr.compressed_all_reduce(x, codec, op, algo, block=block, seed=11, step=seq, seq=seq,
                                 chunk_bytes=chunk_bytes, timeout=60)
        out.append(x)
    return out


def expected(world, case, step):
    codec, algo, op, n, block, salt = case
    xs = inputs_for(world, n, salt)
    if salt == "special" and n > 50:
        for x in xs:
            x[7], x[30] = np.nan, np.inf
    return R.all_reduce(xs, op, algo, codec=codec, block=block, seed=11, step=step)[0]


def check(kind, world, cases, chunk_bytes=4096):
    """Runs the cases and compares every rank's result with the reference; returns the results."""
    res = run_ranks(ranks_run, world, kind, cases, chunk_bytes, timeout=200)
    for i, case in enumerate(cases):
        want = expected(world, case, i)
        for rank in range(world):
            got = res[rank][i]
            assert np.array_equal(np.isnan(got), np.isnan(want)), f"{kind} p={world} rank {rank} {case}: NaNs"
            np.testing.assert_array_equal(got[~np.isnan(got)].view(np.uint32), want[~np.isnan(want)].view(np.uint32),
                                          err_msg=f"{kind} p={world} rank {rank} {case}")
    return res


def cases_for(algos, sizes=SIZES, blocks=(256,)):
    return [(codec, algo, op, n, block, "plain") for codec in CODECS for algo in algos for op in ("sum", "avg")
            for n in sizes for block in (blocks if codec in ("int8", "int4") else (256,))]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_codec_and_schedule_shm(world):
    check("shm", world, cases_for(("ring", "twoshot"), blocks=(64, 256)))


@pytest.mark.timeout(300)
def test_tcp():
    check("tcp", 3, cases_for(("ring", "twoshot"), sizes=[1000, 40000]))


@pytest.mark.timeout(300)
def test_two_shot_at_8_ranks():
    check("shm", 8, cases_for(("twoshot",), sizes=[1000, 40000]))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_chunking_does_not_change_results(chunk_bytes):
    check("shm", 3, [c for c in cases_for(("ring", "twoshot"), sizes=[40000], blocks=(16, 256))], chunk_bytes)


@pytest.mark.timeout(300)
def test_nan_and_inf_never_become_finite():
    cases = [(codec, algo, "sum", 1000, 64, "special") for codec in CODECS for algo in ("ring", "twoshot")]
    res = check("shm", 3, cases)
    for i, (codec, *_rest) in enumerate(cases):
        got = res[0][i]
        if codec in ("int8", "int4"):  # the whole block holding a NaN or inf decodes to NaN
            assert np.isnan(got[:64]).all(), codec
        else:  # casts keep them element by element: NaN + inf = NaN, inf + inf = inf
            assert np.isnan(got[7]) and not np.isfinite(got[30]), codec


def test_bad_arguments_raise():
    import torch  # noqa: F401

    from test_schedules_native import DictStore
    from zcoll import _C
    tr = _C.Transport("shm", DictStore(), "alone", 0, 1)
    x = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="unknown codec 'int2'"):
        tr.compressed_all_reduce(x, "int2", "sum", "ring")
    with pytest.raises(RuntimeError, match="only sum and avg are compressed, not max"):
        tr.compressed_all_reduce(x, "int8", "max", "ring")
    with pytest.raises(RuntimeError, match="compressed all-reduce has no tree algorithm"):
        tr.compressed_all_reduce(x, "int8", "sum", "tree")
    with pytest.raises(RuntimeError, match="block size must be a multiple of 16"):
        tr.compressed_all_reduce(x, "int8", "sum", "ring", block=20)
    with pytest.raises(ValueError, match="residual must be a writeable contiguous float32 array the size of data"):
        tr.compressed_all_reduce(x, "int8", "sum", "ring", residual=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="residual must be"):
        tr.compressed_all_reduce(x, "int8", "sum", "ring", residual=np.zeros(8, np.float64))


def ranks_rs_ag(rank, world, store, cases):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport("shm", store, "compressed-rs", rank, world, timeout=60)
    out = []
    for seq, (kind, codec, algo, op, m) in enumerate(cases):
        counts = [m] * world
        if kind == "rs":
            x = inputs_for(world, world * m, seq)[rank].copy()
            tr.compressed_reduce_scatter(x, counts, codec, op, algo, block=64, seed=5, step=seq, seq=seq,
                                         chunk_bytes=1024)
            out.append(x[rank * m:(rank + 1) * m].copy())
        else:
            x = np.zeros(world * m, np.float32)
            x[rank * m:(rank + 1) * m] = inputs_for(world, m, seq)[rank]
            tr.compressed_all_gather(x, counts, codec, block=64, seed=5, step=seq, seq=seq, chunk_bytes=1024)
            out.append(x)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_reduce_scatter_and_all_gather(world):
    """FSDP's traffic: compressed reduce-scatter (ring and two-shot halves, the owner keeps its
    float32 sum) and all-gather (each slice encoded once, decoded by every rank)."""
    cases = [("rs", codec, algo, op, m) for codec in CODECS for algo in ("ring", "twoshot") for op in ("sum", "avg")
             for m in (0, 1, 300, 5000)]
    cases += [("ag", codec, None, None, m) for codec in CODECS for m in (0, 1, 300, 5000)]
    res = run_ranks(ranks_rs_ag, world, cases, timeout=200)
    for i, (kind, codec, algo, op, m) in enumerate(cases):
        if kind == "rs":
            want = R.reduce_scatter(inputs_for(world, world * m, i), op, algo, codec=codec, block=64, seed=5, step=i)
        else:
            want = R.all_gather(inputs_for(world, m, i), codec=codec, block=64, seed=5, step=i)
        for r in range(world):
            np.testing.assert_array_equal(res[r][i].view(np.uint32), want[r].view(np.uint32),
                                          err_msg=f"p={world} rank {r} {cases[i]}")


def ranks_feedback(rank, world, store, cases):
    import torch  # noqa: F401

    from zcoll import _C
    tr = _C.Transport("shm", store, "compressed-ef", rank, world, timeout=60)
    out = []
    for seq, (kind, codec, algo, op, n) in enumerate(cases):
        x = inputs_for(world, n, seq)[rank].copy()
        e = inputs_for(world, n, f"residual{seq}")[rank] * np.float32(1e-2)
        kw = dict(block=64, seed=3, step=seq, seq=seq, chunk_bytes=2048, residual=e)
        if kind == "ar":
            tr.compressed_all_reduce(x, codec, op, algo, **kw)
        else:
            tr.compressed_reduce_scatter(x, [n // world] * world, codec, op, algo, **kw)
            x = x[rank * (n // world):(rank + 1) * (n // world)].copy()
        out.append((x, e))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_error_feedback_equals_reference(world):
    """With a residual, the collective runs on x + e and each rank's new residual (v - D(E(v)) at
    the positions it encodes, p times that for an AVG result) equals the reference's, bit for bit;
    and the residuals of all ranks add up to the collective's error (arithmetic.md §6)."""
    n = world * 1000
    cases = [(kind, codec, algo, op, n) for kind in ("ar", "rs") for codec in CODECS
             for algo in ("ring", "twoshot") for op in ("sum", "avg")]
    res = run_ranks(ranks_feedback, world, cases, timeout=200)
    for i, (kind, codec, algo, op, n) in enumerate(cases):
        xs = inputs_for(world, n, i)
        es = [e * np.float32(1e-2) for e in inputs_for(world, n, f"residual{i}")]
        kw = dict(codec=codec, block=64, seed=3, step=i, residuals=es)
        outs, new = (R.all_reduce(xs, op, algo, **kw) if kind == "ar" else R.reduce_scatter(xs, op, algo, **kw))
        for r in range(world):
            got, e = res[r][i]
            np.testing.assert_array_equal(got.view(np.uint32), outs[r].view(np.uint32), err_msg=f"{cases[i]} rank {r}")
            np.testing.assert_array_equal(e.view(np.uint32), new[r].view(np.uint32), err_msg=f"{cases[i]} rank {r} e")
        if kind == "ar" and op == "sum":  # sum of residuals = sum of inputs - result (float32 rounding aside)
            total = np.sum([x.astype(np.float64) + e for x, e in zip(xs, es)], axis=0)
            err = total - outs[0].astype(np.float64)
            np.testing.assert_allclose(np.sum([res[r][i][1] for r in range(world)], axis=0, dtype=np.float64), err,
                                       rtol=0, atol=1e-4 * np.abs(total).max())
