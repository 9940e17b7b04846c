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
    assert f.verdict == "fail" and f.first_mismatch["block"] == (0, 0) and f.case == "edge_pad_1x129"
    assert "edge_pad_1x129" not in f.reason  # the case is named by f.case; the reason does not repeat it
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


def test_wrong_return_type_is_an_error_even_where_the_reference_refuses():
    # vllm_act_group refuses a 1x1 input; a quantizer returning a float tensor there is not "both fail"
    case = [c for c in default_cases(0) if c.name == "randn_1x1"]
    res = check_quantizer(lambda w: w.float(), "vllm_act_group", cases=case)
    assert res.cases[0].verdict == "error" and "wrong return type" in res.cases[0].reason

    def refuses(w):
        raise ValueError("shape not a multiple of 128")
    assert check_quantizer(refuses, "vllm_act_group", cases=case).ok


def test_float64_scale_inv_is_refused():
    def impl(w):
        q = quantize(w, "vllm_per_block")
        return q.data, q.scale_inv.double()
    res = check_quantizer(impl, "vllm_per_block", cases=default_cases(0)[:1])
    assert res.cases[0].verdict == "error" and "float32" in res.cases[0].reason and "float64" in res.cases[0].reason


def test_errors_and_mismatches_are_counted_apart():
    def raises(w):
        raise RuntimeError("no")
    res = check_quantizer(raises, "vllm_per_block", cases=default_cases(0)[:3])
    assert res.summary() == "3 cases raised, 0 differ (of 3)"
    res = check_quantizer(_as_impl("nemo_rl"), "vllm_per_block")
    assert res.count("error") == 0 and res.count("fail") > 0
    assert res.summary().startswith("0 cases raised, ")


def test_mismatch_reason_labels_reference_and_yours():
    res = check_quantizer(_as_impl("nemo_rl"), "vllm_per_block")
    f = res.failures()[0]
    ref = quantize(default_cases(0)[[c.name for c in default_cases(0)].index(f.case)].tensor(), "vllm_per_block")
    mm = f.first_mismatch
    assert f"scale_inv reference={ref.scale_inv[mm['block']].item()!r}" in f.reason
    assert "yours=" in f.reason and " vs " not in f.reason


def test_bare_assert_shows_file_line_and_source():
    def impl(w):
        assert w.shape[0] == 12345
    res = check_quantizer(impl, "vllm_per_block", cases=default_cases(0)[:1])
    reason = res.cases[0].reason
    assert reason.startswith("quantizer raised AssertionError") and f" at {__file__}:" in reason
    assert reason.endswith("assert w.shape[0] == 12345")


def test_user_output_is_captured_per_case():
    def impl(w):
        print("hello from the quantizer", w.shape[0])
        return _as_impl("vllm_per_block")(w)
    res = check_quantizer(impl, "vllm_per_block", cases=default_cases(0)[:2])
    assert res.ok and all(c.output.startswith("hello from the quantizer") for c in res.cases)


def test_sys_exit_in_process_is_a_case_error_not_our_exit():
    import sys

    def exits(w):
        sys.exit(0)
    try:
        res = check_quantizer(exits, "vllm_per_block", cases=default_cases(0)[:1])
    except BaseException as exc:  # noqa: BLE001 - the user's exit must not become ours
        res = f"escaped {exc!r}"
    assert not isinstance(res, str), res
    assert res.cases[0].verdict == "error" and "SystemExit(0)" in res.cases[0].reason
