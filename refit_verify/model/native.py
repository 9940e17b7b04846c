"""Native block-scaled FP8 GEMM through torch (cuBLAS on sm90), with its scale layout probed.

Why probing: torch's blockwise scaled_mm changed its scale-layout contract across releases.
torch's own tests (test_scaled_matmul_cuda.py, 2.9+) pass 1x128 activation scales as (M, K/128)
"outer-dim-major" (stride (1, M)) and 128x128 weight scales padded along K-blocks to a multiple
of 4 and transposed to (L4, N/128) with stride (1, L4) (cuBLAS's documented layout); the C++
check in other revisions wants an unpadded row-major grid. The enum members are spelled
`BlockWise1x128` in some releases and `Blockwise_1x128` in others. We try each candidate in a
fixed order, keep the first the op accepts, and record it: a layout the op accepts but reads
differently shows up as a large error against the emulated GEMM (the nightly test's job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from refit_verify.errors import BadInputError

BLOCK = 128
_ROW_PAD = 16  # cuBLAS FP8 wants 16-byte aligned leading dims and scale columns; pad M with zero rows


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# Activation scales (M, Kb) -> layout handed to the op.
A_LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mn_major": lambda s: s.t().contiguous().t(),
    "row_major": lambda s: s.contiguous(),
}


def _l4_padded(s: torch.Tensor) -> torch.Tensor:
    nb, kb = s.shape
    pad = _round_up(kb, 4) - kb
    return torch.nn.functional.pad(s, (0, pad)).t() if pad else s.contiguous().t()


# Weight scales as stored by the engine, (Nb, Kb), -> layout handed to the op (mat_b = W.T is (K, N)).
B_LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l4_padded_k_major": _l4_padded,
    "kb_nb_view": lambda s: s.contiguous().t(),
    "kb_nb_row_major": lambda s: s.t().contiguous(),
    "nb_kb_as_stored": lambda s: s.contiguous(),
}


@dataclass(frozen=True)
class NativeLayout:
    api: str  # "F.scaled_mm" | "torch._scaled_mm"
    a_layout: str
    b_layout: str
    out_dtype: str  # float32 first; bf16 where this torch rejects float32 output for blockwise
    torch_version: str

    def to_dict(self) -> dict:
        return asdict(self)


_CHOSEN: dict[str, NativeLayout] = {}


def native_available(device=None) -> tuple[bool, str]:
    """(usable, reason). Blockwise FP8 scaled_mm exists only for CUDA sm90 (Hopper) in torch."""
    if not torch.cuda.is_available():
        return False, "no CUDA device: native block-scaled FP8 GEMM needs Hopper (sm90)"
    dev = torch.device(device or "cuda")
    cap = torch.cuda.get_device_capability(dev)
    if cap[0] != 9:
        return False, f"device capability {cap}: torch's blockwise 1x128/128x128 scaled_mm is sm90-only"
    if not (hasattr(torch.nn.functional, "scaled_mm") or hasattr(torch, "_scaled_mm")):
        return False, f"torch {torch.__version__} has no scaled_mm"
    return True, f"sm{cap[0]}{cap[1]}, torch {torch.__version__}"


def _enum_member(enum_cls, wanted: str):
    norm = wanted.replace("_", "").lower()
    for name, member in enum_cls.__members__.items():
        if name.replace("_", "").lower() == norm:
            return member
    raise AttributeError(f"{enum_cls.__name__} has no member like {wanted!r}: {list(enum_cls.__members__)}")


def _call(api: str, a, b, sa, sb, out_dtype):
    F = torch.nn.functional
    if api == "F.scaled_mm":
        st, sw = F.ScalingType, F.SwizzleType
        no_swizzle = _enum_member(sw, "NoSwizzle")
        return F.scaled_mm(a, b, sa, _enum_member(st, "BlockWise1x128"), sb, _enum_member(st, "BlockWise128x128"),
                           swizzle_a=no_swizzle, swizzle_b=no_swizzle, output_dtype=out_dtype)
    return torch._scaled_mm(a, b, sa, sb, out_dtype=out_dtype)  # infers the recipes from scale shapes


def _candidates():
    apis = [a for a in ("F.scaled_mm", "torch._scaled_mm")
            if (a == "F.scaled_mm" and hasattr(torch.nn.functional, "ScalingType")) or
            (a == "torch._scaled_mm" and hasattr(torch, "_scaled_mm"))]
    for out in ("float32", "bfloat16"):
        for api in apis:
            for al in A_LAYOUTS:
                for bl in B_LAYOUTS:
                    yield NativeLayout(api, al, bl, out, torch.__version__)


def _run(layout: NativeLayout, a_data, a_scale, w, w_scale):
    sa = A_LAYOUTS[layout.a_layout](a_scale.float())
    sb = B_LAYOUTS[layout.b_layout](w_scale.float())
    return _call(layout.api, a_data, w.t(), sa, sb, getattr(torch, layout.out_dtype)).float()


def _pad_rows(a_data: torch.Tensor, a_scale: torch.Tensor):
    m = a_data.shape[0]
    pm = _round_up(max(m, 1), _ROW_PAD)
    if pm == m:
        return a_data, a_scale
    codes = torch.zeros((pm, a_data.shape[1]), dtype=torch.uint8, device=a_data.device)
    codes[:m] = a_data.view(torch.uint8)
    scales = torch.ones((pm, a_scale.shape[1]), dtype=torch.float32, device=a_scale.device)
    scales[:m] = a_scale
    return codes.view(torch.float8_e4m3fn), scales


def probe_layouts(a_data, a_scale, w, w_scale) -> list[dict]:
    """Every candidate (api, layouts): accepted or the error text, plus the output when accepted."""
    a_data, a_scale = _pad_rows(a_data, a_scale)
    rows = []
    for cand in _candidates():
        try:
            out = _run(cand, a_data, a_scale, w, w_scale)[: a_data.shape[0]]
            torch.cuda.synchronize()
            rows.append({**cand.to_dict(), "accepted": True, "out": out})
        except (RuntimeError, ValueError, TypeError, AttributeError, NotImplementedError) as exc:
            rows.append({**cand.to_dict(), "accepted": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    return rows


def native_layout() -> NativeLayout | None:
    return _CHOSEN.get("layout")


def native_gemm(a_data: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """float32 (M, N) = (a * a_scale) @ (w * w_scale).T on the GPU with the first layout the op accepts."""
    ok, why = native_available(a_data.device if a_data.is_cuda else None)
    if not ok or not a_data.is_cuda:
        raise BadInputError(f"native FP8 GEMM unavailable: {why}" if not ok else "native GEMM needs CUDA tensors")
    if a_data.shape[1] % BLOCK or w.shape[1] != a_data.shape[1]:
        raise BadInputError(f"native FP8 GEMM needs matching K % 128 == 0, got A {tuple(a_data.shape)} W {tuple(w.shape)}")
    m = a_data.shape[0]
    a_pad, s_pad = _pad_rows(a_data, a_scale)
    chosen = _CHOSEN.get("layout")
    if chosen is not None:
        return _run(chosen, a_pad, s_pad, w, w_scale)[:m]
    errors = []
    for cand in _candidates():
        try:
            out = _run(cand, a_pad, s_pad, w, w_scale)
        except (RuntimeError, ValueError, TypeError, AttributeError, NotImplementedError) as exc:
            errors.append(f"{cand.api}/{cand.a_layout}/{cand.b_layout}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        _CHOSEN["layout"] = cand
        return out[:m]
    raise BadInputError("no scale layout accepted by torch's blockwise scaled_mm:\n  " + "\n  ".join(errors))
