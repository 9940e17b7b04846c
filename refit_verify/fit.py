"""`fit`: find the Recipe that reproduces a user's quantizer bit for bit on the case set.

The user's function runs once per case; a candidate recipe scores the cases it reproduces exactly
(codes as bytes, scales as bits; both raising counts as agreeing). The search:
1. differential probes: a zero block and a tiny block reveal the amax floor / scale floor directly
   (values no fixed list would contain, e.g. 1e-6);
2. every weight preset scored, the best one is the start;
3. coordinate search: every single-field change of the current recipe (fields x choices, probe
   values included) is scored, the best strict improvement taken, until all cases match or no
   single change helps; then pairs of changes among the most promising single changes.
A candidate stops scoring once it misses more cases than the best so far (most die on one case).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from refit_verify.cases import Case, case_set
from refit_verify.errors import RecipeFailure
from refit_verify.fp8 import PRESETS, quantize, recipe_diff
from refit_verify.fp8 import format as fmt
from refit_verify.fp8.recipe import Recipe
from refit_verify.usercode import call_user

# Fields that change bytes, with the values the search tries (probe-derived floors are added).
SEARCH_SPACE: dict[str, tuple] = {
    "padding": ("zero", "edge", "none"),
    "amax_floor": (None, 0.0, 1e-4, 1e-10, 1e-12),
    "scale_form": ("descale", "scale", "scale_f64", "scale_div", "descale_rcp"),
    "zero_amax_scale_one": (False, True),
    "inf_scale": ("propagate", "one", "fmax", "fmax_input"),
    "pow2": ("none", "float_ceil", "float_ceil_exp2", "bits_ceil", "nemo_e8m0", "te_frexp", "mx_e8m0", "te_e8m0"),
    "scale_min": (None,),
    "quantize_op": ("mul_reciprocal", "div", "mul_scale"),
    "clamp": (False, True),
    "nan_policy": ("propagate", "zero", "raise", "ignore_in_amax"),
    "upcast_input": (False, True),
    "scale_compute_dtype": ("float32", "input"),
    "quantize_dtype": ("float32", "input"),
    "add_zero_point": (False, True),
    "scale_dtype": ("float32", "bfloat16"),
    "e8m0_byte0_to_1": (False, True),
}


@dataclass
class Observed:
    """The user's output on one case: (codes uint8, scale float32) or the exception type."""
    case: str
    x: torch.Tensor
    out: object


@dataclass
class FitResult:
    recipe: Recipe
    nearest: str
    matched: int
    total: int
    misses: list[str]
    probes: dict = field(default_factory=dict)
    candidates_scored: int = 0

    @property
    def exact(self) -> bool:
        return self.matched == self.total

    def diff(self) -> dict:
        return recipe_diff(PRESETS[self.nearest], self.recipe)

    def to_dict(self) -> dict:
        from refit_verify.fp8.recipe_io import recipe_to_toml

        return {"fit": self.exact, "nearest_preset": self.nearest, "matched": self.matched, "cases": self.total,
                "misses": self.misses, "diff": {k: list(v) for k, v in self.diff().items()},
                "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.recipe.fields().items()},
                "toml": recipe_to_toml(self.recipe), "probes": self.probes,
                "candidates_scored": self.candidates_scored}


def _normalize(out):
    data, scale = out
    if scale.dtype in fmt.E8M0_DTYPES:  # MXFP8 scale bytes: the powers of two they encode
        scale = fmt.e8m0_to_scale(scale.view(torch.uint8))
    if scale.dim() == 3 and scale.shape[-1] == 1:
        scale = scale.squeeze(-1)
    codes = data.view(torch.uint8) if data.dtype != torch.uint8 else data
    return codes.cpu().contiguous(), scale.float().cpu().contiguous()


