"""Drive the real vLLM (0.33) weight-loading path on a CPU-only machine.

Nothing here imports vllm at module import time: the harness must import and
skip cleanly where vllm is absent. Every function that needs vllm calls
`init_cpu_vllm()` (idempotent) first. Forward passes are out of scope: vLLM's
FP8 GEMM kernels do not run on CPU; only construction, `weight_loader`,
`model.load_weights` and `process_weights_after_loading` are exercised.

Assumes the CUDA wheel on a GPU-less host, where vLLM resolves to
UnspecifiedPlatform; do not set VLLM_TARGET_DEVICE=cpu (that selects CpuPlatform,
which needs vllm._C_AVX2 and has no usable FP8 block kernel without it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import traceback
import weakref
from typing import Any, Iterable

BLOCK = [128, 128]
SUPPORTED_VLLM = "0.33.0"
KERNEL_NAME = "CpuTestFp8BlockKernel"  # same name the golden generator recorded

_state: dict[str, Any] = {}
# what this module built -> how (ctor kwargs of a layer, VllmConfig of a model), without touching vLLM's objects
_built: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vllm_available() -> tuple[bool, str]:
    """(True, version) when vllm imports, else (False, why) -- without side effects
    beyond the import itself."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA-only wheel
        return False, f"vllm import failed: {type(e).__name__}: {e}"
    ver = getattr(vllm, "__version__", "?")
    if ver != SUPPORTED_VLLM:
        return True, f"vllm {ver} (this driver was written against {SUPPORTED_VLLM})"
    return True, f"vllm {ver}"


@contextlib.contextmanager
def _default_dtype(dtype):
    # vLLM layers take params_dtype from the default dtype; the golden run used bf16.
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def quant_cfg_json() -> dict:
    return {"quant_method": "fp8", "activation_scheme": "dynamic",
            "weight_block_size": list(BLOCK), "fmt": "e4m3"}


def _llama_config(hidden, inter, heads, kv_heads, layers, vocab) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "intermediate_size": inter,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "num_hidden_layers": layers, "vocab_size": vocab,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
            "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            "quantization_config": quant_cfg_json()}


def _make_vllm_config(folder: str):
    # Fp8LinearMethod reads model_config.dtype from the *current* VllmConfig, so
    # even lone layers need a ModelConfig; it only needs config.json, no weights
    # and no tokenizer. enforce_eager keeps vLLM from torch.compiling the model.
    from vllm.config import DeviceConfig, LoadConfig, ModelConfig, VllmConfig

    mc = ModelConfig(model=folder, skip_tokenizer_init=True, dtype="bfloat16",
                     enforce_eager=True)
    return VllmConfig(model_config=mc, device_config=DeviceConfig(device="cpu"),
                      load_config=LoadConfig(load_format="safetensors"))


def _install_cpu_substitutes():
    """The two substitutions FACTS.md §4 calls for. On CPU vLLM resolves to
    UnspecifiedPlatform, which offers no FP8 block kernel and no attention backend."""
    from vllm.model_executor.kernels.linear import register_linear_kernel
    from vllm.model_executor.kernels.linear.scaled_mm.triton import (
        TritonFp8BlockScaledMMKernel,
    )
    from vllm.platforms import PlatformEnum, current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    # Subclass of a real kernel so process_weights_after_loading is vLLM's own
    # (Fp8BlockScaledMMLinearKernel -> process_fp8_weight_block_strategy); only
    # the platform check is relaxed. apply() would still call Triton: unusable here.
    kernel = type(KERNEL_NAME, (TritonFp8BlockScaledMMKernel,), {
        "is_supported": classmethod(lambda cls, compute_capability=None: (True, None)),
        "__doc__": "TritonFp8BlockScaledMMKernel whose support check passes on CPU.",
    })
    register_linear_kernel(kernel, PlatformEnum.UNSPECIFIED, "fp8_block")  # only called there

    # UnspecifiedPlatform.get_attn_backend_cls returns "" -> Attention() raises.
    # Shadow it on the platform instance only, pointing at vLLM's CPU backend.
    cpu_attn = AttentionBackendEnum.CPU_ATTN.get_path()
    current_platform.get_attn_backend_cls = lambda *a, **k: cpu_attn
    return kernel


