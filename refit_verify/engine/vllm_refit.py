"""`refit-verify run --engine vllm`: both refit paths through the *real* vLLM loader.

Same result shape as the reference `refit_verify.refit.run.run_refit` (a RefitResult), but the
engine is vLLM 0.33's LlamaForCausalLM built on CPU by `get_model` (refit_verify.engine.vllm_cpu),
and each transported batch goes to its `model.load_weights`. After the refit the engine's
parameters are copied into a reference `EngineStore` (placement "vllm") together with what was
sent, so the reference comparisons, error-vs-source metrics and post-load checks apply unchanged.

What real vLLM does differently from the reference loader, reported as findings:
- FP8-after: vLLM 0.33 does not quantize BF16 on load. The BF16 values are value-cast into the
  float8 parameter and the old scale stays: garbage (relative error ~1). Hazard
  `engine_no_online_quant`. The reference loader quantizes on load, as NeMo-RL's patched loader
  does; `patched_loader=True` reproduces that patch in front of the real loader.
- A loader exception (e.g. vLLM's raise on a 64-row KV shard) becomes a `load_failed` finding.

vllm is imported lazily; everything here raises a clear RuntimeError where vllm is absent.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import torch

from refit_verify.fp8 import quantize

SCALE_SUFFIX = "_scale_inv"
ENGINE = "vllm"


def vllm_llama_config(cfg) -> dict:
    """HF config.json for vLLM's LlamaForCausalLM with a block-FP8 quantization_config."""
    from refit_verify.engine.vllm_cpu import _quant_cfg_json

    unsupported = [k for k, v in (("bf16_layers", cfg.bf16_layers), ("moe_router_experts", cfg.moe_router_experts),
                                  ("extra_linears", cfg.extra_linears), ("v_head_dim", cfg.v_head_dim),
                                  ("qk_norm", cfg.qk_norm)) if v]
    if unsupported:
        from refit_verify.errors import BadInputError

        raise BadInputError(f"config {cfg.name!r}: the vLLM engine mode builds a plain Llama; unsupported: "
                            f"{unsupported} (test such layers one by one with vllm_cpu.build_linear)")
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
            "num_hidden_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": 256, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
            "torch_dtype": "bfloat16", "tie_word_embeddings": cfg.tie_word_embeddings,
            "quantization_config": _quant_cfg_json()}


def fp8_hf_names(cfg) -> set:
    """HF names the engine holds in FP8: every decoder linear shard (no bf16 layers supported here)."""
    return {f"model.layers.{i}.{s.hf_suffix}.weight" for i in range(cfg.num_hidden_layers)
            for spec in cfg.layer_linears() for s in spec.shards}


def write_checkpoint(folder: str, cfg, weights: dict, recipe="vllm_per_block") -> str:
    """config.json + model.safetensors: decoder linears quantized with `recipe`, the rest BF16."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(vllm_llama_config(cfg), f, indent=1)
    fp8 = fp8_hf_names(cfg)
    ckpt = {}
    for name, t in weights.items():
        if name in fp8:
            q = quantize(t, recipe, name=name)
            ckpt[name], ckpt[name + SCALE_SUFFIX] = q.data.contiguous(), q.scale_inv.contiguous()
        else:
            ckpt[name] = t.contiguous()
    save_file(ckpt, os.path.join(folder, "model.safetensors"))
    return folder


def build_engine(cfg, initial_weights: dict, recipe="vllm_per_block", folder: Optional[str] = None):
    """The real vLLM model, loaded by get_model from a checkpoint of `initial_weights`."""
    from refit_verify.engine import vllm_cpu

    folder = folder or tempfile.mkdtemp(prefix="refit-verify-vllm-engine-")
    write_checkpoint(folder, cfg, initial_weights, recipe)
    return vllm_cpu.load_llama_from_folder(folder)


def mirror_into_store(params: dict, store, sent: dict):
    """Copy vLLM's parameters into a reference EngineStore and record what was sent, so the
    reference's comparisons and post-load checks judge the real engine's state."""
    from refit_verify.refit.loader import FP8_DTYPES

    missing = []
    for prefix, lin in store.linears.items():
        for suffix, dst in (("weight", lin.weight), ("weight_scale_inv", lin.weight_scale_inv)):
            if dst is None:
                continue
            src = params.get(f"{prefix}.{suffix}")
            if src is None:
                missing.append(f"{prefix}.{suffix}")
                continue
            # bit copy for fp8 (a value cast of uint8 bytes would be wrong), value copy otherwise
            dst.copy_(src.view(dst.dtype) if dst.dtype in FP8_DTYPES and src.dtype == torch.uint8 else src)
    for name, dst in store.plain.items():
        if name in params:
            dst.copy_(params[name])
        else:
            missing.append(name)
    for name, t in sent.items():
        is_scale = name.endswith(SCALE_SUFFIX)
        route = store._route.get(name[: -len(SCALE_SUFFIX)] if is_scale else name)
        if route is None:
            continue
        if route[0] == "plain":
            store.plain_loaded.add(name)
            continue
        lin, i = store.linears[route[1]], route[2]
        if is_scale:
            lin.sent_scales[i] = t.detach().float().clone()
            lin.loaded.add(("scale", i))
        else:
            lin.loaded.add(("weight", i))
    return missing


def _patched_batch(batch, recipe):
    """NeMo-RL's patched load_weights: quantize BF16 FP8-eligible weights before vLLM sees them."""
    out = []
    for name, t in batch:
        if name.endswith(".weight") and t.dim() == 2 and ".layers." in name and t.dtype not in (
                torch.float8_e4m3fn, torch.uint8):
            q = quantize(t, recipe, name=name)
            out += [(name, q.data), (name + SCALE_SUFFIX, q.scale_inv)]
        else:
            out.append((name, t))
    return out


