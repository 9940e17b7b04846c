"""One concrete input per preset where it differs from `vllm_per_block`, and what differs there.

The witnesses are data (a seeded construction each); `witness_diff` runs both recipes on the input and
reports the difference as computed, so the table in docs/PRESETS_TABLE.md is generated, not typed:
`python -m refit_verify.fp8.witness > docs/PRESETS_TABLE.md` (the `fit` section is appended by hand).
A preset whose groups are not 128x128 always differs from `vllm_per_block` in the scale layout; its
witness is also held against the preset of its own group shape (`same_block`), where the real choice shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from refit_verify.fp8 import format as fmt
from refit_verify.fp8.presets import ALIASES, PRESETS
from refit_verify.fp8.quantize import quantize

BASELINE = "vllm_per_block"


def _randn(shape, dtype=torch.bfloat16, scale=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _with(x, values: dict):
    x = x.clone()
    for (r, c), v in values.items():
        x[r, c] = v
    return x


def _mx_row(values, k=32):
    x = torch.zeros(1, k, dtype=torch.float32)
    x[0, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return x


_NEXT_BOUNDARY = float(torch.nextafter(torch.tensor(448.0 * 2.0**-20), torch.tensor(1.0)))


@dataclass(frozen=True)
class Witness:
    description: str
    make: Callable[[], torch.Tensor]
    same_block: Optional[str] = None  # the preset of the same group shape it is also held against


W = Witness
WITNESSES: dict[str, Witness] = {
    "vllm_per_block_ue8m0": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "nemo_rl": W("all-zero bf16 128x128", lambda: torch.zeros(128, 128, dtype=torch.bfloat16)),
    "nemo_rl_pow2": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "nemo_rl_nan_to_num": W("randn*0.02 bf16 128x128 with a NaN at (0, 1)",
                            lambda: _with(_randn((128, 128)), {(0, 1): float("nan")})),
    "deepgemm": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "transformer_engine": W("all-zero bf16 128x128", lambda: torch.zeros(128, 128, dtype=torch.bfloat16)),
    "transformer_engine_pow2": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "torchao": W("all-zero bf16 128x128", lambda: torch.zeros(128, 128, dtype=torch.bfloat16)),
    "nemo_rl_pow2_nan_to_num": W("randn*0.02 bf16 128x128 with a NaN at (0, 1)",
                                 lambda: _with(_randn((128, 128)), {(0, 1): float("nan")})),
    "verl_torch": W("all-zero bf16 128x128", lambda: torch.zeros(128, 128, dtype=torch.bfloat16)),
    "verl_vllm_fp8_utils": W("randn*0.02 bf16 129x257 (not a multiple of 128)", lambda: _randn((129, 257))),
    "slime_update": W("randn*1e-7 float32 128x128 (amax under vLLM's 1e-4 floor)",
                      lambda: _randn((128, 128), torch.float32, 1e-7)),
    "slime_convert": W("all-zero bf16 128x128", lambda: torch.zeros(128, 128, dtype=torch.bfloat16)),
    "areal": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "torchao_float8tensor": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "compressed_tensors": W("randn*0.02 bf16 128x128 with -0.0 at (0, 0)",
                            lambda: _with(_randn((128, 128)), {(0, 0): -0.0})),
    "mxfp8_vllm": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "mxfp8_te": W("float32 1x32 group [1.0, NaN, 0, ...]", lambda: _mx_row([1.0, float("nan")]), "mxfp8_vllm"),
    "mxfp8_nemo_rl": W("float32 1x32 group [1e-40, 0, ...]", lambda: _mx_row([1e-40]), "mxfp8_vllm"),
    "vllm_act_group": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128))),
    "vllm_act_group_ue8m0": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128)), "vllm_act_group"),
    "vllm_act_group_native": W("randn*0.02 bf16 4x129 (K not a multiple of 128)", lambda: _randn((4, 129)),
                               "vllm_act_group"),
    "vllm_act_group_native_ue8m0": W("randn*0.02 bf16 128x128", lambda: _randn((128, 128)),
                                     "vllm_act_group_native"),
}
ALIAS_WITNESS = {"sglang_ue8m0": "vllm_per_block_ue8m0", "verl_triton": "slime_update"}


def _run(x, preset):
    try:
        return quantize(x, preset, name="witness")
    except Exception as exc:  # a recipe that refuses the input (e.g. divisibility) is a difference too
        return exc


def difference(x: torch.Tensor, preset: str, baseline: str = BASELINE) -> str:
    """What differs between `preset` and `baseline` on x, as computed ("" when nothing does)."""
    a, b = _run(x, preset), _run(x, baseline)
    if isinstance(a, Exception) or isinstance(b, Exception):
        if isinstance(a, Exception) and isinstance(b, Exception):
            return ""
        who = preset if isinstance(a, Exception) else baseline
        return f"{who} raises ({type(a if who == preset else b).__name__}), the other quantizes"
    parts = []
    if a.codes.shape != b.codes.shape or not torch.equal(a.codes, b.codes):
        n = int((a.codes != b.codes).sum()) if a.codes.shape == b.codes.shape else a.codes.numel()
        parts.append(f"code bytes ({n} of {a.codes.numel()})")
    if a.recipe.block != b.recipe.block:
        parts.append(f"scale layout {tuple(a.scale_inv.shape)} vs {tuple(b.scale_inv.shape)} "
                     f"({_blk(a)} groups vs {_blk(b)})")
    else:
        bits = a.scale_inv.float().contiguous().view(torch.int32) != b.scale_inv.float().contiguous().view(torch.int32)
        if bool(bits.any()):
            parts.append(f"scale bits ({int(bits.sum())} of {bits.numel()}; e.g. {_first_scales(a, b, bits)})")
    return "; ".join(parts)


def _blk(q) -> str:
    return f"{q.recipe.block[0]}x{q.recipe.block[1]}"


def _first_scales(a, b, bits) -> str:
    i = tuple(int(v) for v in bits.nonzero()[0])
    sa, sb = float(a.scale_inv[i]), float(b.scale_inv[i])
    if a.recipe.block == b.recipe.block == (1, 32):
        return f"E8M0 byte {int(fmt.e8m0_bytes(a.scale_inv[i]))} vs {int(fmt.e8m0_bytes(b.scale_inv[i]))}"
    return f"{sa:.6g} vs {sb:.6g}"


def table_rows() -> list[dict]:
    """Every preset and alias: name, source, witness, what differs from vllm_per_block (and same_block)."""
    rows = []
    for name, r in PRESETS.items():
        if name == BASELINE:
            rows.append({"name": name, "source": r.source, "witness": "(the baseline)", "differs": "", "same": "",
                         "fields": ""})
            continue
        w = WITNESSES[name]
        x = w.make()
        same = f"vs {w.same_block}: {difference(x, name, w.same_block)}" if w.same_block else ""
        rows.append({"name": name, "source": r.source, "witness": w.description,
                     "differs": difference(x, name), "same": same, "fields": _fields(name)})
    for alias, (target, source) in ALIASES.items():
        w = WITNESSES.get(ALIAS_WITNESS.get(alias, ""))
        differs = difference(w.make(), target) if w else ""
        rows.append({"name": f"{alias} (= {target})", "source": source,
                     "witness": w.description if w else "(is the baseline)", "differs": differs, "same": "",
                     "fields": _fields(target)})
    return rows


def _fields(name: str) -> str:
    """The recipe fields where `name` differs from the baseline: `field: baseline -> name`."""
    from refit_verify.fp8.recipe import recipe_diff

    return ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in recipe_diff(PRESETS[BASELINE], PRESETS[name]).items())


def markdown() -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| preset | source (repository, path, revision) | witness input | differs from vllm_per_block there "
           "(computed) | recipe fields vs vllm_per_block |", "|---|---|---|---|---|"]
    for r in table_rows():
        differs = "; ".join(p for p in (r["differs"], r["same"]) if p) or "— (same bytes)"
        out.append(f"| `{r['name']}` | {esc(r['source'])} | {esc(r['witness'])} | {esc(differs)} | "
                   f"{esc(r['fields']) or '—'} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
