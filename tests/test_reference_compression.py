"""Compressed collectives of the reference (docs/arithmetic.md §6): error per codec, schedule and
world size (measured, printed at the end of the run, bounded), the error-feedback identity,
NaN propagation, and consistency with the uncompressed contract."""
import numpy as np
import pytest
from commands import bench_script
from conftest import report

from zcoll import reference as R

CODECS = list(R.CODECS)
N = 1 << 15
WORLDS = [2, 3, 4, 8]

# Relative L2 error of a SUM all-reduce of independent Gaussian inputs, vs float64 exact.
# two-shot: each rank's part is encoded once and the sum once more, so the error does not
# grow with p; ring: every hop re-encodes a growing partial sum, so it grows ~ sqrt(p).
# Bounds (also in docs/arithmetic.md §6): the measured two-shot maximum (table printed at the
# end of the run) plus 30%; the ring may exceed it by sqrt(p/2).
TWOSHOT_BOUND = {"fp16": 3.7e-4, "bf16": 3.0e-3, "int8": 0.0175, "int4": 0.32}


def exact_sum(xs):
    return np.sum(np.array(xs, np.float64), axis=0)


def rel_l2(got, want):
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def gaussian_inputs(p, n=N, seed=0):
    rng = np.random.default_rng(seed + 1000 * p)
    return [rng.standard_normal(n).astype(np.float32) for _ in range(p)]


@pytest.fixture(scope="module")
def error_study():
    study = bench_script("compression_error")  # the study behind docs/compression.md's table
    return study, study.measure()


@pytest.fixture(scope="module")
def error_table(error_study):
    study, measured = error_study
    assert (study.N, list(study.WORLDS), list(study.CODECS)) == (N, WORLDS, CODECS)
    table = {key: l2 for key, (l2, _bias) in measured.items()}
    lines = ["relative L2 error of all_reduce(SUM), Gaussian inputs, n = 32768, B = 256",
             f"{'codec':6} {'schedule':9} " + " ".join(f"{'p=' + str(p):>9}" for p in WORLDS)]
    for codec in CODECS:
        for algo in R.COMPRESSED_ALGOS:
            lines.append(f"{codec:6} {algo:9} " + " ".join(f"{table[codec, algo, p]:9.2e}" for p in WORLDS))
    report("zcoll reference: compressed all-reduce error", lines)
    return table


def test_docs_hold_the_current_error_table(error_study):
    study, measured = error_study
    doc = study.DOC.read_text()
    assert f"{study.BEGIN}\n{study.markdown(measured)}\n{study.END}" in doc, \
        "docs/compression.md's error table is stale: run python bench/compression_error.py --update"


def test_mean_bias_is_small(error_study):
    """Stochastic rounding is unbiased: the mean error stays two orders below the L2 error."""
    _study, measured = error_study
    for key, (l2, bias) in measured.items():
        assert abs(bias) < 0.02 * l2 + 1e-6, (key, l2, bias)


@pytest.mark.parametrize("codec", CODECS)
def test_twoshot_error_is_bounded_and_independent_of_p(error_table, codec):
    errs = [error_table[codec, "twoshot", p] for p in WORLDS]
    assert max(errs) < TWOSHOT_BOUND[codec], errs
    assert max(errs) / min(errs) < 1.35, errs


@pytest.mark.parametrize("codec", CODECS)
def test_ring_error_grows_with_p_and_is_bounded(error_table, codec):
    errs = {p: error_table[codec, "ring", p] for p in WORLDS}
    assert errs[8] / errs[2] > 1.5, errs
    for p, e in errs.items():
        assert e < TWOSHOT_BOUND[codec] * np.sqrt(p / 2), (p, e)
    assert errs[8] > error_table[codec, "twoshot", 8]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("algo", R.COMPRESSED_ALGOS)
