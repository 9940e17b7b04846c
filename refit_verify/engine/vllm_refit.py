"""`refit-verify run --engine vllm`: both refit paths through the *real* vLLM loader.

The one refit driver (`refit_verify.refit.run.run_refit`) with `VllmEngine`, an Engine adapter of
vLLM 0.33's LlamaForCausalLM built on CPU by `get_model` (refit_verify.engine.vllm_cpu): each
transported batch goes to its `model.load_weights`. After the refit the engine's parameters are
adopted by a reference `EngineStore` (placement "vllm") together with what was sent, so the
reference's post-load checks apply unchanged; comparisons and error metrics use vLLM's own state.

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
from refit_verify.layout import SINGLE, Rank

SCALE_SUFFIX = "_scale_inv"
ENGINE = "vllm"


def vllm_llama_config(cfg) -> dict:
    """HF config.json for vLLM's LlamaForCausalLM with a block-FP8 quantization_config."""
    from refit_verify.engine.vllm_cpu import quant_cfg_json

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
            "quantization_config": quant_cfg_json()}


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


class VllmEngine:
    """The real vLLM 0.33 LlamaForCausalLM on CPU as an adapter of the Engine protocol (refit/engine.py).

    Each batch goes to the model's own `load_weights`. At `finish_refit` the model's parameters are
    adopted by a reference EngineStore (`store`, together with what was sent), so the reference's
    post-load checks judge the real engine's state; `state()` returns vLLM's own parameters.
    """

    name = ENGINE
    layout = SINGLE

    def __init__(self, cfg, initial_weights: dict, recipe, *, path: str = "", process: bool = True,
                 patched_loader: bool = False):
        from refit_verify.refit.loader import EngineStore

        self.cfg, self.recipe, self.path, self.process, self.patched = cfg, recipe, path, process, patched_loader
        self.model = build_engine(cfg, initial_weights, recipe)
        self.store = EngineStore(cfg, placement="vllm", recipe=recipe, path=path)
        self.sent: dict = {}
        self.findings: list = []
        self.complete = True

    def fp8_hf_names(self) -> set[str]:
        return fp8_hf_names(self.cfg)

    def begin_refit(self, metadata: Optional[dict] = None) -> None:
        self.sent, self.findings, self.complete = {}, [], True  # vLLM 0.33 ignores metadata: it copies what arrives

    def receive(self, batch) -> None:
        from refit_verify.engine import vllm_cpu
        from refit_verify.refit.findings import Finding

        if not self.complete:
            return  # the loader raised on an earlier batch; a real refit stops there
        batch = list(batch)
        if self.patched and self.path == "after":
            batch = _patched_batch(batch, self.recipe)
        self.sent.update(batch)
        try:
            vllm_cpu.load_weights_into(self.model, batch, process=False)
        except Exception as exc:  # the real loader raises plain exceptions: report, don't crash the run
            self.complete = False
            self.findings.append(Finding("load_failed", getattr(exc, "tensor", None) or "<vllm load_weights>",
                                         f"{type(exc).__name__}: {exc}", path=self.path))

    def finish_refit(self) -> None:
        from refit_verify.engine import vllm_cpu
        from refit_verify.refit.findings import Finding
        from refit_verify.refit.postload import post_load_findings

        if self.process and self.complete:
            vllm_cpu.load_weights_into(self.model, [], process=True)
        params = vllm_cpu.named_params(self.model)
        for name in self.store.adopt(params, self.sent):
            self.findings.append(Finding("never_loaded", name, "the vLLM model has no such parameter", path=self.path))
        post = post_load_findings(self.store)
        if self.path == "after" and not self.patched:
            # vLLM wrote no scale: the shards' missing_scale findings are this one finding's symptoms.
            post = [f for f in post if f.hazard != "missing_scale"]
            self.findings.extend(no_online_quant_findings(self.cfg, params, self.sent, self.path))
        self.findings.extend(post)

    def state(self):
        from refit_verify.engine import vllm_cpu
        from refit_verify.refit.engine import EngineState

        return EngineState(SINGLE, {Rank(): vllm_cpu.named_params(self.model)}, list(self.findings),
                           {"engine": self.name, "recipe": self.recipe.name, "placement": "vllm (real loader)",
                            "path": self.path, "block": tuple(self.store.block)}, self.complete)


