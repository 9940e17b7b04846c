"""Every model-area mutant must make at least one model check fail."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch

from refit_verify.errors import RefitVerifyError
from refit_verify.model import fixtures
from refit_verify.selftest.mutants_model import MUTANTS, REQUIRES

torch.set_num_threads(1)

# Fixture-free checks, cheapest first; each is a test function of the model suites.
CHECKS = [
    ("test_model_linear", "test_emulated_activation_codes_are_vllm_group_quant"),
    ("test_model_linear", "test_emulated_matches_first_principles"),
    ("test_model_logits", "test_metrics_on_hand_made_logits"),
    ("test_model_logits", "test_greedy_rule_flags_a_divergence_outside_topk"),
    ("test_model_forward", "test_engine_bf16_fused_equals_hf_forward"),
    ("test_model_forward", "test_engine_params_are_per_shard_quantized_and_row_stacked"),
    ("test_model_logits", "test_identical_engine_bytes_give_identical_logits_and_tokens"),
    ("test_model_logits", "test_drift_grows_monotonically_with_perturbation"),
    ("test_model_conformance", "test_logits_match_transformers"),
]


def _check(module: str, fn: str):
    try:
        mod = importlib.import_module(module)
    except pytest.skip.Exception:
        return None
    f = getattr(mod, fn)
    return (lambda: f("llama")) if fn == "test_logits_match_transformers" else f


def _kills(mutant) -> list[str]:
    killed = []
    fixtures.engine_params.cache_clear()  # a cached engine dict would hide a mutated builder
    try:
        with mutant.applied():
            for module, fn in CHECKS:
                check = _check(module, fn)
                if check is None:
                    continue
                try:
                    check()
                except (AssertionError, RefitVerifyError, RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
                    killed.append(f"{fn}: {type(exc).__name__}")
                    break
    finally:
        fixtures.engine_params.cache_clear()
    return killed


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_killed(mutant):
    need = REQUIRES.get(mutant.name)
    if need and importlib.util.find_spec(need) is None:
        pytest.skip(f"only the {need} conformance check kills {mutant.name}; {need} is not installed")
    assert mutant.area == "model" and mutant.bug_class
    killed = _kills(mutant)
    assert killed, f"mutant {mutant.name} ({mutant.bug_class}) survived every model check"
