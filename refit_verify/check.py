"""check_quantizer: run a user's quantizer callable on the case set and compare it with a recipe."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from refit_verify.cases import Case, case_set, default_cases
from refit_verify.compare.bitwise import compare_fp8, normalize_scale
from refit_verify.compare.metrics import error_metrics
from refit_verify.errors import RecipeFailure
from refit_verify.fp8 import dequantize, get_recipe, quantize
from refit_verify.usercode import call_user

QuantizerFn = Callable[[torch.Tensor], tuple]


@dataclass
class CaseResult:
    case: str
    seed: int
    verdict: str  # "pass" | "fail" | "error"
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    first_mismatch: Optional[dict] = None
    repro: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CheckResult:
    reference: str
    cases: list[CaseResult]

    @property
    def ok(self) -> bool:
        return all(c.verdict == "pass" for c in self.cases)

    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.verdict != "pass"]


def _as_pair(out, name):
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{name}: quantizer must return (fp8_data, scale_inv), got {type(out).__name__}")
    data, scale = out
    if not isinstance(data, torch.Tensor) or data.dtype not in (torch.float8_e4m3fn, torch.uint8):
        raise TypeError(f"{name}: fp8_data must be float8_e4m3fn (or its uint8 view), got "
                        f"{getattr(data, 'dtype', type(data).__name__)}")
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise TypeError(f"{name}: scale_inv must be a float tensor, got {getattr(scale, 'dtype', type(scale).__name__)}")
    return data, scale


def check_case(impl: QuantizerFn, recipe, case: Case, repro: str = "") -> CaseResult:
    r = get_recipe(recipe)
    x = case.tensor()
    base = dict(case=case.name, seed=case.seed, repro=repro.format(case=case.name, seed=case.seed))
    try:
        ref = quantize(x, r, name=case.name)
    except RecipeFailure as exc:
        ref = exc
    try:
        data, scale = _as_pair(call_user(impl, x.clone()), case.name)
    except Exception as exc:  # a user callable may raise anything; it must not lose the report
        if isinstance(ref, RecipeFailure):
            return CaseResult(verdict="pass", reason=f"both fail: {exc!r}", **base)
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CaseResult(verdict="error", reason=f"quantizer raised {tb}", **base)
    if isinstance(ref, RecipeFailure):
        return CaseResult(verdict="fail", reason=f"reference fails ({ref.cause!r}) but quantizer returned", **base)
    try:
        return _compare_case(x, ref, data, scale, r, case, base)
    except Exception as exc:  # meta tensors, odd shapes: the user's output, not the harness, is at fault
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CaseResult(verdict="error", reason=f"comparing the quantizer's output failed: {tb}", **base)


def _compare_case(x, ref, data, scale, r, case: Case, base: dict) -> CaseResult:
    scale = normalize_scale(scale, data.shape, r.block)
    cmp = compare_fp8(ref.data, ref.scale_inv, data.view(torch.float8_e4m3fn), scale.float(), r.block, case.name)
    metrics = {
        "code_mismatch_rate": cmp.code_mismatch_rate,
        "n_code_mismatch": cmp.n_code_mismatch,
        "n_scale_mismatch": cmp.n_scale_mismatch,
        "ulp_histogram": cmp.ulp_histogram,
    }
    if cmp.first_mismatch is None or cmp.first_mismatch.kind != "shape":
        metrics.update(error_metrics(x.float(), dequantize(data.view(torch.float8_e4m3fn), scale.float(), r.block)))
    if cmp.equal:
        return CaseResult(verdict="pass", metrics=metrics, **base)
    return CaseResult(verdict="fail", reason=cmp.first_mismatch.describe(), metrics=metrics,
                      first_mismatch=cmp.first_mismatch.to_dict(), **base)


def check_quantizer(impl: QuantizerFn, reference_recipe="vllm_per_block", cases: Optional[list[Case]] = None,
                    seed: int = 0, repro: str = "") -> CheckResult:
    """Run `impl(w) -> (fp8_data, scale_inv)` on every case; bitwise verdict against the recipe."""
    r = get_recipe(reference_recipe)
    cases = case_set(seed, r.block) if cases is None else cases
    repro = repro or default_repro(impl, r.name, seed)
    return CheckResult(reference=r.name, cases=[check_case(impl, r, c, repro) for c in cases])


def default_repro(impl, recipe_name: str, base_seed: int) -> str:
    """The command that reruns one case, as a template of {case}: a CLI line when the callable can be
    imported by name, else the Python call (a lambda or a __main__ function has no import path)."""
    module, qualname = getattr(impl, "__module__", None), getattr(impl, "__qualname__", "")
    if module and module != "__main__" and qualname and "<" not in qualname:
        return (f"refit-verify check --quantizer {module}:{qualname} --against {recipe_name} "
                f"--case {{case}} --seed {base_seed}")
    return (f"check_quantizer(<your quantizer>, {recipe_name!r}, "
            f"cases=[c for c in default_cases({base_seed}) if c.name == '{{case}}'])")
