"""The engine seam: what the one refit driver needs of an engine, and what an engine holds afterwards.

The driver (`run_refit`) speaks only this protocol. The reference loader, the real vLLM CPU driver,
the sharded (tp/ep/pp) reference and a live engine are adapters of it; none reaches into another
module's private state. An `EngineFactory` builds a fresh engine for each refit path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Protocol, runtime_checkable

import torch

from refit_verify.layout import SINGLE, Layout, Rank


@dataclass
class EngineState:
    """What an engine holds after a refit: per rank, engine parameter name -> tensor (CPU copies)."""

    layout: Layout = SINGLE
    ranks: dict = field(default_factory=dict)  # Rank -> {engine param name: tensor}
    findings: list = field(default_factory=list)  # refit.findings.Finding raised while loading
    # engine, recipe (name), block, placement, path; "requant": refit.postload.RequantRecord list
    meta: dict = field(default_factory=dict)
    complete: bool = True  # False when the engine stopped loading part way (its loader raised)

    def params(self, rank: Optional[Rank] = None) -> dict:
        return self.ranks[rank if rank is not None else Rank()]


@runtime_checkable
class Engine(Protocol):
    name: str
    layout: Layout

    def fp8_hf_names(self) -> set[str]:
        """Trainer (HF) names of the weights this engine keeps in FP8: what the robust selection sends as FP8."""

    def begin_refit(self, metadata: Optional[dict] = None) -> None:
        """Start one refit step (metadata: what the sender declares, e.g. pre-quantized)."""

    def receive(self, batch: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load one transport batch of (trainer-side name, tensor); hazards become findings, never raises."""

    def finish_refit(self) -> None:
        """End the step: post-load processing (e.g. UE8M0 requant) runs here."""

    def state(self) -> EngineState:
        """What every rank holds now."""


@runtime_checkable
class EngineFactory(Protocol):
    """Builds the engine of one refit path; `options` go into the run's report as the engine's settings."""

    options: dict

    def __call__(self, cfg, path: str, recipe) -> Engine:
        """A fresh engine for `cfg` whose on-load recipe is `recipe` (a refit_verify.fp8.Recipe)."""
