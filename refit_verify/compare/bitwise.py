"""Bitwise comparison of block-FP8 tensors: bytes as bytes, scales as bits, first mismatch located."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from refit_verify.errors import Fp8MismatchError
from refit_verify.fp8 import format as fmt


@dataclass(frozen=True)
class Mismatch:
    tensor: str
    kind: str  # "code" | "scale" | "shape"
    block: tuple[int, int]
    element: Optional[tuple[int, int]]
    a_code: Optional[int]
    b_code: Optional[int]
    a_scale: float
    b_scale: float
    detail: str = ""

    def describe(self) -> str:
        if self.kind == "shape":
            return f"{self.tensor}: shape mismatch: {self.detail}"
        where = f"{self.tensor}: first {self.kind} mismatch in block {self.block}"
        if self.element is not None:
            a_val = _code_value(self.a_code) * self.a_scale
            b_val = _code_value(self.b_code) * self.b_scale
            where += (
                f", element {self.element}: code 0x{self.a_code:02x} vs 0x{self.b_code:02x}"
                f" (dequantized {a_val:.6g} vs {b_val:.6g})"
            )
        return where + f"; scale_inv {self.a_scale!r} vs {self.b_scale!r}" + (f"; {self.detail}" if self.detail else "")

    def to_dict(self) -> dict:
        return asdict(self)


def _code_value(code: int) -> float:
    return float(torch.tensor([code], dtype=torch.uint8).view(torch.float8_e4m3fn).float())


@dataclass
class BitwiseResult:
    tensor: str
    shape: tuple[int, int]
    block: tuple[int, int]
    codes_equal: bool
    scales_equal: bool
    n_code_mismatch: int
    n_scale_mismatch: int
    n_elements: int
    n_blocks: int
    first_mismatch: Optional[Mismatch]
    block_mismatch_counts: torch.Tensor = field(repr=False)  # [Mb, Nb] int64, code mismatches per block
    ulp_histogram: dict = field(default_factory=dict)  # fp8 ulp distance -> count (mismatching finite codes)
    nan_codes: tuple[int, int] = (0, 0)

    @property
    def equal(self) -> bool:
        return self.codes_equal and self.scales_equal

    @property
    def code_mismatch_rate(self) -> float:
        return self.n_code_mismatch / self.n_elements if self.n_elements else 0.0


def _expand_blocks(scale: torch.Tensor, block, shape) -> torch.Tensor:
    return scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: shape[0], : shape[1]]


def normalize_scale(scale: torch.Tensor, data_shape, block) -> torch.Tensor:
    """Accept [Mb, Nb] or [Mb, Nb, 1] (NeMo-RL returns the trailing singleton)."""
    if scale.dim() == 3 and scale.shape[-1] == 1:
        scale = scale.squeeze(-1)
    return scale


def compare_fp8(a_data, a_scale, b_data, b_scale, block=(128, 128), name: str = "tensor") -> BitwiseResult:
    """Compare two (fp8 data, float32 scale_inv) pairs bitwise; a and b are symmetric."""
    a_scale = normalize_scale(a_scale, a_data.shape, block)
    b_scale = normalize_scale(b_scale, b_data.shape, block)
    shape = tuple(a_data.shape)
    if tuple(b_data.shape) != shape or tuple(a_scale.shape) != tuple(b_scale.shape):
        mm = Mismatch(name, "shape", (0, 0), None, None, None, float("nan"), float("nan"),
                      f"data {tuple(a_data.shape)} vs {tuple(b_data.shape)}, "
                      f"scale {tuple(a_scale.shape)} vs {tuple(b_scale.shape)}")
        empty = torch.zeros(0, 0, dtype=torch.int64)
        return BitwiseResult(name, shape, block, False, False, -1, -1, a_data.numel(), a_scale.numel(), mm, empty)
    ca, cb = fmt.codes(a_data).cpu(), fmt.codes(b_data).cpu()
    sa, sb = a_scale.float().cpu().contiguous(), b_scale.float().cpu().contiguous()
    code_diff = ca != cb
    scale_diff = sa.view(torch.int32) != sb.view(torch.int32)
    mb, nb = sa.shape
    per_block = torch.zeros(mb, nb, dtype=torch.int64)
    if code_diff.any():
        rows, cols = code_diff.nonzero(as_tuple=True)
        per_block.index_put_((rows // block[0], cols // block[1]), torch.ones_like(rows), accumulate=True)
    first = _first_mismatch(name, ca, cb, sa, sb, code_diff, scale_diff, block)
    hist = {}
    if code_diff.any():
        finite = code_diff & ~fmt.is_nan_code(ca) & ~fmt.is_nan_code(cb)
        d = (fmt.ordered_code(ca[finite]) - fmt.ordered_code(cb[finite])).abs()
        vals, counts = torch.unique(d, return_counts=True)
        hist = {int(v): int(c) for v, c in zip(vals, counts)}
    return BitwiseResult(
        tensor=name, shape=shape, block=tuple(block),
        codes_equal=not bool(code_diff.any()), scales_equal=not bool(scale_diff.any()),
        n_code_mismatch=int(code_diff.sum()), n_scale_mismatch=int(scale_diff.sum()),
        n_elements=ca.numel(), n_blocks=sa.numel(), first_mismatch=first,
        block_mismatch_counts=per_block, ulp_histogram=hist,
        nan_codes=(int(fmt.is_nan_code(ca).sum()), int(fmt.is_nan_code(cb).sum())),
    )


def _first_mismatch(name, ca, cb, sa, sb, code_diff, scale_diff, block) -> Optional[Mismatch]:
    """The earliest block (row-major) holding a code or scale difference, and its first element."""
    mb, nb = sa.shape
    blocks_with_code = torch.zeros(mb, nb, dtype=torch.bool)
    if code_diff.any():
        r, c = code_diff.nonzero(as_tuple=True)
        blocks_with_code[r // block[0], c // block[1]] = True
    any_block = blocks_with_code | scale_diff
    if not any_block.any():
        return None
    bi, bj = (int(v) for v in any_block.nonzero()[0])
    a_s, b_s = float(sa[bi, bj]), float(sb[bi, bj])
    if blocks_with_code[bi, bj]:
        r0, c0 = bi * block[0], bj * block[1]
        sub = code_diff[r0 : r0 + block[0], c0 : c0 + block[1]]
        er, ec = (int(v) for v in sub.nonzero()[0])
        r, c = r0 + er, c0 + ec
        return Mismatch(name, "code", (bi, bj), (r, c), int(ca[r, c]), int(cb[r, c]), a_s, b_s,
                        "scales differ too" if scale_diff[bi, bj] else "")
    return Mismatch(name, "scale", (bi, bj), None, None, None, a_s, b_s, "codes identical in this block")


def assert_fp8_equal(a_data, a_scale, b_data, b_scale, block=(128, 128), name: str = "tensor") -> BitwiseResult:
    result = compare_fp8(a_data, a_scale, b_data, b_scale, block, name)
    if not result.equal:
        raise Fp8MismatchError(result.first_mismatch)
    return result


def assert_quantized_equal(a, b, name: str = "tensor") -> BitwiseResult:
    """Two QuantizedTensor objects, bitwise."""
    return assert_fp8_equal(a.data, a.scale_inv, b.data, b.scale_inv, a.recipe.block, name)
