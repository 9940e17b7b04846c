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
    from refit_verify.jobs.refit import model_source, resolve_placement, shared_refit

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
    placement = resolve_placement(ctx, cfg)  # vLLM's rule on a straddling model is reported by refit_pipeline
    r = shared_refit(ctx, cfg, weights, trainer, engine, placement)
    for p in r.paths.values():
        if not p.completed:
            res.fail(f"{p.path}: refit", f"the {p.path} path did not complete; logits use what was loaded", repro)
    device = ctx.device if ctx.device == "cuda" else None
    raw = {}
    for name, params in (("bf16", weights), ("fp8_before", engine_params(r, "before")),
                         ("fp8_after", engine_params(r, "after"))):
        kw = {} if name == "bf16" else {"backend": backend}
        raw[name] = LlamaModel(cfg, params, device=device, **kw)
    tok = model_tokenizer(ctx)
    if tok is not None:  # a real model with its tokenizer: chat prompts, greedy text, figures on generated tokens
        res.metrics = {"model": cfg.name, "weights": cfg.source, "backend": backend, "backend_why": why,
                       "trainer_recipe": trainer, "engine_recipe": engine, "placement": placement,
                       "engines_bitwise_equal": r.bitwise_equal}
        res.metrics.update(text_drift(ctx, res, raw, tok, r.bitwise_equal, repro))
        m = res.metrics
        res.reason = res.reason or (f"{len(res.failures)} failure(s); first: {res.failures[0].reason}" if res.failures else
                                    f"gen_kl_error {m['bf16_vs_fp8_before_gen_kl_error']:.3g}, token_mult_prob_error "
                                    f"{m['bf16_vs_fp8_before_token_mult_prob_error']:.4g} (bf16 vs fp8_before: "
                                    f"{m['bf16_vs_fp8_before_policy']}); greedy agreement "
                                    f"{m['bf16_vs_fp8_before_greedy_agreement']:.2f}")
        return res
    prompts = make_prompts(cfg.vocab_size, n_prompts, length, ctx.seed)
    models = {}
    for name, model in raw.items():
        ctx.progress(f"forward {name}")
        models[name] = _CachedLogits(model, prompts)
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


# ------------------------------------------------------------------ real text (GGUF models with a tokenizer)

def policy_judgement(metric: str, value: float) -> str:
    """pass / warn / fail of one figure against the packaged policy's limits (the gate applies the same)."""
    from refit_verify.report.policy import load_policy

    rule = load_policy().rules.get(metric)
    if rule is None:
        return "unjudged"
    if (rule.max is not None and value > rule.max) or (rule.min is not None and value < rule.min):
        return "fail"
    if (rule.warn_max is not None and value > rule.warn_max) or (rule.warn_min is not None and value < rule.warn_min):
        return "warn"
    return "pass"


def model_tokenizer(ctx: JobContext):
    """The chat tokenizer of a GGUF model source, else None (synthetic weights have no text)."""
    from refit_verify.model.gguf import resolve_gguf

    path = resolve_gguf(ctx.model_path) if ctx.model_path else None
    if path is None or ctx.options.get("text", "1") == "0":
        return None
    from refit_verify.model.text import load_tokenizer

    return load_tokenizer(path)


def marked(tok, gen: list, div) -> str:
    """Decoded continuation with ⟦ at the first token that differs from the reference's."""
    if div is None:
        return tok.decode(gen)
    return tok.decode(gen[:div]) + "⟦" + tok.decode(gen[div:])


