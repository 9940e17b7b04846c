"""One comparison result per tensor (compare.bitwise.TensorComparison) for the refit run, the streaming
verifier and `diff`; compare_fp8's row chunks must not change any part of it."""

import torch

from refit_verify.compare import TensorComparison, compare_fp8
from refit_verify.compare.stream import make_quantizer, verify_stream
from refit_verify.fp8 import quantize
from refit_verify.refit.run import run_refit


def _pair():
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(600, 700, generator=g) * 0.02).bfloat16()
    q = quantize(x, "vllm_per_block")
    b = q.data.view(torch.uint8).clone()
    for r, c in ((5, 9), (130, 650), (300, 1), (599, 699), (599, 698)):  # blocks in several row chunks
        b[r, c] ^= 0x01
    s = q.scale_inv.clone()
    s[2, 1] = torch.nextafter(s[2, 1], torch.tensor(float("inf")))
    return x, q.data, q.scale_inv, b.view(torch.float8_e4m3fn), s


def _direct_block_counts(a, b, block=(128, 128)):
    diff = a.view(torch.uint8) != b.view(torch.uint8)
    mb, nb = -(-diff.shape[0] // block[0]), -(-diff.shape[1] // block[1])
    out = torch.zeros(mb, nb, dtype=torch.int64)
    for i in range(mb):
        for j in range(nb):
            out[i, j] = diff[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]].sum()
    return out


def test_row_chunks_do_not_change_the_result():
    x, da, sa, db, sb = _pair()
    whole = compare_fp8(da, sa, db, sb, name="w", source=x)
    chunked = compare_fp8(da, sa, db, sb, name="w", source=x, chunk_elems=128 * 700)  # one block row a chunk
    direct = _direct_block_counts(da, db)
    for r in (whole, chunked):
        assert (r.n_code_mismatch, r.n_scale_mismatch) == (5, 1)
        assert torch.equal(r.block_mismatch_counts, direct), r.mismatched_blocks(None)
        assert sum(r.ulp_histogram.values()) == 5 and r.max_code_ulp >= 1
    bits = lambda r: {k: v for k, v in r.to_dict().items() if k != "magnitudes"}  # noqa: E731
    assert bits(whole) == bits(chunked)  # magnitudes: float32 partial sums, equal to rounding only
    assert all(abs(whole.magnitudes[k] - chunked.magnitudes[k]) < 1e-6 for k in whole.magnitudes)
    assert whole.first_mismatch.element == (5, 9) and whole.first_block == (0, 0)
    assert whole.mismatched_blocks() == [[0, 0, 1], [1, 5, 1], [2, 0, 1], [4, 5, 2]]
    mags = whole.magnitudes
    assert 0 < mags["rel_l2_a"] < 0.1 and 0 < mags["rel_l2_ab"] < mags["rel_l2_a"]


def test_stream_run_and_diff_return_one_type():
    x, *_ = _pair()
    r = verify_stream([("model.layers.0.mlp.down_proj.weight", x)], make_quantizer("vllm_per_block"),
                      make_quantizer("nemo_rl"), keep_all=True)
    assert all(isinstance(v, TensorComparison) for v in r.verdicts) and r.verdicts
    run = run_refit("tiny-llama", layers=1, seed=3)
    assert run.comparisons and all(isinstance(c, TensorComparison) for c in run.comparisons)
    fp8 = [c for c in run.comparisons if c.kind == "fp8"]
    assert fp8 and all(c.block_mismatch_counts is not None for c in fp8)  # per-block detail kept for the job
    import refit_verify.compare.diff as diff

    assert diff.compare_fp8 is compare_fp8