class VllmEngineFactory:
    """A fresh real-vLLM engine per refit path, each starting from the checkpoint of `initial_weights`."""

    def __init__(self, initial_weights: dict, *, process: bool = True, patched_loader: bool = False,
                 initial_seed=None, vllm: str = ""):
        self.initial, self.process, self.patched = initial_weights, process, patched_loader
        self.options = dict(engine=ENGINE, vllm=vllm, placement="vllm (real loader)",
                            detection="none (vLLM copies what arrives)", process=process,
                            patched_loader=patched_loader, initial_seed=initial_seed)

    def __call__(self, cfg, path: str, recipe) -> VllmEngine:
        return VllmEngine(cfg, self.initial, recipe, path=path, process=self.process, patched_loader=self.patched)


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
    result.states[path] hold vLLM's parameters; result.stores[path] the reference mirrors of them.
    """
    from refit_verify.engine import vllm_cpu
    from refit_verify.model.config import ModelConfig, load_config
    from refit_verify.model.weights import synthesize_weights
    from refit_verify.refit.run import run_refit
    from refit_verify.refit.transport import DEFAULT_ALIGNMENT

    ok, why = vllm_cpu.vllm_available()
    if not ok:
        raise RuntimeError(f"--engine vllm needs vllm=={vllm_cpu.SUPPORTED_VLLM}: {why}")
    vllm_cpu.init_cpu_vllm()
    cfg = config if isinstance(config, ModelConfig) else load_config(config, layers=layers)
    if isinstance(config, ModelConfig) and layers is not None:
        cfg = cfg.with_layers(layers)
    vllm_llama_config(cfg)  # refuse unsupported layers before building anything
    initial_seed = seed + 1 if initial_seed is None else initial_seed
    factory = VllmEngineFactory(synthesize_weights(cfg, initial_seed), process=process,
                                patched_loader=patched_loader, initial_seed=initial_seed, vllm=why)
    return run_refit(cfg, weights, before, after, seed=seed, selection=selection, bucket_bytes=bucket_bytes,
                     alignment=alignment or DEFAULT_ALIGNMENT, paths=paths, keep_sent=keep_sent,
                     full_metrics=full_metrics, engine=factory)


def no_online_quant_findings(cfg, params: dict, sent: dict, path: str) -> list:
    """One finding per FP8 engine weight that received BF16: vLLM value-cast it, kept the old scale."""
    from refit_verify.refit.findings import Finding
    from refit_verify.refit.loader import engine_linears
    from refit_verify.refit.run import error_vs_source

    error = error_vs_source(cfg, params, sent)  # what FP8-after sent is the BF16 source itself
    out = []
    for site in engine_linears(cfg):
        got = [n for n in site.hf_names if n in sent and sent[n].dtype not in (torch.float8_e4m3fn, torch.uint8)]
        if not site.fp8 or not got:
            continue
        rel = error.get(site.prefix + ".weight", {}).get("all", {}).get("rel_l2", float("nan"))
        out.append(Finding(
            "engine_no_online_quant", site.prefix + ".weight",
            f"vLLM 0.33 value-cast {len(got)} BF16 shard(s) into the float8 parameter without quantizing and kept "
            f"the previous weight_scale_inv: dequantized relative L2 error vs the sent weights {rel:.3g}. "
            "FP8-after needs a patched loader (NeMo-RL's quantizes on load)", path=path,
            detail={"shards": got, "rel_l2": rel}))
    return out