def text_drift(ctx: JobContext, res: JobResult, models: dict, tok, bitwise_equal: bool, repro: str) -> dict:
    """Greedy continuations of chat prompts per engine; figures on the tokens each engine generated.

    For a pair (ref, test) the sequence is prompt + test's greedy continuation (the engine samples, the
    trainer scores: NeMo-RL's setting); both score it teacher-forced. Returns the metrics to add."""
    from refit_verify.model.logits import compare_logits, first_divergence, generated_logits, greedy_tokens
    from refit_verify.model.text import PROMPTS

    steps = int(ctx.options.get("greedy_steps", 20))
    prompts = PROMPTS[: int(ctx.options.get("prompts", len(PROMPTS)))]
    ids = [tok.encode(tok.chat_prompt(p)) for p in prompts]
    gen = {}
    for name, m in models.items():
        ctx.progress(f"greedy {name}: {len(prompts)} prompts x {steps} tokens")
        gen[name] = [greedy_tokens(m, x, steps, tok.eos_id) for x in ids]
    memo: dict = {}

    def scored(model: str, owner: str, i: int):
        if (model, owner, i) not in memo:
            memo[model, owner, i] = generated_logits(models[model], ids[i], gen[owner][i])
        return memo[model, owner, i]

    out, rows = {}, []
    for ref, test in BF16_PAIRS + (PARITY_PAIR,):
        ctx.progress(f"score {ref} vs {test}")
        per = [compare_logits(scored(ref, test, i), scored(test, test, i), tokens=torch.tensor(gen[test][i]))
               for i in range(len(prompts))]
        whole = compare_logits(torch.cat([scored(ref, test, i) for i in range(len(prompts))]),
                               torch.cat([scored(test, test, i) for i in range(len(prompts))]),
                               tokens=torch.tensor([t for g in gen[test] for t in g]), ref_name=ref, test_name=test)
        divs = [first_divergence(gen[ref][i], gen[test][i]) for i in range(len(prompts))]
        agree = statistics.mean((len(gen[test][i]) if d is None else d) / max(len(gen[ref][i]), len(gen[test][i]))
                                for i, d in enumerate(divs))
        subj = f"{ref} vs {test}"
        if (ref, test) == PARITY_PAIR:
            for i, p in enumerate(per):
                res.figure("logits_cosine", p.cosine, f"prompt {i}: {subj}")
                res.figure("top1_match", p.top1_agree, f"prompt {i}: {subj}")
                if bitwise_equal and (not p.identical or divs[i] is not None):
                    res.fail(f"prompt {i}: {subj}", "engines hold identical bytes but decode/score differently "
                             f"(first divergence {divs[i]}, max abs {p.max_abs:.3g})", repro)
        else:
            tmpe = statistics.median(p.token_mult_prob_error for p in per)  # NeMo-RL gates the median
            res.figure("gen_kl_error", whole.gen_kl_error, subj)
            res.figure("token_mult_prob_error", tmpe, subj)
            res.figure("kl_max", whole.kl_max, subj)
            key = f"{ref}_vs_{test}"
            out.update({f"{key}_cosine": whole.cosine, f"{key}_kl_mean": whole.kl_mean,
                        f"{key}_token_mult_prob_error": tmpe, f"{key}_gen_kl_error": whole.gen_kl_error,
                        f"{key}_top1": whole.top1_agree, f"{key}_greedy_agreement": agree,
                        f"{key}_policy": f"token_mult_prob_error {policy_judgement('token_mult_prob_error', tmpe)}, "
                                         f"gen_kl_error {policy_judgement('gen_kl_error', whole.gen_kl_error)}"})
        rows.append({"pair": subj, **{k: v for k, v in whole.to_dict().items() if k not in ("ref", "test")},
                     "greedy_agreement": agree, "first_divergence": divs})
    res.tables["pairs"] = rows
    res.tables["greedy_text"] = [
        {"prompt": p, "bf16": tok.decode(gen["bf16"][i]),
         **{n: marked(tok, gen[n][i], first_divergence(gen["bf16"][i], gen[n][i])) for n in ("fp8_before", "fp8_after")}}
        for i, p in enumerate(prompts)]
    out.update({"prompts": len(prompts), "greedy_steps": steps, "text": "chat template, greedy, ⟦ = first divergence vs bf16"})
    return out
