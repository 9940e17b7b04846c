"""Streaming refit verifier: quantize every tensor both ways, compare bitwise, compute metrics.

One tensor at a time, on the tensor's device: the two quantized copies of *one* tensor exist at
once, never two copies of the model. Comparison and metrics run over row chunks so their
temporaries stay small (peak extra memory ~ 1x the largest tensor plus a chunk).

"Both ways" is two quantizers: two recipes (trainer recipe vs loader recipe: FP8-before vs
FP8-after) or two implementations of one recipe (reference vs Triton). Non-FP8 tensors travel as
BF16 on both paths and are counted, not compared.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch

from refit_verify.cases import case_seed
from refit_verify.compare.bitwise import TensorComparison, compare_fp8
from refit_verify.fp8.presets import get_recipe

_NOT_FP8 = ("norm", "embed_tokens", "lm_head", "mlp.gate.weight", "shared_expert_gate")


def default_is_fp8(name: str, shape) -> bool:
    """The name heuristic of FACTS.md §5 minus its known false positives (router, shared gate)."""
    return len(shape) == 2 and name.endswith(".weight") and not any(s in name for s in _NOT_FP8)


def make_quantizer(recipe, impl: str = "reference", **kw) -> Callable:
    """(w, name) -> QuantizedTensor for impl in reference | triton | emulated."""
    r = get_recipe(recipe)
    if impl == "reference":
        from refit_verify.fp8.quantize import quantize

        fn = lambda w, name: quantize(w, r, name)  # noqa: E731
    elif impl == "triton":
        from refit_verify.fp8.kernels import quantize_triton

        fn = lambda w, name: quantize_triton(w, r, name, **kw)  # noqa: E731
    elif impl == "emulated":
        from refit_verify.fp8.kernels import quantize_emulated

        fn = lambda w, name: quantize_emulated(w, r, name, **kw)  # noqa: E731
    else:
        raise ValueError(f"unknown impl {impl!r}")
    fn.label = f"{impl}:{r.name}"
    if impl == "triton" and not kw:
        from refit_verify.fp8.kernels.fused_verify import fused_supported

        if fused_supported(r):
            fn.fused_recipe = r  # verify_stream may compare two such sides in one fused kernel
    return fn


@dataclass
class StreamResult:
    label_a: str
    label_b: str
    n_tensors: int = 0
    n_fp8: int = 0
    n_equal: int = 0
    n_elements: int = 0
    n_code_mismatch: int = 0
    n_scale_mismatch: int = 0
    seconds: float = 0.0
    peak_extra_bytes: Optional[int] = None
    largest_tensor_bytes: int = 0
    largest_fp8_tensor_bytes: int = 0
    mismatched: list = field(default_factory=list)  # TensorComparison of every differing tensor
    verdicts: list = field(default_factory=list)  # every fp8 TensorComparison when keep_all

    @property
    def equal(self) -> bool:
        return self.n_equal == self.n_fp8

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k not in ("mismatched", "verdicts")}
        return dict(d, equal=self.equal, mismatched=[v.to_dict() for v in self.mismatched],
                    verdicts=[v.to_dict() for v in self.verdicts])


def compare_streamed(name: str, w: torch.Tensor, a, b, metrics: bool = True) -> TensorComparison:
    """Bitwise compare of two QuantizedTensors of `w`, chunk by chunk on w's device (compare_fp8);
    metrics: each side's error against `w` too."""
    block = tuple(getattr(getattr(a, "recipe", None), "block", (128, 128)))
    return compare_fp8(a.data, a.scale_inv, b.data, b.scale_inv, block, name, source=w if metrics else None)


# weights checked per fused batch: an 8B model's linears in one (H200, run h: 2 GiB batches cost
# about 0.8 ms each in host work and syncs; the verifier's own buffers are 0.2% of a batch)
FUSED_BATCH_BYTES = 16 << 30


def _fused_pair(quantize_a, quantize_b):
    ra, rb = getattr(quantize_a, "fused_recipe", None), getattr(quantize_b, "fused_recipe", None)
    return (ra, rb) if ra is not None and rb is not None else None


def fused_verdicts(items, recipe_a, recipe_b, metrics: bool = True) -> list:
    """TensorComparisons of (name, w) items (one dtype, one device) from one fused-verifier batch:
    each weight read once, both recipes' codes compared in registers (fp8/kernels/fused_verify.py)."""
    from refit_verify.compare.fused import fused_comparisons

    return fused_comparisons(items, recipe_a, recipe_b, metrics)


