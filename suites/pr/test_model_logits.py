"""Logits differential: metric definitions, identical-bytes identity, monotone drift, greedy rule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refit_verify.cases import case_seed
from refit_verify.model import fixtures
from refit_verify.model.llama import LlamaModel
from refit_verify.model.logits import (GreedyTrace, compare_greedy, compare_logits, differential, make_prompts)
from refit_verify.model.weights import build_engine_params

torch.set_num_threads(1)


def test_metrics_on_hand_made_logits():
    ref = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    same = compare_logits(ref, ref.clone())
    assert same.identical and same.max_abs == 0 and same.kl_mean == 0
    assert same.token_mult_prob_error == 1.0 and same.gen_kl_error == 0.0 and same.top1_agree == 1.0
    # a constant shift changes no probability: logprob metrics must ignore it, abs diff must not
    shifted = compare_logits(ref, ref + 3.0)
    assert shifted.max_abs == pytest.approx(3.0) and shifted.kl_mean == pytest.approx(0.0, abs=1e-12)
    assert shifted.token_mult_prob_error == pytest.approx(1.0)
    # move logit 0 by -0.5: the chosen token is test's argmax (still 0); r = logp_ref - logp_test
    test = ref.clone()
    test[0, 0] -= 0.5
    d = compare_logits(ref, test, k=2)
    la, lb = ref.double().log_softmax(-1)[0], test.double().log_softmax(-1)[0]
    r = float(la[0] - lb[0])
    assert d.token_mult_prob_error == pytest.approx(math.exp(abs(r)))
    assert d.gen_kl_error == pytest.approx(math.exp(r) - r - 1)
    assert d.kl_mean == pytest.approx(float((la.exp() * (la - lb)).sum()))
    flip = ref.clone()
    flip[0, 1] = 5.0
    f = compare_logits(ref, flip, k=2)
    assert f.top1_agree == 0.0 and f.topk_overlap == 1.0  # top-2 sets {0, 1} on both sides
    json.dumps(f.to_dict())


def test_greedy_rule_flags_a_divergence_outside_topk():
    toks = torch.tensor([[1, 2, 3]])
    top = torch.tensor([[[1, 9], [2, 9], [3, 9]]])
    other = torch.tensor([[1, 2, 7]])
    ok = compare_greedy(GreedyTrace(toks, top), GreedyTrace(other, torch.tensor([[[1, 9], [2, 9], [7, 3]]])))
    assert ok.first_divergence == [2] and ok.topk_consistent is False  # 7 is not in ref's top-2 {3, 9}
    fine = compare_greedy(GreedyTrace(toks, torch.tensor([[[1, 9], [2, 9], [3, 7]]])),
                          GreedyTrace(other, torch.tensor([[[1, 9], [2, 9], [7, 3]]])))
    assert fine.topk_consistent and fine.token_agreement == pytest.approx(2 / 3)


def _models(hf_after=None, recipe_before="vllm_per_block", recipe_after="vllm_per_block"):
    cfg, hf = fixtures.config(), fixtures.hf_weights()
    return {
        "bf16": LlamaModel(cfg, hf),
        "fp8_before": LlamaModel(cfg, fixtures.engine_params(recipe=recipe_before)),
        "fp8_after": LlamaModel(cfg, build_engine_params(cfg, hf_after or hf, recipe_after)),
    }


def _same_bytes(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].contiguous().view(torch.uint8), b[k].contiguous().view(torch.uint8))
        for k in a)


def test_identical_engine_bytes_give_identical_logits_and_tokens():
    cfg = fixtures.config()
    # FP8-before (trainer quantizes) and FP8-after (engine quantizes) with the same recipe: two
    # independently built engine dicts that must hold the same bytes...
    before = fixtures.engine_params()
    after = build_engine_params(cfg, {k: v.clone() for k, v in fixtures.hf_weights().items()})
    assert _same_bytes(before, after)
    # ...and then the same logits and tokens, bit for bit
    d = differential(_models(), make_prompts(cfg.vocab_size, 2, 12), steps=3)
    pair = d.pair("fp8_before", "fp8_after")
    assert pair.identical and pair.max_abs == 0.0 and pair.kl_max == 0.0 and pair.token_mult_prob_error == 1.0
    g = d.greedy_pair("fp8_before", "fp8_after")
    assert g.token_agreement == 1.0 and g.prompts_identical == g.n_prompts
    bf = d.pair("bf16", "fp8_after")
    assert not bf.identical and bf.kl_mean > 0  # FP8 noise is visible against BF16
    json.dumps(d.to_dict())


def _perturbed(eps: float) -> dict:
    """Every FP8-eligible weight moved by eps * rms(w) * noise: a controlled refit-side drift."""
    out = {}
    for name, w in fixtures.hf_weights().items():
        if w.dim() == 2 and "layers" in name and eps:
            g = torch.Generator().manual_seed(case_seed(7, name))
            wf = w.float()
            out[name] = (wf + eps * wf.pow(2).mean().sqrt() * torch.randn(w.shape, generator=g)).to(w.dtype)
        else:
            out[name] = w
    return out


def test_drift_grows_monotonically_with_perturbation():
    cfg = fixtures.config()
    prompts = make_prompts(cfg.vocab_size, 2, 12)
    before = LlamaModel(cfg, fixtures.engine_params()).logits(prompts)
    rows = []
    for eps in (0.0, 0.01, 0.03, 0.1, 0.3):
        after = LlamaModel(cfg, build_engine_params(cfg, _perturbed(eps))).logits(prompts)
        rows.append((eps, compare_logits(before, after)))
    print("\n".join(f"eps={e:<5} mean_abs={d.mean_abs:.4g} kl={d.kl_mean:.3g} cos={d.cosine:.6f} "
                    f"tmpe={d.token_mult_prob_error:.4f}" for e, d in rows))
    assert rows[0][1].identical
    for (_, lo), (e, hi) in zip(rows, rows[1:]):
        assert hi.mean_abs > lo.mean_abs and hi.kl_mean > lo.kl_mean, f"drift did not grow at eps={e}"
        assert hi.max_abs >= lo.max_abs and hi.cosine <= lo.cosine
        assert hi.token_mult_prob_error >= lo.token_mult_prob_error and hi.gen_kl_error >= lo.gen_kl_error


def test_recipe_mismatch_between_paths_is_visible_but_small():
    # NeMo-RL trainer quantizer vs vLLM's loader: 1-ulp scale differences (FACTS.md §3)
    cfg = fixtures.config()
    prompts = make_prompts(cfg.vocab_size, 2, 12)
    m = _models(recipe_before="nemo_rl")
    d = compare_logits(m["fp8_before"].logits(prompts), m["fp8_after"].logits(prompts))
    ref = compare_logits(m["bf16"].logits(prompts), m["fp8_after"].logits(prompts))
    assert not d.identical and 0 < d.kl_mean < ref.kl_mean