def init_cpu_vllm():
    """Idempotent process-wide setup; returns the default VllmConfig used for
    lone layers. Safe to call many times; the second call is a dict lookup."""
    if "config" in _state:
        return _state["config"]
    ok, why = vllm_available()
    if not ok:
        raise RuntimeError(why)
    import torch
    import torch.distributed as dist
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import model_parallel_is_initialized

    tmp = tempfile.mkdtemp(prefix="refit-verify-vllm-")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(_llama_config(256, 512, 4, 2, 1, 512), f)
    cfg = _make_vllm_config(tmp)
    with set_current_vllm_config(cfg):
        if not dist.is_initialized():
            # One process, gloo, file rendezvous: no ports, nothing to clean up.
            init_distributed_environment(
                world_size=1, rank=0, local_rank=0, backend="gloo",
                distributed_init_method=f"file://{os.path.join(tmp, 'rdzv')}")
        if not model_parallel_is_initialized():
            initialize_model_parallel(1, 1)
    from vllm.platforms import current_platform

    # The CUDA wheel on a GPU-less host resolves to UnspecifiedPlatform. On a real
    # platform (CUDA, vLLM's CPU build) leave vLLM's own kernel/backend choice alone.
    unspecified = current_platform.is_unspecified()
    _state["kernel"] = _install_cpu_substitutes() if unspecified else None
    _state["config"] = cfg
    _state["tmp"] = tmp
    _state["torch"] = torch.__version__
    return cfg


# --------------------------------------------------------------------------- quantizers


def _undecorated(fn):
    # vllm wraps per_block_cast_to_fp8 in torch.compile; in 0.33/torch 2.14 the
    # wrapper is a plain function whose __wrapped__ and _torchdynamo_orig_callable
    # are both the original function (checked: same object).
    orig = getattr(fn, "_torchdynamo_orig_callable", None) or getattr(fn, "__wrapped__", None)
    if orig is None or getattr(orig, "_torchdynamo_orig_callable", None) is not None:
        raise RuntimeError("cannot find the undecorated per_block_cast_to_fp8")
    return orig


def per_block_cast_to_fp8(x, use_ue8m0: bool = False, block_size=(128, 128),
                          compiled: bool = False):
    """vLLM's weight quantizer -> (fp8 codes [M,N], float32 scale_inv [ceil(M/b),ceil(N/b)]).
    compiled=False calls the undecorated function (what the goldens used); True
    goes through vLLM's torch.compile wrapper (inductor on CPU: first call per shape
    took ~58 s on a loaded 2-vCPU box; bytes matched the undecorated call)."""
    from vllm.utils import deep_gemm

    fn = deep_gemm.per_block_cast_to_fp8
    fn = fn if compiled else _undecorated(fn)
    return fn(x, list(block_size), use_ue8m0=use_ue8m0)


def quant_fp8_group_native(x, group: int = 128, use_ue8m0: bool = False):
    """vLLM's QuantFP8 dynamic per-token-group native path, row-major scales
    -> (fp8 codes like x, float32 scales [..., ceil(K/group)])."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.quantization.input_quant_fp8 import QuantFP8
    from vllm.model_executor.layers.quantization.utils.quant_utils import GroupShape

    cfg = init_cpu_vllm()  # CustomOp.__init__ reads the current compilation config
    key = ("quant_fp8", group, bool(use_ue8m0))
    if key not in _state:
        with set_current_vllm_config(cfg):
            _state[key] = QuantFP8(static=False, group_shape=GroupShape(1, group),
                                   column_major_scales=False, use_ue8m0=use_ue8m0,
                                   compile_native=False)
    # forward_native, not forward(): forward() dispatches by platform (forward_cuda
    # on UnspecifiedPlatform) and may be compiled.
    return _state[key].forward_native(x)


# --------------------------------------------------------------------------- linear layers


def _qkv_kwargs(shard_sizes, K, head_size):
    q, k, v = shard_sizes
    head_size = head_size or math.gcd(q, k)
    if q % head_size or k % head_size:
        raise ValueError(f"q={q}, k={k} are not whole heads of {head_size}")
    heads, kv_heads = q // head_size, k // head_size
    if v % kv_heads:
        raise ValueError(f"v={v} does not split over {kv_heads} kv heads")
    kw = dict(hidden_size=K, head_size=head_size, total_num_heads=heads,
              total_num_kv_heads=kv_heads)
    if v // kv_heads != head_size:
        kw["v_head_size"] = v // kv_heads
    return kw


def fp8_block_quant_config():
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config

    return Fp8Config(is_checkpoint_fp8_serialized=True, activation_scheme="dynamic",
                     weight_block_size=list(BLOCK))


def build_linear(kind: str, shard_sizes, K: int, head_size: int | None = None):
    """Real vLLM linear layer with block-FP8 Fp8Config, no bias, TP=1.
    kind: "qkv" (shard_sizes=[q,k,v]; head_size defaults to gcd(q,k)),
    "merged" (MergedColumnParallelLinear, shards 0..n-1), "row" (RowParallelLinear,
    [N]), "column" (ColumnParallelLinear, [N]). `ctor_kwargs_of(layer)` gives the
    constructor kwargs used."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers import linear as L

    cfg = init_cpu_vllm()
    sizes = [int(s) for s in shard_sizes]
    if kind == "qkv":
        cls, kw = L.QKVParallelLinear, _qkv_kwargs(sizes, K, head_size)
    elif kind == "merged":
        cls, kw = L.MergedColumnParallelLinear, dict(input_size=K, output_sizes=sizes)
    elif kind in ("row", "column"):
        if len(sizes) != 1:
            raise ValueError(f"{kind} takes one size, got {sizes}")
        cls = L.RowParallelLinear if kind == "row" else L.ColumnParallelLinear
        kw = dict(input_size=K, output_size=sizes[0])
    else:
        raise ValueError(f"unknown kind {kind!r}")
    with set_current_vllm_config(cfg), _default_dtype(_torch().bfloat16):
        layer = cls(**kw, bias=False, quant_config=fp8_block_quant_config(),
                    prefix=f"refit_verify.{kind}")
    _built[layer] = kw
    return layer


