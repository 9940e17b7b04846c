"""Jobs that need neither the pipeline nor the model forward.

- quantizer_matrix: every weight preset vs the engine recipe on the seeded case set.
(FP8-before vs FP8-after on the model, with what-if rows per preset: refit_verify.jobs.refit.refit_pipeline.)
- cast_semantics: how this torch casts out-of-range values to e4m3 (changed across releases).
- cuda_parity: same recipe on CPU and CUDA, bytes compared (FACTS.md §3: not to be assumed).
"""

from __future__ import annotations

import json
import shlex

from refit_verify.jobs import JobContext, JobResult, register_job

# Facts from FACTS.md §3 (measured) that must keep holding: (trainer, engine) -> case prefix on
# which the two are bit-identical. The reference against itself is the sanity row.
EXPECT_IDENTICAL = {
    ("vllm_per_block", "vllm_per_block"): "",
    ("vllm_per_block_ue8m0", "vllm_per_block_ue8m0"): "",
    ("nemo_rl_pow2", "vllm_per_block_ue8m0"): "randn_",
}


def _as_pair_quantizer(recipe: str):
    from refit_verify.fp8 import quantize

    def f(w):
        q = quantize(w, recipe)
        return q.data, q.scale_inv

    return f


def check_repro(ctx: JobContext, trainer: str, engine: str, case: str) -> str:
    return shlex.join([ctx.cli_prefix, "check", "--quantizer", "refit_verify.fp8:quantize",
                       "--kwargs", json.dumps({"recipe": trainer}), "--against", engine,
                       "--case", case, "--seed", str(ctx.seed)])


@register_job("quantizer_matrix", suites=("pr", "nightly", "full"))
def quantizer_matrix(ctx: JobContext) -> JobResult:
    """Each weight preset vs the engine recipe(s) on the seeded case set (shapes, magnitudes, specials)."""
    from refit_verify.cases import default_cases
    from refit_verify.check import check_quantizer
    from refit_verify.fp8 import WEIGHT_PRESETS

    engines = ["vllm_per_block"] + (["vllm_per_block_ue8m0"] if ctx.suite in ("nightly", "full") else [])
    cases = default_cases(ctx.seed)
    res = JobResult("quantizer_matrix")
    rows = []
    for engine in engines:
        for trainer in WEIGHT_PRESETS:
            ctx.progress(f"{trainer} vs {engine}")
            out = check_quantizer(_as_pair_quantizer(trainer), engine, cases, seed=ctx.seed)
            randn = [c for c in out.cases if c.case.startswith("randn_") and "sqnr_db" in c.metrics]
            sqnr = [c.metrics["sqnr_db"] for c in randn]
            rows.append({
                "trainer": trainer, "engine": engine,
                "identical_cases": sum(c.verdict == "pass" for c in out.cases), "cases": len(out.cases),
                "errors": sum(c.verdict == "error" for c in out.cases),
                "randn_code_mismatch_rate": max((c.metrics["code_mismatch_rate"] for c in randn), default=0.0),
                "randn_min_sqnr_db": min(sqnr, default=float("nan")),
                "differing_cases": [c.case for c in out.failures()],
            })
            if trainer == engine:  # the trainer's own error vs BF16 is what the SQNR gate is about
                for c in randn:
                    res.figure("sqnr_db", c.metrics["sqnr_db"], f"{trainer}/{c.case}")
                    res.figure("calc_diff", c.metrics["calc_diff"], f"{trainer}/{c.case}")
            prefix = EXPECT_IDENTICAL.get((trainer, engine))
            if prefix is None:
                continue
            for c in out.failures():
                if c.case.startswith(prefix):
                    res.fail(f"{trainer} vs {engine}: {c.case}",
                             f"expected bit-identical (FACTS.md §3): {c.reason}",
                             check_repro(ctx, trainer, engine, c.case))
    res.tables["matrix"] = rows
    res.metrics = {"pairs": len(rows), "cases": len(cases), "engines": ", ".join(engines)}
    if res.failures:
        res.reason = f"{len(res.failures)} expected-identical case(s) differ"
    return res


@register_job("cast_semantics", suites=("pr", "nightly", "full"))
def cast_semantics(ctx: JobContext) -> JobResult:
    """Probe how float32 -> e4m3 casts out-of-range values, on CPU and (if present) CUDA."""
    import torch

    from refit_verify.fp8.format import probe_cast_semantics

    res = JobResult("cast_semantics")
    probes = {"cpu": probe_cast_semantics("cpu")}
    if torch.cuda.is_available():
        probes["cuda"] = probe_cast_semantics("cuda")
    res.tables["probe"] = [{"device": d, "value": v, "code": c} for d, p in probes.items() for v, c in p["codes"].items()]
    res.metrics = {f"{d}_{k}": p[k] for d, p in probes.items() for k in ("overflow", "inf")}
    res.metrics["torch"] = torch.__version__
    if "cuda" in probes and probes["cuda"]["codes"] != probes["cpu"]["codes"]:
        diff = [v for v in probes["cpu"]["codes"] if probes["cpu"]["codes"][v] != probes["cuda"]["codes"][v]]
        res.fail("cpu vs cuda", f"e4m3 cast differs between CPU and CUDA for {', '.join(diff)}",
                 ctx.repro_run("cast_semantics"))
    res.reason = ("unclamped recipes (vllm_per_block) give " +
                  ("±448 for values past 448" if probes["cpu"]["overflow"] == "saturate" else "NaN for values >= 464")
                  + " on this torch")
    return res


@register_job("cuda_parity", suites=("nightly", "full"), needs=("cuda",))
def cuda_parity(ctx: JobContext) -> JobResult:
    """Same recipe on CPU and CUDA: bytes compared per case (informational figures per preset)."""
    from refit_verify.cases import default_cases
    from refit_verify.compare import compare_fp8
    from refit_verify.fp8 import WEIGHT_PRESETS, quantize

    res = JobResult("cuda_parity")
    rows = []
    for p in WEIGHT_PRESETS:
        ctx.progress(p)
        n_diff, differing = 0, []
        for case in default_cases(ctx.seed):
            x = case.tensor()
            try:
                a, b = quantize(x, p, case.name), quantize(x.cuda(), p, case.name)
            except Exception as exc:  # a preset failing like its implementation: same on both
                differing.append(f"{case.name}: {type(exc).__name__}")
                continue
            cmp = compare_fp8(a.data, a.scale_inv, b.data.cpu(), b.scale_inv.cpu(), a.recipe.block, case.name)
            if not cmp.equal:
                n_diff += cmp.n_code_mismatch
                differing.append(case.name)
        rows.append({"recipe": p, "code_mismatch": n_diff, "differing_cases": differing})
        res.figure("cpu_cuda_code_mismatch", n_diff, p)
    res.tables["parity"] = rows
    return res
