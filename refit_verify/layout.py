"""Engine parallel layout: a plain value (tensor, expert and pipeline parallel sizes) and its ranks.

Sizes mean what they mean in vLLM: `tp` slices each linear, `ep` splits whole experts over ranks,
`pp` splits the decoder layers into stages. Any positive sizes, not only powers of two.
"""

from __future__ import annotations

from dataclasses import dataclass

from refit_verify.errors import BadInputError


@dataclass(frozen=True)
class Rank:
    tp: int = 0
    ep: int = 0
    pp: int = 0

    @property
    def label(self) -> str:
        return f"tp{self.tp}.ep{self.ep}.pp{self.pp}"


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    ep: int = 1
    pp: int = 1

    def __post_init__(self):
        for k in ("tp", "ep", "pp"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise BadInputError(f"layout {k} must be a positive integer, got {v!r}")

    @property
    def world_size(self) -> int:
        return self.tp * self.ep * self.pp

    def ranks(self) -> list[Rank]:
        return [Rank(t, e, p) for p in range(self.pp) for e in range(self.ep) for t in range(self.tp)]

    @property
    def is_single(self) -> bool:
        return self.world_size == 1

    def to_dict(self) -> dict:
        return {"tp": self.tp, "ep": self.ep, "pp": self.pp}


SINGLE = Layout()
