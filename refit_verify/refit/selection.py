"""Which trainer weights get quantized before transfer (FACTS.md §5, FP8 selection).

Three policies: ask the engine (robust), the name heuristic (catches weights the engine keeps in
BF16: routers, first/last layers), or an explicit list. Options remove names from any policy.
Ignore patterns match whole dotted components: a substring match of "mlp.gate" also swallows
"mlp.gate_proj" / "mlp.gate_up_proj", a real bug elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

NON_FP8_SUBSTRINGS = ("norm", "embed", "lm_head")
ROUTER_PATTERNS = ("mlp.gate", "shared_expert_gate")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def matches_pattern(name: str, pattern: str) -> bool:
    """True when the pattern's dotted components occur contiguously among the name's components."""
    parts, pat = name.split("."), pattern.split(".")
    return any(parts[i : i + len(pat)] == pat for i in range(len(parts) - len(pat) + 1))


def matches_substring(name: str, pattern: str) -> bool:
    """The buggy matcher, kept to demonstrate the trap."""
    return pattern in name


def layer_index(name: str) -> Optional[int]:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def heuristic_is_fp8(name: str, shape) -> bool:
    """NeMo-RL style: 2-D, ends with .weight, no norm/embed/lm_head substring."""
    return len(tuple(shape)) == 2 and name.endswith(".weight") and not any(s in name for s in NON_FP8_SUBSTRINGS)


@dataclass(frozen=True)
class Fp8Selection:
    policy: str  # "loader" | "heuristic" | "explicit"
    names: Optional[frozenset] = None  # loader / explicit: HF names to quantize
    keep_first_layers: int = 0
    keep_last_layers: int = 0
    num_layers: Optional[int] = None  # needed by keep_last_layers; inferred from names when None
    ignore: tuple[str, ...] = ()
    ignore_match: str = "component"  # "component" | "substring" (the trap)
    exclude_routers: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def is_fp8(self, name: str, shape, num_layers: Optional[int] = None) -> bool:
        if self.policy == "heuristic":
            chosen = heuristic_is_fp8(name, shape)
        elif self.policy in ("loader", "explicit"):
            chosen = name in (self.names or ())
        else:
            raise ValueError(f"unknown FP8 selection policy {self.policy!r}")
        if not chosen:
            return False
        match = matches_pattern if self.ignore_match == "component" else matches_substring
        if any(match(name, p) for p in self.ignore):
            return False
        if self.exclude_routers and any(matches_pattern(name, p) for p in ROUTER_PATTERNS):
            return False
        layer = layer_index(name)
        if layer is not None:
            n = self.num_layers or num_layers
            if layer < self.keep_first_layers:
                return False
            if self.keep_last_layers and n is not None and layer >= n - self.keep_last_layers:
                return False
        return True

    def select(self, shapes: dict) -> set[str]:
        """The HF names this policy quantizes, given {name: shape} of the whole export."""
        layers = [i for i in (layer_index(n) for n in shapes) if i is not None]
        n = max(layers) + 1 if layers else None
        return {name for name, shape in shapes.items() if self.is_fp8(name, shape, n)}

    def to_dict(self) -> dict:
        return {
            "policy": self.policy, "n_names": None if self.names is None else len(self.names),
            "keep_first_layers": self.keep_first_layers, "keep_last_layers": self.keep_last_layers,
            "ignore": list(self.ignore), "ignore_match": self.ignore_match, "exclude_routers": self.exclude_routers,
        }


def loader_selection(loader, **options) -> Fp8Selection:
    """The robust rule: quantize exactly what the engine keeps in FP8."""
    return Fp8Selection("loader", frozenset(loader.fp8_hf_names()), **options)


def heuristic_selection(**options) -> Fp8Selection:
    return Fp8Selection("heuristic", None, **options)


def explicit_selection(names: Iterable[str], **options) -> Fp8Selection:
    return Fp8Selection("explicit", frozenset(names), **options)


def resolve_selection(selection, loader=None) -> Fp8Selection:
    """Accept an Fp8Selection, a policy name, or an iterable of names."""
    if isinstance(selection, Fp8Selection):
        return selection
    if selection == "loader":
        if loader is None:
            raise ValueError("the 'loader' FP8 selection needs the engine loader to ask")
        return loader_selection(loader)
    if selection == "heuristic":
        return heuristic_selection()
    if isinstance(selection, str):
        raise ValueError(f"unknown FP8 selection {selection!r}: loader | heuristic | explicit names")
    return explicit_selection(selection)