@pytest.mark.parametrize("p", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("op", ["sum", "avg"])
def test_error_feedback_residuals_add_up_to_the_error(codec, algo, p, op):
    """Σ_r e_r = Σ_r x'_r - result (SUM) or - p·result (AVG), up to float32 rounding."""
    n = 1000 + 37 * p  # several blocks, a short tail, uneven segments
    xs = gaussian_inputs(p, n, seed=3)
    prev = [np.random.default_rng(r).standard_normal(n).astype(np.float32) * 0.01 for r in range(p)]
    out, res = R.all_reduce(xs, op, algo, codec=codec, seed=2, step=5, residuals=prev)
    compensated = exact_sum([x + e for x, e in zip(xs, prev)])
    result = out[0].astype(np.float64) * (p if op == "avg" else 1)
    gap = compensated - result - exact_sum(res)
    scale = np.abs(np.array([x + e for x, e in zip(xs, prev)], np.float64)).sum(axis=0) + np.abs(result)
    assert (np.abs(gap) <= 2 * p * 2**-23 * scale + 1e-30).all(), np.abs(gap).max()
    if p == 1:
        assert all((e == 0).all() for e in res)


def test_error_feedback_removes_accumulated_bias():
    """The same gradient all-reduced for many steps: with EF the running mean of the results
    converges to the exact sum; without it the quantisation error does not average out as fast."""
    p, n, steps = 4, 2048, 64
    xs = gaussian_inputs(p, n, seed=9)
    want = exact_sum(xs)
    means = {}
    for ef in (False, True):
        res = [np.zeros(n, np.float32) for _ in range(p)] if ef else None
        total = np.zeros(n)
        for step in range(steps):
            if ef:
                out, res = R.all_reduce(xs, "sum", "ring", codec="int4", step=step, residuals=res)
            else:
                out = R.all_reduce(xs, "sum", "ring", codec="int4", step=step)
            total += out[0]
        means[ef] = rel_l2(total / steps, want)
    report("zcoll reference: error feedback (int4 ring, p=4, 64 steps)",
           [f"relative L2 of the mean result: without EF {means[False]:.2e}, with EF {means[True]:.2e}"])
    assert means[True] < means[False] / 4, means


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("algo", R.COMPRESSED_ALGOS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_input_propagates_to_every_rank(codec, algo, bad):
    p, n = 4, 4096
    xs = gaussian_inputs(p, n, seed=4)
    xs[2][1000] = bad
    res0 = [np.zeros(n, np.float32) for _ in range(p)]
    out, res = R.all_reduce(xs, "sum", algo, codec=codec, residuals=res0)
    for o in out:
        assert not np.isfinite(o[1000])  # never quantised into a finite number
        assert np.isfinite(o[:768]).all() and np.isfinite(o[1280:]).all()  # only nearby blocks
    for e in res:
        assert np.isfinite(e).all()  # one bad step does not poison the next


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("algo", R.COMPRESSED_ALGOS)
def test_every_rank_bit_identical_and_reproducible(codec, algo):
    xs = gaussian_inputs(5, 3001, seed=6)
    a = R.all_reduce(xs, "avg", algo, codec=codec, seed=7, step=3)
    b = R.all_reduce(xs, "avg", algo, codec=codec, seed=7, step=3)
    for o in a + b:
        np.testing.assert_array_equal(o.view(np.uint32), a[0].view(np.uint32))
    if codec in ("int8", "int4"):  # the step feeds the hash: a new step rounds differently
        c = R.all_reduce(xs, "avg", algo, codec=codec, seed=7, step=4)
        assert not np.array_equal(c[0], a[0])


@pytest.mark.parametrize("dtype,codec", [("float16", "fp16"), ("bfloat16", "bf16")])
@pytest.mark.parametrize("p", [2, 3, 4])
def test_cast_codec_on_its_own_dtype_equals_uncompressed(dtype, codec, p):
    """The wire already carries T uncompressed, so a T codec changes nothing: the compressed
    ring/reduce-scatter equal the uncompressed ring bit for bit (align 32 = 64 bytes of T)."""
    rng = np.random.default_rng(p)
    xs = [rng.standard_normal(32 * p * 3).astype(np.float32) for _ in range(p)]
    xs = [R.float32_to_float16(x) if dtype == "float16" else R.float32_to_bf16_bits(x) for x in xs]
    got = R.all_reduce(xs, "sum", "ring", dtype=dtype, codec=codec)[0]
    want = R.all_reduce(xs, "sum", "ring", dtype=dtype)[0]
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    got = R.reduce_scatter(xs, "sum", "ring", dtype=dtype, codec=codec)
    want = R.reduce_scatter(xs, "sum", "ring", dtype=dtype)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.view(np.uint16), w.view(np.uint16))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("algo", R.REDUCE_SCATTER_ALGOS)
def test_compressed_reduce_scatter(codec, algo):
    p, m = 4, 1000  # slices not a multiple of the block: blocks restart at each slice
    xs = gaussian_inputs(p, p * m, seed=8)
    out = R.reduce_scatter(xs, "sum", algo, codec=codec)
    want = exact_sum(xs)
    for r, o in enumerate(out):
        assert o.shape == (m,)
        assert rel_l2(o, want[r * m:(r + 1) * m]) < TWOSHOT_BOUND[codec] * np.sqrt(p / 2)
    res0 = [np.zeros(p * m, np.float32) for _ in range(p)]
    out2, res = R.reduce_scatter(xs, "sum", algo, codec=codec, residuals=res0)
    full = np.concatenate(out2).astype(np.float64)
    assert np.allclose(exact_sum(res) + full, want, rtol=0, atol=1e-4)
    for r in range(p):  # the owner adds its own slice exactly: nothing to feed back there
        assert (res[r][r * m:(r + 1) * m] == 0).all()


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_all_gather(codec):
    p, m = 3, 700
    xs = gaussian_inputs(p, m, seed=10)
    out = R.all_gather(xs, codec=codec, seed=4, step=2)
    for r in range(p):  # each part: the sender's one encode, decoded by everyone (sender too)
        key = R.stream_key(4, 2, r, R.GATHER_STAGE)
        np.testing.assert_array_equal(out[0][r * m:(r + 1) * m], R.roundtrip(codec, xs[r], key, r * m))
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])


def test_compression_rejects_what_it_does_not_compress():
    xs = [np.ones(64, np.float32)] * 2
    with pytest.raises(ValueError, match="compresses float32/float16/bfloat16"):
        R.all_reduce([np.ones(64, np.float64)] * 2, "sum", codec="int8")
    with pytest.raises(ValueError, match="only sum/avg/premul_sum"):
        R.all_reduce(xs, "max", codec="int8")
    with pytest.raises(ValueError, match="block size"):
        R.all_reduce(xs, "sum", codec="int8", block=100)
    with pytest.raises(ValueError, match="compressed all_reduce algorithm"):
        R.all_reduce(xs, "sum", "tree", codec="int8")
    with pytest.raises(ValueError, match="needs a codec"):
        R.all_reduce(xs, "sum", residuals=[np.zeros(64, np.float32)] * 2)
    with pytest.raises(ValueError, match="one residual array per rank"):
        R.all_reduce(xs, "sum", codec="int8", residuals=[np.zeros(63, np.float32)] * 2)
