"""One comparison result per tensor: bitwise verdict, first mismatch, per-block detail, magnitudes, rank.

FP8 tensors are compared as bytes (fp8 codes as uint8: +0/-0 and NaN payloads are differences a
float compare hides) and their block scales as int32 bits (a 1-ulp scale difference is a refit
difference); magnitudes come after, and only when the source is given. Everything else is
compared as raw bits. The refit run, the streaming verifier, `diff` and `check` all return a
`TensorComparison` from `compare_fp8` / `compare_bits`.

`compare_fp8` walks row chunks on the tensors' own device, so its temporaries stay at about one
chunk (the streaming verifier runs it on 8B-sized GPU tensors); counts stay on the device until
the tensor is done (one host sync), and per-block detail is computed only where codes differ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from refit_verify.errors import Fp8MismatchError
from refit_verify.fp8 import format as fmt

CHUNK_ELEMS = 1 << 22  # elements per row chunk (16 MB of fp32 temporaries)
MAX_LISTED_BLOCKS = 16  # mismatching blocks listed in a report (the counts tensor has all of them)
UNMATCHED_KINDS = ("missing", "shape")


@dataclass(frozen=True)
class Mismatch:
    tensor: str
    kind: str  # "code" | "scale" | "shape" | "missing" | "bits"
    block: Optional[tuple[int, int]]
    element: Optional[tuple]
    a_code: Optional[int]
    b_code: Optional[int]
    a_scale: float
    b_scale: float
    detail: str = ""
    a_value: Optional[float] = None  # "bits": the two values at `element`
    b_value: Optional[float] = None

    def describe(self) -> str:
        if self.kind == "shape":
            return f"{self.tensor}: shape mismatch: {self.detail}"
        if self.kind == "missing":
            return f"{self.tensor}: {self.detail}"
        if self.kind == "bits":
            return f"{self.tensor}: first difference at {list(self.element)}: {self.a_value!r} vs {self.b_value!r}"
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
        return dict(asdict(self), describe=self.describe())


def _code_value(code: int) -> float:
    return float(torch.tensor([code], dtype=torch.uint8).view(torch.float8_e4m3fn).float())


@dataclass
class TensorComparison:
    """Two copies of one tensor compared. `block_mismatch_counts` ([Mb, Nb] code differences per
    block, FP8 only) is the per-block detail; `to_dict` lists the first MAX_LISTED_BLOCKS of it."""

    tensor: str
    kind: str  # "fp8" (codes + block scales) | "bf16" (bits) | "scale_rows" (bits) | "missing" | "shape"
    shape: tuple
    n_code_mismatch: int  # bits kinds: differing elements ("scale_rows": counted as scales)
    n_scale_mismatch: int
    n_elements: int
    block: tuple = (128, 128)
    n_blocks: int = 0
    first_mismatch: Optional[Mismatch] = None
    block_mismatch_counts: Optional[torch.Tensor] = field(default=None, repr=False)
    ulp_histogram: dict = field(default_factory=dict)  # fp8 ulp distance -> count (differing finite codes)
    nan_codes: tuple = (0, 0)
    magnitudes: dict = field(default_factory=dict)  # rel_l2_a, rel_l2_b (each side vs source), rel_l2_ab
    rank: str = ""  # Rank.label of the engine rank holding it ("" for a single rank)

    @property
    def codes_equal(self) -> bool:
        return self.kind not in UNMATCHED_KINDS and self.n_code_mismatch == 0

    @property
    def scales_equal(self) -> bool:
        return self.kind not in UNMATCHED_KINDS and self.n_scale_mismatch == 0

    @property
    def equal(self) -> bool:
        return self.codes_equal and self.scales_equal

    @property
    def code_mismatch_rate(self) -> float:
        return self.n_code_mismatch / self.n_elements if self.n_elements else 0.0

    @property
    def max_code_ulp(self) -> int:
        return max(self.ulp_histogram, default=0)

    @property
    def first_block(self) -> Optional[tuple]:
        return self.first_mismatch.block if self.first_mismatch else None

    @property
    def first_element(self) -> Optional[tuple]:
        return self.first_mismatch.element if self.first_mismatch else None

    def mismatched_blocks(self, limit: Optional[int] = MAX_LISTED_BLOCKS) -> list:
        """[[block_row, block_col, n_codes], ...] of blocks with differing codes, row-major."""
        c = self.block_mismatch_counts
        if c is None or not c.numel():
            return []
        idx = c.nonzero().tolist()
        return [[i, j, int(c[i, j])] for i, j in (idx if limit is None else idx[:limit])]

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "kind": self.kind, "shape": list(self.shape), "equal": self.equal,
                "n_code_mismatch": self.n_code_mismatch, "n_scale_mismatch": self.n_scale_mismatch,
                "n_elements": self.n_elements, "block": list(self.block), "n_blocks": self.n_blocks,
                "first_mismatch": self.first_mismatch.to_dict() if self.first_mismatch else None,
                "mismatched_blocks": self.mismatched_blocks(), "nan_codes": list(self.nan_codes),
                "ulp_histogram": {str(k): v for k, v in self.ulp_histogram.items()},
                "magnitudes": dict(self.magnitudes), "rank": self.rank}


def code_bytes(t: torch.Tensor) -> torch.Tensor:
    """fp8 compared as bytes: +0/-0 and NaN payloads are differences (a float compare hides them)."""
    return fmt.codes(t)


def scale_bits(s: torch.Tensor) -> torch.Tensor:
    """Scales compared as int32 bits (a 1-ulp scale difference is a refit difference)."""
    return s.float().contiguous().view(torch.int32)


def normalize_scale(scale: torch.Tensor, data_shape, block) -> torch.Tensor:
    """Accept [Mb, Nb] or [Mb, Nb, 1] (NeMo-RL returns the trailing singleton)."""
    if scale.dim() == 3 and scale.shape[-1] == 1:
        scale = scale.squeeze(-1)
    return scale


def _row_chunks(m: int, n: int, block_rows: int, chunk_elems: int) -> list[tuple[int, int]]:
    rows = max(block_rows, (chunk_elems // max(n, 1)) // block_rows * block_rows)
    return [(r0, min(m, r0 + rows)) for r0 in range(0, m, rows)]


def compare_fp8(a_data, a_scale, b_data, b_scale, block=(128, 128), name: str = "tensor", *,
                source: Optional[torch.Tensor] = None, chunk_elems: int = CHUNK_ELEMS) -> TensorComparison:
    """Compare two (fp8 data, float32 scale_inv) pairs bitwise; a and b are symmetric.

    source: the tensor both were quantized from; when given, `magnitudes` holds each side's
    relative L2 error against it and the two sides' against each other.
    """
    block = tuple(block)
    a_scale = normalize_scale(a_scale, a_data.shape, block)
    b_scale = normalize_scale(b_scale, b_data.shape, block)
    shape = tuple(a_data.shape)
    if tuple(b_data.shape) != shape or tuple(a_scale.shape) != tuple(b_scale.shape):
        mm = Mismatch(name, "shape", None, None, None, None, float("nan"), float("nan"),
                      f"data {tuple(a_data.shape)} vs {tuple(b_data.shape)}, "
                      f"scale {tuple(a_scale.shape)} vs {tuple(b_scale.shape)}")
        return TensorComparison(name, "shape", shape, a_data.numel(), a_scale.numel(), a_data.numel(), block,
                                a_scale.numel(), mm)
    ca, cb = code_bytes(a_data), code_bytes(b_data)
    sa, sb = a_scale.float().contiguous(), b_scale.float().contiguous()
    scale_diff = scale_bits(sa) != scale_bits(sb)
    chunks = _row_chunks(shape[0], shape[1], block[0], chunk_elems)
    counts = torch.zeros(4, dtype=torch.int64, device=ca.device)  # code diffs, nan a, nan b, scale diffs
    counts[3] = scale_diff.sum()
    for r0, r1 in chunks:
        xa, xb = ca[r0:r1], cb[r0:r1]
        counts[0] += (xa != xb).sum()
        counts[1] += fmt.is_nan_code(xa).sum()
        counts[2] += fmt.is_nan_code(xb).sum()
    n_code, nan_a, nan_b, n_scale = (int(v) for v in counts.tolist())
    per_block, hist = _code_detail(ca, cb, chunks, block, tuple(sa.shape), bool(n_code))
    scale_diff = scale_diff.cpu()
    first = _first_mismatch(name, ca, cb, sa, sb, per_block, scale_diff, block) if n_code or n_scale else None
    mags = _magnitudes(source, a_data, sa, b_data, sb, block, chunks, bool(n_code or n_scale)) \
        if source is not None else {}
    return TensorComparison(name, "fp8", shape, n_code, n_scale, ca.numel(), block, sa.numel(), first, per_block,
                            hist, (nan_a, nan_b), mags)


def _code_detail(ca, cb, chunks, block, scale_shape, differ: bool) -> tuple[torch.Tensor, dict]:
    """Per-block code-mismatch counts [Mb, Nb] (CPU) and the fp8-ulp histogram of differing finite codes."""
    per_block = torch.zeros(scale_shape, dtype=torch.int64, device=ca.device)
    hist: dict = {}
    if not differ:
        return per_block.cpu(), hist
    for r0, r1 in chunks:
        xa, xb = ca[r0:r1], cb[r0:r1]
        diff = xa != xb
        rows, cols = diff.nonzero(as_tuple=True)
        if not rows.numel():
            continue
        per_block.index_put_(((rows + r0) // block[0], cols // block[1]), torch.ones_like(rows), accumulate=True)
        fin = diff & ~fmt.is_nan_code(xa) & ~fmt.is_nan_code(xb)
        d = (fmt.ordered_code(xa[fin]) - fmt.ordered_code(xb[fin])).abs()
        for v, c in zip(*(t.tolist() for t in torch.unique(d, return_counts=True))):
            hist[int(v)] = hist.get(int(v), 0) + int(c)
    return per_block.cpu(), dict(sorted(hist.items()))


def _first_mismatch(name, ca, cb, sa, sb, block_codes, scale_diff, block) -> Optional[Mismatch]:
    """The earliest block (row-major) holding a code or scale difference, and its first element."""
    any_block = (block_codes > 0) | scale_diff
    if not any_block.any():
        return None
    bi, bj = (int(v) for v in any_block.nonzero()[0])
    a_s, b_s = float(sa[bi, bj]), float(sb[bi, bj])
    if block_codes[bi, bj] > 0:
        r0, c0 = bi * block[0], bj * block[1]
        sub = ca[r0 : r0 + block[0], c0 : c0 + block[1]] != cb[r0 : r0 + block[0], c0 : c0 + block[1]]
        found = sub.nonzero()
        if not found.shape[0]:  # counts and geometry disagree: say so rather than invent an element
            return Mismatch(name, "code", (bi, bj), None, None, None, a_s, b_s,
                            f"no differing code inside block {(bi, bj)} of size {tuple(block)}")
        r, c = r0 + int(found[0, 0]), c0 + int(found[0, 1])
        return Mismatch(name, "code", (bi, bj), (r, c), int(ca[r, c]), int(cb[r, c]), a_s, b_s,
                        "scales differ too" if scale_diff[bi, bj] else "")
    return Mismatch(name, "scale", (bi, bj), None, None, None, a_s, b_s, "codes identical in this block")


def _finite0(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _dequant_rows(data, scale, r0, r1, block) -> torch.Tensor:
    n = data.shape[1]
    s = scale[r0 // block[0] : math.ceil(r1 / block[0])]
    s = s.repeat_interleave(block[0], 0)[r0 % block[0] : r0 % block[0] + r1 - r0]
    return _finite0(data[r0:r1].float() * s.repeat_interleave(block[1], 1)[:, :n])


def _magnitudes(source, a_data, sa, b_data, sb, block, chunks, differ: bool) -> dict:
    """Relative L2 of each side against the source and of the sides against each other (float64 sums)."""
    sums = torch.zeros(4, dtype=torch.float64, device=a_data.device)  # |w|^2, |w-a|^2, |w-b|^2, |a-b|^2
    for r0, r1 in chunks:
        src = _finite0(source[r0:r1].float())
        da = _dequant_rows(a_data, sa, r0, r1, block)
        sums[0] += src.square().sum()
        sums[1] += (src - da).square().sum()
        if differ:
            db = _dequant_rows(b_data, sb, r0, r1, block)
            sums[2] += (src - db).square().sum()
            sums[3] += (da - db).square().sum()
    w2, ea2, eb2, eab2 = sums.tolist()
    eb2 = eb2 if differ else ea2

    def rel(e):
        return math.sqrt(e / w2) if w2 > 0 else (0.0 if e == 0 else math.inf)
    return {"rel_l2_a": rel(ea2), "rel_l2_b": rel(eb2), "rel_l2_ab": rel(eab2)}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def compare_bits(a: torch.Tensor, b: torch.Tensor, name: str = "tensor", kind: str = "bf16") -> TensorComparison:
    """Any two tensors as raw bits; "scale_rows" counts its differences as scale mismatches."""
    if b is None or tuple(b.shape) != tuple(a.shape) or b.dtype != a.dtype:
        why = "no such parameter" if b is None else f"{tuple(b.shape)} {b.dtype}"
        mm = Mismatch(name, "missing" if b is None else "shape", None, None, None, None, float("nan"), float("nan"),
                      f"other side has {why}")
        return TensorComparison(name, mm.kind, tuple(a.shape), a.numel(), 0, a.numel(), first_mismatch=mm)
    diff = _bits(a) != _bits(b)
    n = int(diff.sum())
    first = None
    if n:
        idx = tuple(int(v) for v in diff.nonzero()[0])
        first = Mismatch(name, "bits", None, idx, None, None, float("nan"), float("nan"),
                         a_value=float(a[idx]), b_value=float(b[idx]))
    scale = kind == "scale_rows"
    return TensorComparison(name, kind, tuple(a.shape), 0 if scale else n, n if scale else 0, a.numel(),
                            first_mismatch=first)


def assert_fp8_equal(a_data, a_scale, b_data, b_scale, block=(128, 128), name: str = "tensor") -> TensorComparison:
    result = compare_fp8(a_data, a_scale, b_data, b_scale, block, name)
    if not result.equal:
        raise Fp8MismatchError(result.first_mismatch)
    return result


def assert_quantized_equal(a, b, name: str = "tensor") -> TensorComparison:
    """Two QuantizedTensor objects, bitwise."""
    return assert_fp8_equal(a.data, a.scale_inv, b.data, b.scale_inv, a.recipe.block, name)
