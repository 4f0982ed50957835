"""The C++ shared math (csrc/kernels/common) equals zcoll.reference bit for bit: 16-bit float
conversions, the stochastic-rounding hash, and every codec's encode / decode / residual, on the
CPU path and on the CUDA kernel bodies run by the host grid emulator."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from native import _C
from zcoll import reference as R

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


def bits32(a):
    return np.asarray(a, np.float32).view(np.uint32)


# ---- 16-bit conversions ----------------------------------------------------------------------

def _patterns(stride):
    """Every `stride`-th float32 bit pattern plus the special ones (a systematic sweep)."""
    base = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFBFFFFF,
                        0x00000001, 0x007FFFFF, 0x00800000, 0x33000000, 0x33000001, 0x387FFFFF,
                        0x38800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x7F7FFFFF, 0x7F7F8000,
                        0x3F808000, 0x3F818000], np.uint32)
    return np.concatenate([base, special, special | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize("stride", [997, 65537])
def test_float_to_16bit_sweep(stride):
    x = _patterns(stride)
    np.testing.assert_array_equal(_C.float_to_half_bits(x), R.float32_to_float16(x).view(np.uint16))
    np.testing.assert_array_equal(_C.float_to_bf16_bits(x), R.float32_to_bf16_bits(x))


def test_16bit_to_float_exhaustive():
    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    np.testing.assert_array_equal(bits32(_C.half_bits_to_float(h)), bits32(R.float16_to_float32(h.view(np.float16))))
    np.testing.assert_array_equal(bits32(_C.bf16_bits_to_float(h)), bits32(R.bf16_bits_to_float32(h)))


def test_float16_matches_ieee_for_numbers():
    """Away from NaN the conversion is plain IEEE RNE: numpy's own cast agrees."""
    x = _patterns(4099)
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(_C.float_to_half_bits(x), x.astype(np.float16).view(np.uint16))


def test_nan_stays_nan_through_16bit():
    nans = np.array([0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x7F802000], np.uint32).view(np.float32)
    assert np.isnan(_C.half_bits_to_float(_C.float_to_half_bits(nans))).all()
    assert np.isnan(_C.bf16_bits_to_float(_C.float_to_bf16_bits(nans))).all()


@given(st.lists(U32, min_size=1, max_size=64))
def test_16bit_conversions_random_bits(words):
    x = np.array(words, np.uint32).view(np.float32)
    np.testing.assert_array_equal(_C.float_to_half_bits(x), R.float32_to_float16(x).view(np.uint16))
    np.testing.assert_array_equal(_C.float_to_bf16_bits(x), R.float32_to_bf16_bits(x))


# ---- hash ------------------------------------------------------------------------------------

@given(U64, U64, U32, U32)
def test_stream_key(seed, step, rank, stage):
    assert _C.stream_key(seed, step, rank, stage) == R.stream_key(seed, step, rank, stage)


@given(U32, st.lists(U64, min_size=1, max_size=32))
def test_element_hash(key, indices):
    idx = np.array(indices, np.uint64)
    np.testing.assert_array_equal(_C.element_hash(key, idx), R.element_hash(key, idx))


@given(U32, st.integers(0, 2**64 - 1000))
def test_uniform(key, base):
    np.testing.assert_array_equal(bits32(_C.uniform(key, base, 300)), bits32(R.uniform(key, base, 300)))


# ---- codecs ----------------------------------------------------------------------------------

CODECS = list(R.CODECS)
SIZES = [0, 1, 2, 15, 16, 17, 255, 256, 257, 1000]
EMULATED_THREADS = [1, 7, 32, 256, 1024]  # 256 is what the CUDA launcher uses


def _awkward(n, rng):
    """Mixed magnitudes, zeros, subnormals, a zero block and tiny-absmax values."""
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))).astype(np.float32)
    if n > 40:
        x[5:9] = [0.0, -0.0, 1e-45, -3e-39]
        x[20:36] = 0.0
    return x


def _assert_codec_equal(codec, x, block, key, base, threads=0, residual_scale=1.0):
    want = R.encode(codec, x, key, base, block)
    got, res = _C.codec_encode(codec, x, block=block, key=key, base=base, with_residual=True,
                               residual_scale=residual_scale, emulate_cuda_threads=threads)
    np.testing.assert_array_equal(got, want)
    dec = R.decode(codec, want, x.size, block)
    np.testing.assert_array_equal(bits32(_C.codec_decode(codec, got, x.size, block=block,
                                                         emulate_cuda_threads=threads)), bits32(dec))
    np.testing.assert_array_equal(bits32(res), bits32(R.residual(x, dec, residual_scale)))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("block", [16, 48, 256])
