"""Logits jobs for `refit-verify run`.

- logits_drift: the model forward run from what each refit path left in the engine (FP8-before,
  FP8-after) and from the trainer's BF16 weights. BF16 vs FP8 pairs carry the RL-facing figures
  (gen_kl_error, token_mult_prob_error: quantization itself moves them, within the NeMo-RL gates);
  FP8-before vs FP8-after carries the parity figures (logits_cosine, top1_match), which only mean
  something between two engines that should be identical: BF16 vs FP8 is never top-1 identical on a
  synthetic model with flat logits, so those figures are not emitted for the BF16 pairs.
"""

from __future__ import annotations

import statistics

import torch

from refit_verify.jobs import JobContext, JobResult, register_job

BF16_PAIRS = (("bf16", "fp8_before"), ("bf16", "fp8_after"))
PARITY_PAIR = ("fp8_before", "fp8_after")


class _CachedLogits:
    """Teacher-forced logits are computed once per model; greedy decoding still runs the model."""

    def __init__(self, model, prompts: torch.Tensor):
        self.model, self.prompts = model, prompts
        self.cached = model.logits(prompts).float().cpu()

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape == self.prompts.shape and torch.equal(input_ids.cpu(), self.prompts.cpu()):
            return self.cached
        return self.model.logits(input_ids)


def per_position_kl(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """KL(ref || test) per position [B, T], float64."""
    la, lb = ref.double().log_softmax(-1), test.double().log_softmax(-1)
    return (la.exp() * (la - lb)).sum(-1)


def engine_params(r, path: str) -> dict:
    """What the engine holds after one refit path (vLLM names, fused qkv/gate_up, FP8 + scales)."""
    return r.stores[path].parameters()


def _backend(device: str) -> tuple[str, str]:
    if device != "cuda":
        return "emulated", "CPU: dequantize + float32 matmul"
    from refit_verify.model.native import native_available

    ok, why = native_available()
    return ("native", why) if ok else ("emulated", why)


@register_job("logits_drift", suites=("pr", "nightly", "full"))
def logits_drift(ctx: JobContext) -> JobResult:
    """BF16 vs FP8-before vs FP8-after engines: logits, KL, token probabilities, greedy tokens."""
    from refit_verify.model.llama import LlamaModel
    from refit_verify.model.logits import compare_logits, differential, make_prompts
    from refit_verify.jobs.refit import model_source
    from refit_verify.refit.run import run_refit

    res = JobResult("logits_drift")
    cfg, weights = model_source(ctx)
    if cfg.moe_router_experts:
        res.verdict, res.reason = "skipped", f"{cfg.name}: MoE forward not implemented (dense Llama family only)"
        return res
    trainer = ctx.options.get("trainer_recipe", "vllm_per_block")
    engine = ctx.options.get("engine_recipe", "vllm_per_block")
    n_prompts, length = int(ctx.options.get("prompts", 4)), int(ctx.options.get("prompt_len", 24))
    steps = int(ctx.options.get("greedy_steps", 8))
    backend, why = _backend(ctx.device)
    repro = ctx.repro_run("logits_drift")

    ctx.progress(f"{cfg.name}: refit both paths")
    placement = ctx.options.get("placement", "exact")  # see refit_pipeline: vLLM's rule is reported there
    r = run_refit(cfg, weights, before=trainer, after=engine, seed=ctx.seed, placement=placement)
    for p in r.paths.values():
        if not p.completed:
            res.fail(f"{p.path}: refit", f"the {p.path} path did not complete; logits use what was loaded", repro)
    prompts = make_prompts(cfg.vocab_size, n_prompts, length, ctx.seed)
    device = ctx.device if ctx.device == "cuda" else None
    models = {}
    for name, params in (("bf16", weights), ("fp8_before", engine_params(r, "before")),
                         ("fp8_after", engine_params(r, "after"))):
        ctx.progress(f"forward {name}")
        kw = {} if name == "bf16" else {"backend": backend}
        models[name] = _CachedLogits(LlamaModel(cfg, params, device=device, **kw), prompts)
    ctx.progress("differential")
    d = differential(models, prompts, pairs=BF16_PAIRS + (PARITY_PAIR,), steps=steps, seed=ctx.seed,
                     meta={"config": cfg.name, "backend": backend})
    logits = {n: m.cached for n, m in models.items()}

    for ref, test in BF16_PAIRS:
        subj = f"{ref} vs {test}"
        whole = d.pair(ref, test)
        per_prompt = [compare_logits(logits[ref][i], logits[test][i]) for i in range(n_prompts)]
        res.figure("gen_kl_error", whole.gen_kl_error, subj)  # NeMo-RL: mean over the batch's tokens
        # NeMo-RL gates the median of token_mult_prob_error (over steps; over prompts here)
        res.figure("token_mult_prob_error", statistics.median(p.token_mult_prob_error for p in per_prompt), subj)
        res.figure("kl_max", whole.kl_max, subj)  # reported, not gated
    for i in range(n_prompts):
        p = compare_logits(logits["fp8_before"][i], logits["fp8_after"][i])
        subj = f"prompt {i}: fp8_before vs fp8_after"
        res.figure("logits_cosine", p.cosine, subj)
        res.figure("top1_match", p.top1_agree, subj)
        if not p.identical and r.bitwise_equal:
            res.fail(subj, f"engines hold identical bytes but logits differ (max abs {p.max_abs:.3g})", repro)

    kl = per_position_kl(logits["bf16"], logits["fp8_before"]).mean(0)
    res.tables["logits_kl"] = [{"position": t, "kl": float(v)} for t, v in enumerate(kl)]
    res.tables["pairs"] = [p.to_dict() for p in d.pairs]
    res.tables["greedy"] = [{k: v for k, v in g.to_dict().items() if k != "violations"} | {"violations": len(g.violations)}
                            for g in d.greedy]
    for g in d.greedy:
        if (g.ref, g.test) == PARITY_PAIR and r.bitwise_equal and g.prompts_identical != g.n_prompts:
            res.fail("greedy: fp8_before vs fp8_after", f"identical engines decoded differently: {g.first_divergence}",
                     repro)
    bf = d.pair("bf16", "fp8_before")
    par = d.pair(*PARITY_PAIR)
    res.metrics = {
        "model": cfg.name, "backend": backend, "backend_why": why, "trainer_recipe": trainer, "engine_recipe": engine,
        "placement": placement,
        "prompts": n_prompts, "prompt_len": length, "greedy_steps": steps, "engines_bitwise_equal": r.bitwise_equal,
        "bf16_vs_fp8_before_gen_kl_error": bf.gen_kl_error, "bf16_vs_fp8_before_cosine": bf.cosine,
        "bf16_vs_fp8_before_top1": bf.top1_agree, "bf16_vs_fp8_before_kl_max": bf.kl_max,
        "fp8_before_vs_after_max_abs": par.max_abs, "fp8_before_vs_after_identical": par.identical,
    }
    if d.greedy:
        res.metrics["bf16_vs_fp8_before_greedy_agreement"] = d.greedy_pair("bf16", "fp8_before").token_agreement
    res.reason = res.reason or (f"{len(res.failures)} failure(s); first: {res.failures[0].reason}" if res.failures else
                                f"gen_kl_error {bf.gen_kl_error:.3g} (bf16 vs fp8_before); FP8-before vs FP8-after "
                                + ("identical logits" if par.identical else f"max abs {par.max_abs:.3g}"))
    return res