def observe(impl: Callable, cases: list[Case]) -> list[Observed]:
    obs = []
    for case in cases:
        x = case.tensor()
        try:
            out = _normalize(call_user(impl, x.clone()))
        except Exception as exc:  # the user's code failing on a case is a behaviour to reproduce
            out = type(exc).__name__
        obs.append(Observed(case.name, x, out))
    return obs


def _agrees(recipe: Recipe, o: Observed) -> bool:
    try:
        q = quantize(o.x, recipe, o.case)
    except RecipeFailure:
        return isinstance(o.out, str)
    if isinstance(o.out, str):
        return False
    codes, scale = o.out
    ref_codes, ref_scale = q.codes.contiguous(), q.scale_inv.float().contiguous()
    return (codes.shape == ref_codes.shape and scale.shape == ref_scale.shape and torch.equal(codes, ref_codes)
            and torch.equal(scale.view(torch.int32), ref_scale.view(torch.int32)))


class _Scorer:
    def __init__(self, obs: list[Observed]):
        self.obs = obs
        self.order = list(range(len(obs)))  # cases that separate candidates move to the front
        self.count = 0

    def misses(self, recipe: Recipe, limit: int) -> Optional[list[int]]:
        """Indices of the cases `recipe` misses, or None once more than `limit` are missed."""
        self.count += 1
        missed = []
        for i in self.order:
            try:
                ok = _agrees(recipe, self.obs[i])
            except Exception:  # a field combination the reference cannot evaluate
                ok = False
            if not ok:
                missed.append(i)
                if len(missed) > limit:
                    self.order.remove(i)
                    self.order.insert(0, i)
                    return None
        return missed


def _probe_values(impl: Callable) -> dict:
    """Floors read off the user's scale for an all-zero and a tiny block (descale forms)."""
    found: dict = {"amax_floor": [], "scale_min": []}
    for label, x in (("zero", torch.zeros(128, 128, dtype=torch.bfloat16)),
                     ("tiny", torch.full((128, 128), 1e-30, dtype=torch.float32))):
        try:
            _, scale = _normalize(call_user(impl, x.clone()))
            s = float(scale.reshape(-1)[0])
        except Exception:
            continue
        if not math.isfinite(s) or s <= 0 or s == 1.0:
            continue
        found["scale_min"].append(s)
        # the floor is the shortest decimal near s * 448 (scale forms round differently: keep a few)
        for digits in range(1, 8):
            floor = float(f"{s * 448.0:.{digits}g}")
            if abs(floor / 448.0 - s) <= 4e-7 * s and floor not in found["amax_floor"]:
                found["amax_floor"].append(floor)
    return found


def _moves(current: Recipe, probes: dict):
    for name, values in SEARCH_SPACE.items():
        for v in tuple(values) + tuple(probes.get(name, ())):
            if getattr(current, name) != v:
                try:
                    yield (name, v), current.replace(**{name: v})
                except Exception:  # an invalid combination (e.g. input-dtype scale with a scale form)
                    continue


def fit_quantizer(impl: Callable, cases: Optional[list[Case]] = None, seed: int = 0,
                  presets: Optional[list[str]] = None, max_rounds: int = 6, mx: bool = False) -> FitResult:
    """`mx`: an MXFP8 quantizer (1x32 groups): the MX case set and the MX presets are the start."""
    block = (1, 32) if mx else (128, 128)
    cases = case_set(seed, block) if cases is None else cases
    obs = observe(impl, cases)
    scorer = _Scorer(obs)
    probes = _probe_values(impl)
    names = presets or [n for n, r in PRESETS.items() if r.block == block]
    best_name, best_miss = None, None
    for name in names:
        m = scorer.misses(PRESETS[name], len(obs) if best_miss is None else len(best_miss) - 1)
        if m is not None and (best_miss is None or len(m) < len(best_miss)):
            best_name, best_miss = name, m
    current = PRESETS[best_name]
    for _ in range(max_rounds):
        if not best_miss:
            break
        improved = _best_single_move(current, best_miss, scorer, probes)
        if improved is None:
            improved = _best_pair_move(current, best_miss, scorer, probes)
        if improved is None:
            break
        current, best_miss = improved
    if not best_miss:
        current = _closest_equivalent(current, names, scorer)
    fitted = current.replace(name="fitted", source="refit-verify fit")
    nearest = min(names, key=lambda n: (len(recipe_diff(PRESETS[n], fitted)), names.index(n)))
    return FitResult(fitted, nearest, len(obs) - len(best_miss), len(obs),
                     [obs[i].case for i in best_miss], probes, scorer.count)


