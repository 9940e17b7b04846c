"""check_quantizer: a user's callable against a recipe, with verdicts that can fail."""

import torch

from refit_verify.cases import default_cases
from refit_verify.check import check_quantizer
from refit_verify.fp8 import quantize


def _as_impl(recipe):
    def impl(w):
        q = quantize(w, recipe)
        return q.data, q.scale_inv
    return impl


def test_correct_quantizer_passes_every_case():
    res = check_quantizer(_as_impl("vllm_per_block"), "vllm_per_block")
    assert res.ok, [c.reason for c in res.failures()]
    assert len(res.cases) == len(default_cases(0))


def test_wrong_quantizer_fails_with_first_mismatch_and_repro():
    res = check_quantizer(_as_impl("nemo_rl"), "vllm_per_block", repro="refit-verify check --case {case} --seed {seed}")
    fails = {c.case: c for c in res.failures()}
    assert "edge_pad_1x129" in fails
    f = fails["edge_pad_1x129"]
    assert f.verdict == "fail" and f.first_mismatch["block"] == (0, 0) and "edge_pad_1x129" in f.reason
    assert f.repro == f"refit-verify check --case edge_pad_1x129 --seed {f.seed}"


def test_nemo_style_trailing_singleton_scale_accepted():
    def impl(w):
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv.unsqueeze(-1)
    assert check_quantizer(impl, "nemo_rl").ok


def test_raising_quantizer_is_an_error_verdict_not_a_crash():
    def impl(w):
        if w.shape[0] > 200:
            raise ValueError("boom")
        return _as_impl("vllm_per_block")(w)
    res = check_quantizer(impl, "vllm_per_block")
    errs = [c for c in res.cases if c.verdict == "error"]
    assert errs and all("boom" in c.reason for c in errs)


def test_wrong_return_types_are_reported():
    res = check_quantizer(lambda w: w.float(), "vllm_per_block", cases=default_cases(0)[:1])
    assert res.cases[0].verdict == "error" and "fp8_data, scale_inv" in res.cases[0].reason
    res = check_quantizer(lambda w: (w.float(), torch.ones(1)), "vllm_per_block", cases=default_cases(0)[:1])
    assert res.cases[0].verdict == "error" and "float8" in res.cases[0].reason
