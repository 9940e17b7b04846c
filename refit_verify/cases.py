"""The quantizer case set: shapes that straddle block boundaries, block magnitudes, special values.

Every case derives from one recorded seed, so a failing case is reproduced by (name, seed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

BF16_MAX = float(torch.finfo(torch.bfloat16).max)

# Per-block magnitudes worth covering: zero, bf16 subnormal, tiny (448/a overflows), amax floor,
# fp8 max, bf16 max.
MAGNITUDES = {
    "zero": 0.0,
    "subnormal": 1e-40,
    "tiny": 1e-38,
    "floor": 1e-4,
    "unit": 1.0,
    "fp8_max": 448.0,
    "bf16_max": BF16_MAX,
}
SPECIALS = {"nan": float("nan"), "posinf": float("inf"), "neginf": float("-inf")}


@dataclass(frozen=True)
class Case:
    name: str
    seed: int
    make: Callable[[torch.Generator], torch.Tensor]
    note: str = ""

    def tensor(self) -> torch.Tensor:
        return self.make(torch.Generator().manual_seed(self.seed))


def case_seed(base_seed: int, name: str) -> int:
    """A per-case seed stable under reordering or adding cases."""
    return (base_seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def randn(shape, gen, scale=0.02, dtype=torch.bfloat16) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


def _block_fill(shape, magnitude, block=(128, 128), at=(0, 0)):
    def make(gen):
        x = randn(shape, gen).float()
        r, c = at[0] * block[0], at[1] * block[1]
        sub = x[r : r + block[0], c : c + block[1]]
        sub.copy_(torch.sign(sub) * magnitude if magnitude else torch.zeros_like(sub))
        return x.bfloat16()
    return make


def _special(shape, value, at):
    def make(gen):
        x = randn(shape, gen)
        x[at] = value
        return x
    return make


def _edge_pad(gen):
    x = torch.full((1, 129), 1e-4, dtype=torch.bfloat16)
    x[0, 128] = 100.0
    return x


def _pow2_amax(gen):
    x = randn((256, 256), gen).float()
    for k, (bi, bj) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        blk = x[bi * 128 : bi * 128 + 128, bj * 128 : bj * 128 + 128]
        blk.clamp_(-0.5, 0.5)
        blk[0, 0] = 448.0 * 2.0 ** (-(k + 3))
    return x.bfloat16()


def _ue8m0_boundary(gen):
    """float32 block whose amax / 448 lands one ulp above 2^-9: float-based UE8M0 keeps 2^-9
    (log2 rounds to -9 exactly), the bit-based rule goes to 2^-8."""
    x = randn((128, 128), gen, dtype=torch.float32)
    x[3, 7] = float(torch.nextafter(torch.tensor(0.875), torch.tensor(1.0)))
    return x


SHAPES = [(1, 1), (127, 129), (129, 257), (300, 520), (256, 384), (128, 128), (385, 130), (1, 129), (130, 1)]


def default_cases(seed: int = 0) -> list[Case]:
    """The standard case set used by `check` and the PR suite."""
    out: list[Case] = []

    def add(name, make, note=""):
        out.append(Case(name, case_seed(seed, name), make, note))

    for m, n in SHAPES:
        add(f"randn_{m}x{n}", lambda g, s=(m, n): randn(s, g), "randn*0.02 bf16")
    add("randn_f32_129x257", lambda g: randn((129, 257), g, dtype=torch.float32), "float32 input")
    for mag_name, mag in MAGNITUDES.items():
        add(f"block_{mag_name}_256x256", _block_fill((256, 256), mag, at=(0, 1)), f"block (0,1) at |x|={mag}")
    add("all_zero_130x130", lambda g: torch.zeros(130, 130, dtype=torch.bfloat16))
    add("edge_pad_1x129", _edge_pad, "FACTS.md §3 padding example")
    add("edge_outlier_129x257", _special((129, 257), 1e4, (-1, -1)), "outlier at [-1,-1]")
    add("pow2_amax_256x256", _pow2_amax, "block amax = 448 * 2^-k")
    add("ue8m0_boundary_f32_128x128", _ue8m0_boundary, "amax/448 one ulp above a power of two")
    for sp_name, sp in SPECIALS.items():
        add(f"{sp_name}_in_block_256x256", _special((256, 256), sp, (5, 200)), f"{sp_name} in block (0,1)")
    return out


def iter_tensors(cases) -> Iterator[tuple[Case, torch.Tensor]]:
    for case in cases:
        yield case, case.tensor()


def _mx_groups(gen):
    """One 1x32 group per row: zero, NaN, +inf, bf16 subnormal, tiny, exact power-of-two amaxes and
    one ulp above them (the E8M0 rounding boundaries), 448 and 449 (float32), bf16 max."""
    x = randn((12, 64), gen, dtype=torch.float32)
    x[0, :32] = 0.0
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    x[3, :32] = 1e-40
    x[4, :32] = x[4, :32] * 1e-37
    x[5:10, :32] *= 2.0**-30  # the boundary value below must be its group's amax
    x[11, :32] *= 2.0**-30
    x[5, 0] = 448.0 * 2.0**-20
    x[6, 0] = float(torch.nextafter(torch.tensor(448.0 * 2.0**-20), torch.tensor(1.0)))
    x[7, 0] = 448.0
    x[8, 0] = 449.0
    x[9, 0] = BF16_MAX
    x[10, :32] = -x[10, :32].abs()
    x[11, 31] = -448.0 * 2.0**-3
    return x


MX_SHAPES = [(1, 32), (4, 64), (3, 96), (128, 256), (7, 33)]


def mx_cases(seed: int = 0) -> list[Case]:
    """The MXFP8 case set (1x32 groups along K): shapes whose K is (and one whose K is not) a multiple
    of 32, and the group edge cases."""
    out: list[Case] = []

    def add(name, make, note=""):
        out.append(Case(name, case_seed(seed, name), make, note))

    for m, n in MX_SHAPES:
        add(f"mx_randn_{m}x{n}", lambda g, s=(m, n): randn(s, g), "randn*0.02 bf16")
    add("mx_randn_f32_64x128", lambda g: randn((64, 128), g, dtype=torch.float32), "float32 input")
    add("mx_groups_f32_12x64", _mx_groups, "zero/NaN/inf/subnormal/tiny/power-of-two boundary groups")
    add("mx_groups_bf16_12x64", lambda g: _mx_groups(g).bfloat16(), "the same groups in bf16")
    return out


def case_set(seed: int = 0, block=(128, 128)) -> list[Case]:
    """The case set for a recipe's block: MXFP8's 1x32 groups get their own."""
    return mx_cases(seed) if tuple(block) == (1, 32) else default_cases(seed)