def _closest_equivalent(fitted: Recipe, names: list[str], scorer: _Scorer) -> Recipe:
    """Fields the case set cannot see are set back to a preset's values, so the diff printed names
    only what the cases prove; the preset needing the fewest proven changes wins (list order on ties)."""
    best = None
    near = sorted(names, key=lambda n: (len(recipe_diff(fitted, PRESETS[n])), names.index(n)))
    for n in near[:4]:  # the few presets already closest: each revert costs a full scoring
        cand = fitted
        for k, (_, theirs) in recipe_diff(fitted, PRESETS[n]).items():
            try:
                trial = cand.replace(**{k: theirs})
            except Exception:  # an invalid combination on the way
                continue
            if scorer.misses(trial, 0) == []:
                cand = trial
        size = (len(recipe_diff(PRESETS[n], cand)), names.index(n))
        if best is None or size < best[0]:
            best = (size, cand)
    return best[1]


def _best_single_move(current, best_miss, scorer, probes):
    best = None
    for _, cand in _moves(current, probes):
        limit = (len(best_miss) if best is None else len(best[1])) - 1
        m = scorer.misses(cand, limit)
        if m is not None and len(m) <= limit:
            best = (cand, m)
            if not m:
                break
    return best


def _best_pair_move(current, best_miss, scorer, probes, top: int = 12):
    """Two fields that only help together (e.g. a scale form and its quantize op)."""
    ranked = []
    for move, cand in _moves(current, probes):
        m = scorer.misses(cand, len(best_miss) + 2)
        if m is not None:
            ranked.append((len(m), move))
    ranked.sort(key=lambda t: t[0])
    moves = [mv for _, mv in ranked[:top]]
    for (f1, v1), (f2, v2) in itertools.combinations(moves, 2):
        if f1 == f2:
            continue
        try:
            cand = current.replace(**{f1: v1, f2: v2})
        except Exception:
            continue
        m = scorer.misses(cand, len(best_miss) - 1)
        if m is not None:
            return cand, m
    return None


def format_diff(result: FitResult) -> list[str]:
    diff = result.diff()
    if not diff:
        return [f"  (no field differs from {result.nearest})"]
    return [f"  {k}: {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in diff.items()]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if not isinstance(v, str) else v


def dataclass_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Recipe)]


def cmd_fit(args) -> int:
    """`refit-verify fit --quantizer FILE.py:FN [--json]`: exit 0 when a recipe fits, 1 with the closest."""
    import json

    from refit_verify.fp8.recipe_io import recipe_to_toml
    from refit_verify.usercode import load_callable

    fn = load_callable(args.quantizer, getattr(args, "kwargs", None))
    result = fit_quantizer(fn, seed=args.seed, mx=getattr(args, "mx", False))
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0 if result.exact else 1
    if result.exact:
        print(f"FIT: one recipe reproduces {args.quantizer} on {result.total}/{result.total} cases "
              f"(seed {args.seed}); as a diff from {result.nearest}:")
    else:
        print(f"NO FIT: the closest recipe reproduces {result.matched}/{result.total} cases; misses: "
              f"{', '.join(result.misses)}; as a diff from {result.nearest}:")
    print("\n".join(format_diff(result)))
    print("\n# recipe (save as FILE.toml; `refit-verify check --against FILE.toml` uses it)")
    print(recipe_to_toml(result.recipe), end="")
    return 0 if result.exact else 1
