"""Property tests over shapes straddling block boundaries, per-block magnitudes and special values."""

import math

import torch
from hypothesis import given, note
from hypothesis import strategies as st

from refit_verify.errors import NonFiniteInputError
from refit_verify.fp8 import dequantize, format as fmt, get_recipe, quantize

DIM = st.integers(1, 3 * 128 + 1)
BLOCKS = st.sampled_from([(128, 128), (64, 128), (128, 64), (32, 96), (1, 128)])
MAGS = st.sampled_from([0.0, 1e-40, 1e-38, 1e-4, 0.02, 1.0, 448.0, 3.0e38])
FINITE_WEIGHT_RECIPES = ["vllm_per_block", "vllm_per_block_ue8m0", "deepgemm", "nemo_rl", "nemo_rl_pow2",
                         "transformer_engine", "transformer_engine_pow2", "torchao"]


def _tensor(seed, m, n, mags, block):
    """randn with each block rescaled to its own magnitude (cycled from `mags`, row-major blocks)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, n, generator=g)
    bm, bn = block
    mb, nb = math.ceil(m / bm), math.ceil(n / bn)
    padded = torch.zeros(mb * bm, nb * bn)
    padded[:m, :n] = x
    amax = padded.reshape(mb, bm, nb, bn).abs().amax(dim=(1, 3)).clamp(min=1e-30)
    target = torch.tensor(mags, dtype=torch.float64)[torch.arange(mb * nb) % len(mags)].reshape(mb, nb)
    factor = (target / amax.double()).float()
    return (x * factor.repeat_interleave(bm, 0).repeat_interleave(bn, 1)[:m, :n]).bfloat16()


@given(seed=st.integers(0, 2**31 - 1), m=DIM, n=DIM, block=BLOCKS, mags=st.lists(MAGS, min_size=1, max_size=4),
       recipe=st.sampled_from(["vllm_per_block", "nemo_rl", "transformer_engine"]))
def test_shapes_scale_grid_and_block_locality(seed, m, n, block, mags, recipe):
    """Scale grid is [ceil(M/bm), ceil(N/bn)]; with zero padding a block's bytes depend only on
    that block (edge padding breaks locality only in the last block row/column)."""
    r = get_recipe(recipe).replace(block=block)
    x = _tensor(seed, m, n, mags, block)
    q = quantize(x, r)
    assert tuple(q.scale_inv.shape) == (math.ceil(m / block[0]), math.ceil(n / block[1]))
    assert q.data.shape == x.shape and q.data.dtype == torch.float8_e4m3fn
    # perturb block (0, 0) only
    y = x.clone()
    y[: block[0], : block[1]] *= 2
    q2 = quantize(y, r)
    same = q.codes == q2.codes
    outside = torch.ones_like(same)
    outside[: block[0], : block[1]] = False
    if r.padding == "edge" and (m % block[0] or n % block[1]) and (m <= block[0] or n <= block[1]):
        return  # the perturbed block may hold x[-1, -1], which pads every edge block
    note(f"recipe={r.name} block={block}")
    assert bool(same[outside].all()), "bytes outside the perturbed block changed"


@given(seed=st.integers(0, 2**31 - 1), m=DIM, n=DIM, mags=st.lists(MAGS.filter(lambda v: 1e-30 < v < 1e38),
       min_size=1, max_size=3), recipe=st.sampled_from(FINITE_WEIGHT_RECIPES))
def test_finite_input_gives_finite_codes_and_bounded_error(seed, m, n, mags, recipe):
    """In-range finite blocks: no NaN codes, and each element within one fp8 step of its value."""
    x = _tensor(seed, m, n, mags, (128, 128))
    q = quantize(x, recipe)
    assert not fmt.is_nan_code(q.codes).any()
    dq = dequantize(q)
    err = (dq - x.float()).abs()
    scale = q.scale_inv.repeat_interleave(128, 0).repeat_interleave(128, 1)[:m, :n]
    # e4m3 has 3 mantissa bits: relative half-step 2^-4 for normals, absolute 2^-10*scale below
    bound = x.float().abs() * 2.0**-4 + scale * 2.0**-9 * 1.0001
    assert bool((err <= bound).all()), f"max excess {float((err - bound).max())}"


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(129, 257), n=st.integers(129, 257),
       special=st.sampled_from([math.nan, math.inf, -math.inf]), where=st.integers(0, 10**6))
def test_special_values_stay_in_their_block(seed, m, n, special, where):
    """vLLM: a NaN block is all NaN, an Inf block has scale inf and NaN at the Inf; other blocks are
    untouched. nemo_rl_nan_to_num: no NaN codes at all. nan_policy=raise names the block."""
    x = _tensor(seed, m, n, [0.02], (128, 128))
    r, c = where % m, (where // m) % n
    x[r, c] = special
    clean = x.clone()
    clean[r, c] = 0
    bi, bj = r // 128, c // 128
    q, q0 = quantize(x, "vllm_per_block"), quantize(clean, "vllm_per_block")
    inblock = torch.zeros(m, n, dtype=torch.bool)
    inblock[bi * 128 : bi * 128 + 128, bj * 128 : bj * 128 + 128] = True
    assert torch.equal(q.codes[~inblock], q0.codes[~inblock])
    if math.isnan(special):
        assert bool(fmt.is_nan_code(q.codes[inblock]).all())
        assert math.isnan(float(q.scale_inv[bi, bj]))
    else:
        assert float(q.scale_inv[bi, bj]) == math.inf
        assert bool(fmt.is_nan_code(q.codes[r, c]))
    assert not fmt.is_nan_code(quantize(x, "nemo_rl_nan_to_num").codes).any()
    try:
        quantize(x, get_recipe("vllm_per_block").replace(nan_policy="raise"), name="w")
    except NonFiniteInputError as e:
        assert e.block == (bi, bj) and e.element == (r, c) and "w" in str(e)
    else:
        raise AssertionError("nan_policy=raise accepted a non-finite weight")


@given(e=st.integers(-30, 10), ulps=st.integers(0, 3))
def test_ue8m0_float_and_bit_rounding(e, ulps):
    """Both are >= the scale and powers of two; they differ only just above a power of two, where
    float log2 rounds down to the power itself."""
    s = torch.tensor([2.0**e], dtype=torch.float32).view(torch.int32) + ulps
    s = s.view(torch.float32)
    f, b = fmt.ue8m0_ceil_float(s), fmt.ue8m0_ceil_bits(s)
    assert float(b) >= float(s)
    for v in (f, b):
        m, _ = math.frexp(float(v))
        assert m == 0.5
    if ulps == 0:
        assert float(f) == float(b) == float(s)
    elif float(f) != float(b):
        assert float(f) == 2.0**e and float(b) == 2.0 ** (e + 1)
