"""A finding is one hazard the refit run observed: what, where (tensor, shard, block, rows), how bad.

Loading errors are findings too, so a run reports every hazard instead of stopping at the first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

# Hazard kinds, one per failure class the harness knows (FACTS.md §4, §5).
HAZARDS = {
    "placement_raised": "vLLM's block-rounded scale placement ran past the fused scale",
    "scale_misplaced": "rows get a neighbouring shard's block scale (vLLM's rounding on unaligned shards)",
    "straddling_block": "a 128-row block holds rows of two shards: not representable in the block layout",
    "shape_validation": "an output partition other than the last is not a multiple of the block",
    "shape_mismatch": "arrived tensor does not fit the engine parameter",
    "load_failed": "the loader could not load a tensor (quantizer failure or other typed error)",
    "placeholder_scale": "scale entries still hold the finfo(float32).min fill",
    "bad_scale": "NaN, Inf, zero or negative scale",
    "fp8_into_bf16": "FP8 data loaded into a parameter the engine keeps in BF16",
    "bf16_into_fp8": "unquantized data cast into an FP8 parameter without a scale",
    "fp8_requantized_as_bf16": "an FP8 tensor arrived in a batch detected as BF16 and was quantized again",
    "missing_scale": "an FP8 weight arrived pre-quantized but its _scale_inv never did",
    "unknown_name": "a name the engine has no parameter for",
    "never_loaded": "an engine parameter (or shard) nothing was loaded into",
    "transport": "the packed transport refused or lost a tensor",
    "selection_mismatch": "trainer and engine disagree on which weights are FP8",
    "requant_drift": "process_weights_after_loading changed the dequantized values that were sent",
    "requant_rebytes": "requantization changed bytes but not values",
    "bitwise_mismatch": "FP8-before and FP8-after left different engine bytes",
    # the real engine (refit_verify.engine.vllm_refit): vLLM 0.33 block FP8 has no online quantization
    "engine_no_online_quant": "the engine value-cast BF16 into an FP8 parameter without quantizing it and kept "
                              "the old scale: FP8-after needs a quantizing loader",
}


@dataclass
class Finding:
    hazard: str
    tensor: str
    message: str
    path: str = ""  # "before" | "after" | "" (both / comparison)
    severity: str = "error"  # error | warning | info
    shard: Optional[object] = None
    block: Optional[tuple[int, int]] = None
    rows: Optional[list[tuple[int, int]]] = None  # inclusive row ranges
    detail: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.hazard not in HAZARDS:
            raise ValueError(f"unknown hazard kind {self.hazard!r}")

    def describe(self) -> str:
        where = self.tensor
        if self.shard is not None:
            where += f" [shard {self.shard!r}]"
        if self.block is not None:
            where += f" block {self.block}"
        if self.rows:
            where += f" rows {self.rows}"
        return f"[{self.path or '-'}:{self.hazard}] {where}: {self.message}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shard"] = None if self.shard is None else (self.shard if isinstance(self.shard, (int, str)) else repr(self.shard))
        d["block"] = list(self.block) if self.block is not None else None
        d["rows"] = [list(r) for r in self.rows] if self.rows else None
        return d


def row_ranges(mask) -> list[tuple[int, int]]:
    """Inclusive [first, last] runs of True in a 1-D bool tensor (the golden file's row format)."""
    idx = mask.nonzero().flatten().tolist()
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
