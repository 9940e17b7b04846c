"""`refit-verify bench`: quantizer throughput vs copy bandwidth, verifier time, NCCL refit time.

Writes bench.json (every number, the card, versions, the command) and bench.md (tables).
Needs a CUDA device; the NCCL part needs two. Each part is optional (--parts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

PARTS = ("copy", "quant", "graph", "verify", "nccl", "peers", "fused", "digest")
RECIPES = ["vllm_per_block", "vllm_per_block_ue8m0", "nemo_rl", "nemo_rl_pow2"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refit-verify bench", description=__doc__)
    p.add_argument("--out", default="reports/bench", help="folder for bench.json and bench.md")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--impls", default="reference,compile,triton", help="reference, compile, triton")
    p.add_argument("--triton-variants", default="8:128,4:128,8:64,8:32,4:32,16:128,8:128:soft,8:32:soft",
                   help="num_warps:sub_m[:soft] launch variants timed for Triton")
    p.add_argument("--layers", type=int, default=4, help="distinct layers rotated through (defeats L2)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--models", default="llama-3.1-8b,qwen3-8b", help="verifier timing models (full depth)")
    p.add_argument("--nccl-model", default="llama-3.1-8b")
    p.add_argument("--nccl-reps", type=int, default=5)
    p.add_argument("--graph-all", action="store_true",
                   help="time every Triton variant under CUDA-graph replay (default: the best eager one)")
    p.add_argument("--compile-recipes", default="vllm_per_block,nemo_rl",
                   help="recipes timed under torch.compile (each shape compiles for seconds)")
    p.add_argument("--compile-budget-s", type=float, default=100.0)
    p.add_argument("--peer-layers", type=int, default=4, help="layers rotated through in the peers part")
    return p


def _variants(spec: str):
    out = []
    for v in spec.split(","):
        parts = v.split(":")
        kw = {"num_warps": int(parts[0]), "sub_m": int(parts[1])}
        if len(parts) > 2 and parts[2] == "soft":
            kw["soft_cast"] = True
        out.append((f"triton[w{parts[0]},m{parts[1]}{',soft' if 'soft_cast' in kw else ''}]", kw))
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("refit-verify bench needs a CUDA device (none found)", file=sys.stderr)
        return 2
    from refit_verify.bench import quant, timing
    from refit_verify.model import load_config

    parts = set(args.parts.split(","))
    recipes = args.recipes.split(",")
    os.makedirs(args.out, exist_ok=True)
    res = {"command": "refit-verify bench " + " ".join(argv if argv is not None else sys.argv[1:]),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": timing.device_info()}
    print(f"device: {res['device']['card']} x{res['device']['n_gpus']}, torch {res['device']['torch']}, "
          f"triton {res['device']['triton']}, facts {res['device']['kernel_device_facts']}", flush=True)

    def save():
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(os.path.join(args.out, "bench.md"), "w") as f:
            f.write(render_md(res))

    copy = timing.copy_bandwidth()
    res["copy"] = copy
    print(f"copy bandwidth: {copy['gbps']:.0f} GB/s (median of {copy['reps']})", flush=True)
    cfg = load_config("llama-3.1-8b")
    if parts & {"quant", "graph"}:
        layers = quant.make_layers(cfg, args.layers)
        shapes = [(None, tuple(w.shape)) for w in layers[0]]
        nbytes = quant.layer_bytes(shapes)
        res["floor"] = {"bytes_per_layer": nbytes, "ms_per_layer": nbytes / (copy["gbps"] * 1e9) * 1e3}
        print(f"floor at copy bandwidth: {res['floor']['ms_per_layer']:.3f} ms/layer", flush=True)
        impls = []
        for name in args.impls.split(","):
            impls += _variants(args.triton_variants) if name == "triton" else [(name, {})]
        if "quant" in parts:
            res["quant"] = quant.bench_quantizers(layers, copy["gbps"], recipes, impls, args.reps,
                                                  args.compile_budget_s, compile_recipes=args.compile_recipes.split(","))
            save()
        if "graph" in parts:
            best = {}
            for row in res.get("quant", []):
                if row.get("impl", "").startswith("triton") and "gbps" in row:
                    if row["gbps"] > best.get(row["recipe"], (0, None))[0]:
                        best[row["recipe"]] = (row["gbps"], row["impl"])
            kw_of = dict(_variants(args.triton_variants))
            res["graph"] = []
            for r in recipes:
                kws = list(kw_of.values()) if args.graph_all else [kw_of.get(best.get(r, (0, None))[1], {})]
                for kw in kws:
                    row = quant.bench_triton_graph(layers, copy["gbps"], r, reps=args.reps * 2, **kw)
                    row["impl"] = "graph " + next((k for k, v in kw_of.items() if v == kw), "triton")
                    res["graph"].append(row)
                print(f"  triton+graph {r:22s} {row['ms_per_layer']:.3f} ms/layer {row['gbps']:.0f} GB/s "
                      f"{100 * row['frac_copy']:.1f}% {kw}", flush=True)
            save()
        del layers
        torch.cuda.empty_cache()
    if parts & {"peers", "fused", "digest"}:
        from refit_verify.bench import peers

        if "peers" in parts:
            res["peers"] = peers.bench_quant_peers(copy["gbps"], args.peer_layers, compile_budget_s=args.compile_budget_s)
            save()
        if "fused" in parts:
            res["fused"] = peers.bench_fused_verify(copy["gbps"])
            save()
        if "digest" in parts:
            res["digest"] = peers.bench_digest(copy["gbps"])
            save()
    if "verify" in parts:
        res["verify"] = bench_verify(args.models.split(","))
        save()
    if "nccl" in parts:
        from refit_verify.bench.nccl import bench_nccl

        res["nccl"] = []
        for impl in ("triton", "reference"):
            r = bench_nccl(args.nccl_model, recipe_trainer="nemo_rl", recipe_loader="nemo_rl", impl=impl,
                           reps=args.nccl_reps)
            res["nccl"].append(r)
            print(f"nccl {impl}: {json.dumps({k: r.get(k) for k in ('ms', 'ratio_fp8_before_over_bf16', 'engine_fp8_equal', 'skipped')})}",
                  flush=True)
            save()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    print(f"wrote {args.out}/bench.json and bench.md")
    return 0


def bench_verify(models) -> list:
    """Whole-model streaming verification, weights resident on the GPU (the trainer's state)."""
    import torch

    from refit_verify.model import load_config
    from refit_verify.compare.stream import iter_device_weights, make_quantizer, verify_stream

    out = []
    pairs = [("triton:nemo_rl vs triton:nemo_rl (FP8-before vs FP8-after, matching)",
              make_quantizer("nemo_rl", "triton"), make_quantizer("nemo_rl", "triton")),
             ("triton:nemo_rl vs reference:nemo_rl (two implementations)",
              make_quantizer("nemo_rl", "triton"), make_quantizer("nemo_rl", "reference")),
             ("triton:nemo_rl vs triton:vllm_per_block (mismatched recipes)",
              make_quantizer("nemo_rl", "triton"), make_quantizer("vllm_per_block", "triton"))]
    for model in models:
        cfg = load_config(model)
        t0 = time.time()
        weights = dict(iter_device_weights(cfg, 0, "cuda"))
        torch.cuda.synchronize()
        gen_s = time.time() - t0
        for label, qa, qb in pairs:
            verify_stream(list(weights.items())[:12], qa, qb)  # warm-up: compile, allocator
            r = verify_stream(weights.items(), qa, qb)
            row = {"model": model, "pair": label, "seconds": r.seconds, "peak_extra_bytes": r.peak_extra_bytes,
                   "largest_tensor_bytes": r.largest_tensor_bytes,
                   "largest_fp8_tensor_bytes": r.largest_fp8_tensor_bytes,
                   "peak_over_largest_fp8": r.peak_extra_bytes / r.largest_fp8_tensor_bytes,
                   "n_tensors": r.n_tensors, "n_fp8": r.n_fp8, "n_equal": r.n_equal,
                   "code_mismatch_rate": r.n_code_mismatch / max(r.n_elements, 1),
                   "n_scale_mismatch": r.n_scale_mismatch, "gen_weights_s": gen_s,
                   "first_mismatch": r.mismatched[0].to_dict() if r.mismatched else None}
            out.append(row)
            print(f"verify {model} [{label}]: {r.seconds:.3f} s, peak extra {r.peak_extra_bytes / 2**20:.0f} MiB "
                  f"({row['peak_over_largest_fp8']:.2f}x largest fp8 tensor), equal {r.n_equal}/{r.n_fp8}", flush=True)
        del weights
        torch.cuda.empty_cache()
    return out


def render_md(res: dict) -> str:
    d = res["device"]
    lines = ["# refit-verify bench", "", f"- card: **{d['card']}** x{d['n_gpus']} ({d['sms']} SMs), torch {d['torch']}, "
             f"CUDA {d['cuda']}, triton {d['triton']}; clocks (SM, SM max, memory, driver) at start: {d.get('clocks', '?')}", f"- command: `{res['command']}`",
             f"- cast semantics: overflow {d['cast']['overflow']}, inf {d['cast']['inf']}; kernel device facts {d['kernel_device_facts']}"]
    if "copy" in res:
        lines.append(f"- device-to-device copy: **{res['copy']['gbps']:.0f} GB/s** (bytes read + written, median of {res['copy']['reps']})")
    if "floor" in res:
        lines.append(f"- floor for the Llama-3.1-8B linear set at that bandwidth: {res['floor']['ms_per_layer']:.3f} ms/layer")
    rows = res.get("quant", []) + res.get("graph", [])
    if rows:
        lines += ["", "## Quantizer (7 linears a layer, median)", "", "| impl | recipe | ms/layer | GB/s | % copy BW | ms/32 layers |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            if "gbps" in r:
                lines.append(f"| {r['impl']} | {r['recipe']} | {r['ms_per_layer']:.3f} | {r['gbps']:.0f} | "
                             f"{100 * r['frac_copy']:.1f} | {r['ms_model_32_layers']:.1f} |")
            else:
                lines.append(f"| {r['impl']} | {r['recipe']} | {r.get('error') or r.get('skipped')} | | | |")
    lines += _render_peers(res)
    if res.get("verify"):
        lines += ["", "## Streaming verifier (whole model, weights resident)", "",
                  "| model | pair | s | peak extra MiB | x largest fp8 tensor | equal |", "|---|---|---|---|---|---|"]
        for r in res["verify"]:
            lines.append(f"| {r['model']} | {r['pair']} | {r['seconds']:.3f} | {r['peak_extra_bytes'] / 2**20:.0f} | "
                         f"{r['peak_over_largest_fp8']:.2f} | {r['n_equal']}/{r['n_fp8']} |")
    for r in res.get("nccl", []):
        if "ms" not in r:
            lines += ["", f"NCCL: {r}"]
            continue
        lines += ["", f"## Refit over NCCL ({r['model']}, {r['layers']} layers, trainer quantizer {r['impl']}, "
                  f"{r['card']} x2, median of {r['reps']})", "",
                  "| path | payload GB | ms |", "|---|---|---|"]
        for m in ("bf16", "fp8_after", "fp8_before"):
            lines.append(f"| {m} | {r['payload_bytes'][m] / 1e9:.2f} | {r['ms'][m]:.1f} |")
        lines.append(f"\nratio fp8_before / bf16 = **{r['ratio_fp8_before_over_bf16']:.3f}**, "
                     f"fp8_before / fp8_after = {r['ratio_fp8_before_over_fp8_after']:.3f}; "
                     f"engine FP8 bytes equal across paths: {r['engine_fp8_equal']} ({r['n_fp8_compared']} tensors)")
    return "\n".join(lines) + "\n"


def _render_peers(res: dict) -> list:
    lines = []
    if res.get("peers"):
        lines += ["", "## Peers, one run, one card (Llama-3.1-8B linear set, 7 linears a layer, median of device events)", "",
                  "| what | recipe | ms/layer | % of copy BW | ms/32 layers |", "|---|---|---|---|---|"]
        for r in res["peers"]:
            if "ms_per_layer" in r:
                lines.append(f"| {r['impl']} | {r['recipe']} | {r['ms_per_layer']:.4f} | {100 * r['frac_copy']:.1f}% | "
                             f"{r['ms_model_32_layers']:.2f} |")
            else:
                lines.append(f"| {r['impl']} | {r['recipe']} | {r.get('error') or r.get('skipped')} | | |")
    if res.get("fused"):
        lines += ["", "## Fused verifier, whole model (both sides Triton, weights resident; `verify_stream`, "
                  "bitwise findings, with and without magnitudes)", "",
                  "| model | pair | magnitudes | ms (median) | % of copy BW | kernels alone ms | blocks compared | equal "
                  "| codes differ | scales differ | peak extra MiB | largest tensor MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["fused"]:
            frac = f"{100 * r['frac_copy']:.0f}%" if "frac_copy" in r else ""
            lines.append(f"| {r['model']} | {r['pair']} | {'yes' if r.get('metrics', True) else 'no'} | "
                         f"{r['ms_median']:.2f} | {frac} | {r.get('kernels_ms', float('nan')):.2f} | "
                         f"{r.get('blocks_compared', '')}/{r.get('blocks', '')} | {r['n_equal']}/{r['n_fp8']} | "
                         f"{r['n_code_mismatch']} | {r['n_scale_mismatch']} | {r['peak_extra_bytes'] / 2**20:.1f} | "
                         f"{r['largest_tensor_bytes'] / 2**20:.0f} |")
        lines.append("\n% of copy BW: the weights' bf16 bytes read once over the time, against the copy figure.")
    if res.get("digest"):
        r = res["digest"]
        lines += ["", f"## Digest kernel: {r['model']}, {r['n_tensors']} FP8 tensors, {r['bytes'] / 1e9:.2f} GB: "
                  f"**{r['ms']:.2f} ms** ({r['gbps_read']:.0f} GB/s read, {100 * r['frac_copy']:.0f}% of the copy figure); "
                  f"equals the CPU definition: {r['equals_cpu_definition']}"]
    return lines


if __name__ == "__main__":
    sys.exit(main())