def ctor_kwargs_of(layer) -> dict:
    """The constructor kwargs build_linear gave `layer`."""
    return _built[layer]


def vllm_config_of(model):
    """The VllmConfig load_llama_from_folder built `model` under (None for other models)."""
    return _built.get(model)


def _torch():
    import torch

    return torch


def _snapshot(layer) -> dict:
    return {n: p.detach().clone() for n, p in layer.named_parameters()}


def param_meta(layer) -> dict:
    """name -> {shape, dtype, class}, in the golden file's spelling."""
    return {n: {"shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", ""),
                "class": type(p).__name__} for n, p in layer.named_parameters()}


def _innermost_vllm_frame(exc) -> str | None:
    # "vllm/model_executor/parameter.py:192 load_qkv_weight": the golden's format.
    where = None
    for fr in traceback.extract_tb(exc.__traceback__):
        i = fr.filename.replace(os.sep, "/").rfind("/vllm/")
        if i >= 0:
            where = f"{fr.filename[i + 1:]}:{fr.lineno} {fr.name}"
    return where


def _as_fp8(t):
    # Golden files and packed transports carry fp8 as uint8 bytes; the loader
    # must see float8_e4m3fn (a uint8 tensor would be value-cast, not bit-copied).
    torch = _torch()
    return t.view(torch.float8_e4m3fn) if t.dtype == torch.uint8 else t


def load_shards(layer, shards) -> dict:
    """Load [(shard_id, fp8 weight, scale_inv), ...] exactly as model.load_weights
    does: per shard, weight then weight_scale_inv via
    param.weight_loader(param, t, shard_id); no shard_id when it is None (row/column).
    Then run the layer's process_weights_after_loading.

    Returns {status: "ok"|"raised", params_before, loaded, processed, params_after,
    non_param_attrs_after, exception, partial, kernel, loader,
    allow_fp8_block_shape_mismatch}. On error: exception = {type, message, text,
    where, shard_id, param} and partial = every parameter as it was at the raise
    (partial["weight_scale_inv"] is the golden's `partial.weight_scale_inv`)."""
    from vllm.config import set_current_vllm_config

    cfg = init_cpu_vllm()
    params = dict(layer.named_parameters())
    out = {"status": "ok", "params_before": param_meta(layer), "loaded": None,
           "processed": None, "params_after": None, "non_param_attrs_after": None,
           "exception": None, "partial": None,
           "kernel": type(layer.quant_method.fp8_linear).__name__,
           "loader": getattr(params["weight"].weight_loader, "__name__", None),
           "allow_fp8_block_shape_mismatch":
               bool(getattr(layer, "allow_fp8_block_shape_mismatch", False))}
    with set_current_vllm_config(cfg):
        for shard_id, w, s in shards:
            for pname, t in (("weight", _as_fp8(w)), ("weight_scale_inv", s)):
                p = params[pname]
                try:
                    if shard_id is None:
                        p.weight_loader(p, t)
                    else:
                        p.weight_loader(p, t, shard_id)
                except Exception as e:
                    out["status"] = "raised"
                    out["exception"] = {
                        "type": type(e).__name__, "message": str(e),
                        "text": f"{type(e).__name__}: {e}",
                        "where": _innermost_vllm_frame(e),
                        "shard_id": shard_id, "param": pname}
                    out["partial"] = _snapshot(layer)
                    return out
        out["loaded"] = _snapshot(layer)
        layer.quant_method.process_weights_after_loading(layer)
    out["processed"] = _snapshot(layer)
    out["params_after"] = param_meta(layer)
    out["non_param_attrs_after"] = {
        "input_scale": repr(layer.input_scale) if hasattr(layer, "input_scale") else "absent"}
    return out