def run_refit_vllm(config, weights: Optional[dict] = None, before="vllm_per_block", after=None, *, seed: int = 0,
                   layers: Optional[int] = None, selection="loader", bucket_bytes: Optional[int] = None,
                   alignment: Optional[int] = None, paths=("before", "after"), process: bool = True,
                   patched_loader: bool = False, initial_seed: Optional[int] = None, keep_sent: bool = False,
                   full_metrics: bool = False):
    """run_refit with the real vLLM 0.33 loader as the engine. Returns a RefitResult.

    before: the trainer's quantizer for FP8-before (preset, Recipe or f(w) -> (fp8, scale_inv)).
    after: recipe of the engine's initial checkpoint, and of the on-load quantization when
        patched_loader=True (vLLM itself has none). Default: `before` when it is a recipe.
    initial_seed: weights of the checkpoint the engine starts from (default seed + 1: the previous
        policy); each path gets a fresh engine.
    process: rerun vLLM's process_weights_after_loading after the refit, as RL frameworks do.
    result.stores[path] are EngineStore mirrors of the vLLM state; result.engines[path] the models.
    """
    from refit_verify.engine import vllm_cpu
    from refit_verify.fp8.format import probe_cast_semantics
    from refit_verify.model.weights import synthesize_weights
    from refit_verify.refit import run as R
    from refit_verify.refit.exporter import TrainerExporter
    from refit_verify.refit.findings import Finding
    from refit_verify.refit.loader import EngineStore
    from refit_verify.refit.postload import post_load_findings
    from refit_verify.refit.selection import resolve_selection
    from refit_verify.refit.transport import DEFAULT_ALIGNMENT, InProcessTransport

    ok, why = vllm_cpu.vllm_available()
    if not ok:
        raise RuntimeError(f"--engine vllm needs vllm=={vllm_cpu.SUPPORTED_VLLM}: {why}")
    vllm_cpu.init_cpu_vllm()
    alignment = alignment or DEFAULT_ALIGNMENT
    cfg, weights, after_recipe, bucket_bytes = R.resolve_refit_inputs(config, weights, before, after, seed=seed,
                                                                     layers=layers, bucket_bytes=bucket_bytes,
                                                                     alignment=alignment)
    initial_seed = seed + 1 if initial_seed is None else initial_seed
    initial = synthesize_weights(cfg, initial_seed)
    options = dict(engine=ENGINE, vllm=why, selection=selection if isinstance(selection, str) else repr(selection),
                   placement="vllm (real loader)", detection="none (vLLM copies what arrives)",
                   bucket_bytes=bucket_bytes, alignment=alignment, transport="inprocess", process=process,
                   patched_loader=patched_loader, seed=seed, initial_seed=initial_seed,
                   layers=cfg.num_hidden_layers)
    result = R.RefitResult(cfg.name, R._quantizer_name(before), after_recipe.name, options, probe_cast_semantics(),
                           {}, [], [])
    result.engines = {}
    for path in paths:
        store = EngineStore(cfg, placement="vllm", recipe=after_recipe, path=path)
        findings, completed, sent, export_summary, transfer = [], True, {}, {}, {}
        model = build_engine(cfg, initial, after_recipe)
        loaded_names = set()
        try:
            sel = resolve_selection(selection, store)
            exporter = TrainerExporter(weights, path, before, sel)
            export_summary = exporter.summary().to_dict()
            if path == "before":
                findings.extend(R.selection_findings(exporter.fp8_names, store, path))
            metadata = exporter.metadata()
            tr = InProcessTransport(bucket_bytes, alignment)
            for batch in tr.transfer(exporter, metadata):
                if patched_loader and path == "after":
                    batch = _patched_batch(batch, after_recipe)
                for n, t in batch:
                    sent[n] = t
                r = vllm_cpu.load_weights_into(model, batch, process=False)
                loaded_names |= r["loaded"]
            transfer = tr.stats.to_dict()
        except Exception as exc:  # the real loader raises plain exceptions: report, don't crash the run
            completed = False
            findings.append(Finding("load_failed", getattr(exc, "tensor", None) or "<vllm load_weights>",
                                    f"{type(exc).__name__}: {exc}", path=path))
        if process and completed:
            vllm_cpu.load_weights_into(model, [], process=True)
        params = vllm_cpu.named_params(model)
        missing = mirror_into_store(params, store, sent)
        for name in missing:
            findings.append(Finding("never_loaded", name, "the vLLM model has no such parameter", path=path))
        post = post_load_findings(store)
        error = R.error_vs_source(store, weights, full_metrics)
        if path == "after" and not patched_loader:
            # vLLM wrote no scale: the shards' missing_scale findings are this one finding's symptoms.
            post = [f for f in post if f.hazard != "missing_scale"]
            findings.extend(no_online_quant_findings(store, sent, error, path))
        findings += post
        result.paths[path] = R.PathResult(path, R._quantizer_name(before), after_recipe.name, completed,
                                          export_summary, transfer, findings, error, [])
        result.stores[path], result.engines[path] = store, model
        if keep_sent:
            result.sent[path] = sent
        result.findings.extend(findings)
    if "before" in result.stores and "after" in result.stores:
        result.comparisons = R.compare_stores(result.stores["before"], result.stores["after"])
        for c in result.comparisons:
            if not c.equal:
                fm = c.first_mismatch or {}
                result.findings.append(Finding(
                    "bitwise_mismatch", c.tensor, f"{c.n_code_mismatch} codes and {c.n_scale_mismatch} scales differ "
                    "between FP8-before and FP8-after (real vLLM loader)"
                    + (f"; {fm.get('describe')}" if fm.get("describe") else ""),
                    block=tuple(c.mismatched_blocks[0][:2]) if c.mismatched_blocks else None,
                    detail={"mismatched_blocks": c.mismatched_blocks}))
    return result


def no_online_quant_findings(store, sent: dict, error: dict, path: str) -> list:
    """One finding per FP8 engine weight that received BF16: vLLM value-cast it, kept the old scale."""
    from refit_verify.refit.findings import Finding

    out = []
    for prefix, lin in store.linears.items():
        if not lin.fp8:
            continue
        got = [n for n in lin.hf_names() if n in sent and sent[n].dtype not in (torch.float8_e4m3fn, torch.uint8)]
        if not got:
            continue
        rel = error.get(prefix + ".weight", {}).get("all", {}).get("rel_l2")
        out.append(Finding(
            "engine_no_online_quant", prefix + ".weight",
            f"vLLM 0.33 value-cast {len(got)} BF16 shard(s) into the float8 parameter without quantizing and kept "
            f"the previous weight_scale_inv: dequantized relative L2 error vs the sent weights {rel:.3g}. "
            "FP8-after needs a patched loader (NeMo-RL's quantizes on load)", path=path,
            detail={"shards": got, "rel_l2": rel}))
    return out