def _fusable(w) -> bool:
    import os

    return (w.is_cuda or os.environ.get("TRITON_INTERPRET") == "1") and w.dim() == 2 and w.numel() > 0 \
        and w.dtype in (torch.bfloat16, torch.float16, torch.float32)


def _add_verdict(res: StreamResult, v: TensorComparison, keep_all: bool) -> None:
    res.n_fp8 += 1
    res.n_elements += v.n_elements
    res.n_code_mismatch += v.n_code_mismatch
    res.n_scale_mismatch += v.n_scale_mismatch
    res.n_equal += v.equal
    if not v.equal:
        res.mismatched.append(v)
    if keep_all:
        res.verdicts.append(v)


def verify_stream(weights: Iterable, quantize_a: Callable, quantize_b: Callable,
                  is_fp8: Callable = default_is_fp8, metrics: bool = True, keep_all: bool = False,
                  measure_memory: bool = True, fused: bool = True) -> StreamResult:
    """Quantize each (name, tensor) both ways and compare; one tensor's two copies alive at a time.

    When both quantizers are Triton kernels of supported recipes (make_quantizer sets
    `fused_recipe`) and the weights are on a GPU, batches of weights go through the fused verifier
    instead (no quantized copy is materialised; `fused=False` forces the two-copy path). A batch
    holds up to FUSED_BATCH_BYTES of weights: resident weights cost nothing extra, weights that
    the iterator creates are kept alive until their batch is checked (lower the constant to bound
    that); the fused path's own buffers are about 56 bytes a 128x128 block.
    """
    res = StreamResult(getattr(quantize_a, "label", "a"), getattr(quantize_b, "label", "b"))
    cuda = None
    t0 = time.perf_counter()
    pair = _fused_pair(quantize_a, quantize_b) if fused else None
    batch, batch_bytes = [], 0

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            for v in fused_verdicts(batch, pair[0], pair[1], metrics):
                _add_verdict(res, v, keep_all)
        batch, batch_bytes = [], 0

    for name, w in weights:
        if cuda is None:
            cuda = w.is_cuda
            if cuda and measure_memory:
                torch.cuda.synchronize(w.device)
                base = torch.cuda.memory_allocated(w.device)
                torch.cuda.reset_peak_memory_stats(w.device)
                t0 = time.perf_counter()
        res.n_tensors += 1
        nbytes = w.numel() * w.element_size()
        res.largest_tensor_bytes = max(res.largest_tensor_bytes, nbytes)
        if not is_fp8(name, tuple(w.shape)):
            continue
        res.largest_fp8_tensor_bytes = max(res.largest_fp8_tensor_bytes, nbytes)
        if pair is not None and _fusable(w):
            if batch and (batch[0][1].dtype != w.dtype or batch[0][1].device != w.device
                          or batch_bytes + nbytes > FUSED_BATCH_BYTES):
                flush()
            batch.append((name, w))
            batch_bytes += nbytes
            continue
        flush()  # keep the verdicts in the weights' order
        a = quantize_a(w, name)
        b = quantize_b(w, name)
        v = compare_streamed(name, w, a, b, metrics)
        del a, b
        _add_verdict(res, v, keep_all)
    flush()
    if cuda:
        torch.cuda.synchronize()
        if measure_memory:
            # the weights were resident before the call; only what the verifier added counts
            res.peak_extra_bytes = torch.cuda.max_memory_allocated() - base
    res.seconds = time.perf_counter() - t0
    return res


def synth_device_tensor(name: str, shape, seed: int, device, dtype=torch.bfloat16) -> torch.Tensor:
    """Trained-like synthetic weight generated on the device (fast at 8B scale, deterministic
    per device for a given seed; statistics as refit_verify.model.weights.synth_tensor)."""
    g = torch.Generator(device=device).manual_seed(case_seed(seed, name))
    if len(shape) == 1:
        return (1.0 + 0.05 * torch.randn(shape, generator=g, device=device)).to(dtype)
    rows, cols = shape
    if "embed_tokens" in name or "lm_head" in name:
        return (0.02 * torch.randn(shape, generator=g, device=device)).to(dtype)
    w = torch.randn(shape, generator=g, device=device)
    w *= torch.exp(0.3 * torch.randn(rows, 1, generator=g, device=device)) / math.sqrt(cols)
    heavy = torch.randperm(cols, generator=g, device=device)[: max(1, cols // 512)]
    w[:, heavy] *= 8.0
    return w.to(dtype)


def iter_device_weights(cfg, seed: int = 0, device="cuda", dtype=torch.bfloat16):
    for name, shape in cfg.hf_shapes().items():
        yield name, synth_device_tensor(name, shape, seed, device, dtype)