# --------------------------------------------------------------------------- whole model


def write_tiny_llama_folder(folder: str, *, hidden=256, inter=512, heads=4, kv_heads=2,
                            layers=2, vocab=512, seed=0, quantize=None) -> dict:
    """Write config.json (with an fp8 block quantization_config) + model.safetensors
    for a tiny Llama. Linear weights are quantized with `quantize(bf16) -> (fp8,
    scale_inv)` (default: vLLM's per_block_cast_to_fp8, no UE8M0). Needs only torch
    and safetensors when `quantize` is given. Returns the bf16 HF-named state dict
    (the "trainer" weights)."""
    torch = _torch()
    from safetensors.torch import save_file

    quantize = quantize or (lambda w: per_block_cast_to_fp8(w, use_ue8m0=False))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(_llama_config(hidden, inter, heads, kv_heads, layers, vocab), f, indent=1)
    g = torch.Generator().manual_seed(seed)
    hd = hidden // heads

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).to(torch.bfloat16)

    bf16 = {"model.embed_tokens.weight": rnd(vocab, hidden), "lm_head.weight": rnd(vocab, hidden),
            "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    linears = {"self_attn.q_proj": (heads * hd, hidden), "self_attn.k_proj": (kv_heads * hd, hidden),
               "self_attn.v_proj": (kv_heads * hd, hidden), "self_attn.o_proj": (hidden, heads * hd),
               "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden),
               "mlp.down_proj": (hidden, inter)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            bf16[p + n + ".weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        for n, shape in linears.items():
            bf16[p + n + ".weight"] = rnd(*shape)
    ckpt = {}
    for name, t in bf16.items():
        if ".layers." in name and t.dim() == 2:
            q, s = quantize(t)
            ckpt[name], ckpt[name + "_scale_inv"] = q.contiguous(), s.contiguous()
        else:
            ckpt[name] = t
    save_file(ckpt, os.path.join(folder, "model.safetensors"))
    return bf16


def load_llama_from_folder(folder: str):
    """The real vLLM LlamaForCausalLM built on CPU by get_model from a local
    safetensors folder (config.json must carry the fp8 quantization_config).
    Weights are loaded and process_weights_after_loading has run."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader import get_model

    init_cpu_vllm()
    cfg = _make_vllm_config(os.path.abspath(folder))
    with set_current_vllm_config(cfg), _default_dtype(_torch().bfloat16):
        model = get_model(vllm_config=cfg)
    _built[model] = cfg
    return model


def named_params(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def load_weights_into(model, weights: Iterable, process: bool = False) -> dict:
    """Refit: model.load_weights(iter of (HF name, tensor)). FP8-before sends
    `name` (fp8) + `name_scale_inv` (f32); FP8-after sends bf16 `name`, which vLLM
    0.33 does not quantize: the bf16 values are value-cast into the fp8 param
    (copy_), scale untouched (see tools/probe_vllm_cpu.py). process=True reruns
    process_weights_after_loading over the model, as some RL frameworks do.
    Returns {"loaded": set of vLLM names, "params": {name: clone}}."""
    from vllm.config import set_current_vllm_config

    cfg = vllm_config_of(model) or init_cpu_vllm()
    with set_current_vllm_config(cfg):
        loaded = model.load_weights((n, _as_fp8(t) if n.endswith(".weight") else t)
                                    for n, t in weights)
        if process:
            from vllm.model_executor.model_loader.utils import process_weights_after_loading

            process_weights_after_loading(model, cfg.model_config, _torch().device("cpu"))
    return {"loaded": set(loaded or ()), "params": named_params(model)}
