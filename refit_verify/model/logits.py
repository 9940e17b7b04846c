"""Logits differential: how far a weight difference moves logits, logprobs and greedy tokens.

Figures are the ones RL teams gate on (FACTS.md §6): NeMo-RL's token_mult_prob_error and
gen_kl_error, Megatron-Bridge's cosine / top-1 / top-k, vLLM's greedy check (at the first
divergent token each side's choice must be in the other's top-k). "ref" plays the trainer
(policy) and "test" the generation engine, so tokens default to the test side's greedy choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Protocol

import torch

from refit_verify.cases import case_seed
from refit_verify.errors import BadInputError


class HasLogits(Protocol):
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor: ...


def make_prompts(vocab_size: int, n_prompts: int = 4, length: int = 24, seed: int = 0) -> torch.Tensor:
    """Deterministic token ids [n_prompts, length] from (seed, shape): the same prompts every run."""
    g = torch.Generator().manual_seed(case_seed(seed, f"prompts/{vocab_size}/{n_prompts}/{length}"))
    return torch.randint(0, vocab_size, (n_prompts, length), generator=g)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no inf/nan


@dataclass(frozen=True)
class LogitsDiff:
    ref: str
    test: str
    n_tokens: int
    max_abs: float
    mean_abs: float
    cosine: float  # whole logits tensor, float64
    cosine_min_token: float  # worst single position (Megatron-Bridge gates per prompt)
    kl_mean: float  # KL(ref || test) per position, nats
    kl_max: float
    top1_agree: float
    topk_overlap: float  # mean |topk(ref) & topk(test)| / k
    k: int
    token_mult_prob_error: float  # NeMo-RL: mean exp(|logp_ref - logp_test|) on the chosen tokens
    gen_kl_error: float  # NeMo-RL: mean k3 estimator exp(r) - r - 1, r = logp_ref - logp_test
    identical: bool  # bitwise-identical logits

    def to_dict(self) -> dict:
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare_logits(ref: torch.Tensor, test: torch.Tensor, *, k: int = 5, tokens: torch.Tensor | None = None,
                   ref_name: str = "ref", test_name: str = "test") -> LogitsDiff:
    """Compare two logits tensors [..., V] position by position; `tokens` [...] are the sampled ones."""
    if ref.shape != test.shape:
        raise BadInputError(f"logits shapes differ: {tuple(ref.shape)} vs {tuple(test.shape)}", f"{ref_name}/{test_name}")
    v = ref.shape[-1]
    a, b = ref.reshape(-1, v).double(), test.reshape(-1, v).double()
    la, lb = a.log_softmax(-1), b.log_softmax(-1)
    kl = (la.exp() * (la - lb)).sum(-1)
    tok = b.argmax(-1) if tokens is None else tokens.reshape(-1)
    r = la.gather(1, tok[:, None])[:, 0] - lb.gather(1, tok[:, None])[:, 0]
    kk = min(k, v)
    ta, tb = a.topk(kk, -1).indices, b.topk(kk, -1).indices
    overlap = (ta[:, :, None] == tb[:, None, :]).any(-1).double().sum(-1) / kk
    diff = (a - b).abs()
    tok_cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    glob = float((a * b).sum() / (a.norm() * b.norm())) if a.norm() * b.norm() > 0 else 1.0
    return LogitsDiff(
        ref=ref_name, test=test_name, n_tokens=a.shape[0],
        max_abs=float(diff.max()), mean_abs=float(diff.mean()),
        cosine=glob, cosine_min_token=float(tok_cos.min()),
        kl_mean=float(kl.mean()), kl_max=float(kl.max()),
        top1_agree=float((a.argmax(-1) == b.argmax(-1)).double().mean()),
        topk_overlap=float(overlap.mean()), k=kk,
        token_mult_prob_error=float(r.abs().exp().mean()),
        gen_kl_error=float((r.exp() - r - 1).mean()),
        identical=bool(torch.equal(ref, test)),
    )


@dataclass(frozen=True)
class GreedyTrace:
    tokens: torch.Tensor  # [B, steps] generated ids
    topk: torch.Tensor  # [B, steps, k] top-k ids at each generated position


@torch.no_grad()
def greedy_decode(model: HasLogits, prompts: torch.Tensor, steps: int, k: int = 5) -> GreedyTrace:
    """Greedy continuation; no KV cache (the models are tiny), one full forward per step."""
    seq = prompts.clone()
    toks, tops = [], []
    for _ in range(steps):
        last = model.logits(seq)[:, -1].float().cpu()
        nxt = last.argmax(-1)
        toks.append(nxt)
        tops.append(last.topk(min(k, last.shape[-1]), -1).indices)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return GreedyTrace(torch.stack(toks, 1), torch.stack(tops, 1))


@dataclass(frozen=True)
class GreedyResult:
    ref: str
    test: str
    steps: int
    k: int
    token_agreement: float  # mean over prompts of (identical prefix length / steps)
    prompts_identical: int
    n_prompts: int
    first_divergence: list  # per prompt: step index or None
    topk_consistent: bool  # vLLM rule holds at every first divergence
    violations: list = field(default_factory=list)  # prompts where it does not, with tokens

    def to_dict(self) -> dict:
        return asdict(self)


def compare_greedy(ref: GreedyTrace, test: GreedyTrace, ref_name: str = "ref", test_name: str = "test") -> GreedyResult:
    n, steps = ref.tokens.shape
    firsts, violations, agree = [], [], 0.0
    for i in range(n):
        neq = (ref.tokens[i] != test.tokens[i]).nonzero()
        if neq.numel() == 0:
            firsts.append(None)
            agree += 1.0
            continue
        s = int(neq[0])
        firsts.append(s)
        agree += s / steps
        ta, tb = int(ref.tokens[i, s]), int(test.tokens[i, s])
        if ta not in test.topk[i, s].tolist() or tb not in ref.topk[i, s].tolist():
            violations.append({"prompt": i, "step": s, ref_name: ta, test_name: tb})
    return GreedyResult(ref_name, test_name, steps, ref.topk.shape[-1], agree / n, firsts.count(None), n,
                        firsts, not violations, violations)


@dataclass(frozen=True)
class Differential:
    pairs: list  # [LogitsDiff]
    greedy: list  # [GreedyResult]
    n_prompts: int
    prompt_len: int
    steps: int
    seed: int
    meta: dict = field(default_factory=dict)

    def pair(self, ref: str, test: str) -> LogitsDiff:
        return next(p for p in self.pairs if (p.ref, p.test) == (ref, test))

    def greedy_pair(self, ref: str, test: str) -> GreedyResult:
        return next(p for p in self.greedy if (p.ref, p.test) == (ref, test))

    def to_dict(self) -> dict:
        return {"pairs": [p.to_dict() for p in self.pairs], "greedy": [g.to_dict() for g in self.greedy],
                "n_prompts": self.n_prompts, "prompt_len": self.prompt_len, "steps": self.steps,
                "seed": self.seed, "meta": self.meta}


DEFAULT_PAIRS = (("bf16", "fp8_before"), ("bf16", "fp8_after"), ("fp8_before", "fp8_after"))


def differential(models: Mapping[str, HasLogits], prompts: torch.Tensor, *, pairs=None, steps: int = 8,
                 k: int = 5, seed: int = 0, meta: dict | None = None) -> Differential:
    """Teacher-forced logits comparison on `prompts` plus independent greedy decoding, per pair."""
    pairs = [p for p in (pairs or DEFAULT_PAIRS) if p[0] in models and p[1] in models]
    if not pairs:
        raise BadInputError(f"no comparable pair among models {sorted(models)}")
    names = sorted({n for p in pairs for n in p})
    logits = {n: models[n].logits(prompts).cpu() for n in names}
    traces = {n: greedy_decode(models[n], prompts, steps, k) for n in names} if steps else {}
    diffs = [compare_logits(logits[a], logits[b], k=k, ref_name=a, test_name=b) for a, b in pairs]
    greedy = [compare_greedy(traces[a], traces[b], a, b) for a, b in pairs] if steps else []
    return Differential(diffs, greedy, prompts.shape[0], prompts.shape[1], steps, seed, meta or {})


def default_differential(config: str = "tiny-llama", *, seed: int = 0, before_recipe="vllm_per_block",
                         after_recipe="vllm_per_block", n_prompts: int = 4, prompt_len: int = 24, steps: int = 8,
                         k: int = 5, backend: str = "emulated", hf: dict | None = None) -> Differential:
    """BF16 trainer vs the engine after FP8-before and FP8-after refits of the same weights.

    Without a bug in either path both engines hold the same bytes when the two recipes match;
    `before_recipe` is the trainer-side quantizer, `after_recipe` the engine's load-time one.
    """
    from refit_verify.model.config import load_config
    from refit_verify.model.llama import LlamaModel
    from refit_verify.model.weights import build_engine_params, synthesize_weights

    cfg = load_config(config)
    weights_note = "synthetic" if hf is None else "given"
    hf = synthesize_weights(cfg, seed) if hf is None else hf
    models = {
        "bf16": LlamaModel(cfg, hf),
        "fp8_before": LlamaModel(cfg, build_engine_params(cfg, hf, before_recipe), backend=backend),
        "fp8_after": LlamaModel(cfg, build_engine_params(cfg, hf, after_recipe), backend=backend),
    }
    prompts = make_prompts(cfg.vocab_size, n_prompts, prompt_len, seed)
    meta = {"config": cfg.name, "before_recipe": str(before_recipe), "after_recipe": str(after_recipe),
            "backend": backend, "torch": torch.__version__, "weights": weights_note}
    return differential(models, prompts, steps=steps, k=k, seed=seed, meta=meta)


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="BF16 vs FP8-before vs FP8-after logits differential")
    ap.add_argument("--config", default="tiny-llama")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before-recipe", default="vllm_per_block")
    ap.add_argument("--after-recipe", default="vllm_per_block")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args(argv)
    d = default_differential(args.config, seed=args.seed, before_recipe=args.before_recipe,
                             after_recipe=args.after_recipe, steps=args.steps)
    print(json.dumps(d.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