def test_codec_cpu_equals_reference(codec, n, block):
    rng = np.random.default_rng(n * 131 + block)
    _assert_codec_equal(codec, _awkward(n, rng), block, key=int(rng.integers(2**32)),
                        base=int(rng.integers(2**40)), residual_scale=4.0)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("threads", EMULATED_THREADS)
@pytest.mark.parametrize("n", [1, 17, 257, 1000])
def test_codec_cuda_bodies_equal_reference(codec, threads, n):
    rng = np.random.default_rng(n + threads)
    _assert_codec_equal(codec, _awkward(n, rng), 64, key=int(rng.integers(2**32)), base=3, threads=threads)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("residual_scale", [1.0, 3.0])
def test_codec_cpu_blocks_across_the_32_bit_index_boundary(codec, residual_scale):
    """The vectorised CPU loop hoists the index's high word out of the hash and splits runs where
    it changes: blocks that straddle 2**32 (and 2**33) must still hash every element right."""
    rng = np.random.default_rng(7)
    for base in (2**32 - 100, 2**33 - 1, 2**32 - 256):
        _assert_codec_equal(codec, _awkward(1000, rng), 256, key=12345, base=base, residual_scale=residual_scale)


@pytest.mark.parametrize("codec", CODECS)
def test_codec_nonfinite_inputs(codec):
    x = np.linspace(-3, 3, 100, dtype=np.float32)
    x[3], x[40], x[77] = np.nan, np.inf, -np.inf
    _assert_codec_equal(codec, x, 32, key=99, base=0)
    for threads in (1, 256):
        _assert_codec_equal(codec, x, 32, key=99, base=0, threads=threads)


def _fp16_rounding_cases():
    """Every float16 value, every midpoint between neighbouring float16 values (subnormal ties,
    ties in each binade, 65520 = the overflow tie) and their float32 neighbours, both signs; plus
    values around 2^-25, 65504..2^16, FLT_MAX, inf and NaN payloads."""
    h = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)  # +0 .. 65504
    grid = np.append(h, 65536.0)  # 65536 stands for the next step past the largest half
    mid = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)  # exact: 12 significant bits at most
    core = np.concatenate([h.astype(np.float32), mid, np.float32([2.0**-25, 2.0**-26, 2.0**-14, 65536.0])])
    inf = np.float32(np.inf)
    x = np.concatenate([core, np.nextafter(core, inf), np.nextafter(core, -inf)])
    specials = np.array([0x7F7FFFFF, 0x7F800000, 0x00000001, 0x007FFFFF, 0x00800000], np.uint32)
    payload = np.arange(1024, dtype=np.uint32) << np.uint32(13)
    nans = np.concatenate([0x7F800000 | payload[1:], 0x7F800001 | payload, 0x7F801FFF | payload]).astype(np.uint32)
    x = np.concatenate([x, specials.view(np.float32), nans.view(np.float32)])
    return np.concatenate([x, -x])


def test_fp16_every_tie_and_neighbour():
    """The fp16 codec's vectorised CPU loops (with and without residual) and the CUDA body, and
    the plain conversion, on every rounding boundary of float16 (not just a sweep's sample)."""
    x = _fp16_rounding_cases()
    want = R.encode("fp16", x, 0)
    np.testing.assert_array_equal(_C.float_to_half_bits(x).view(np.uint8), want)
    np.testing.assert_array_equal(_C.codec_encode("fp16", x), want)
    for threads in (0, 256):
        _assert_codec_equal("fp16", x, 256, key=0, base=0, threads=threads, residual_scale=3.0)
    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.uint8)  # every half, decoded
    np.testing.assert_array_equal(bits32(_C.codec_decode("fp16", h, 2**16)), bits32(R.decode("fp16", h, 2**16)))


@given(st.sampled_from(CODECS), st.sampled_from([16, 32, 256]), U32, st.integers(0, 2**63),
       hnp.arrays(np.float32, st.integers(0, 600),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_codec_random(codec, block, key, base, x):
    _assert_codec_equal(codec, x, block, key, base)


@pytest.mark.parametrize("codec", CODECS)
def test_encoded_bytes_agree(codec):
    for n in SIZES:
        for block in (16, 256):
            assert _C.encoded_bytes(codec, n, block) == R.encoded_bytes(codec, n, block)


def test_bad_arguments_raise_value_error():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="unknown codec 'int3'"):
        _C.codec_encode("int3", x)
    with pytest.raises(ValueError, match="block size must be a multiple of 16"):
        _C.codec_encode("int8", x, block=24)
    with pytest.raises(ValueError, match="cannot hold"):
        _C.codec_decode("int8", np.zeros(3, np.uint8), 10)
