"""The reference engine as an adapter of the Engine protocol (refit/engine.py).

It wraps the single-rank EngineStore (vLLM 0.33's block-FP8 loading semantics) and runs the
post-load step (UE8M0 requantization and the post-load checks) at `finish_refit`, so the one
refit driver sees it only through begin_refit / receive / finish_refit / state.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from refit_verify.layout import SINGLE, Rank
from refit_verify.refit.engine import EngineState
from refit_verify.refit.loader import EngineStore
from refit_verify.refit.postload import post_load_findings, process_weights_after_loading, requant_findings


class ReferenceEngine:
    name = "reference"
    layout = SINGLE

    def __init__(self, cfg, *, placement: str = "vllm", detection: str = "metadata", recipe="vllm_per_block",
                 shape_mismatch_exemption: Optional[bool] = None, path: str = "", ue8m0_requant: bool = False,
                 output_dtype=torch.bfloat16):
        self.store = EngineStore(cfg, placement=placement, detection=detection, recipe=recipe,
                                 shape_mismatch_exemption=shape_mismatch_exemption, path=path)
        self.path, self.ue8m0_requant, self.output_dtype = path, ue8m0_requant, output_dtype
        self.requant: list = []
        self._post_findings: list = []

    @property
    def recipe(self):
        return self.store.recipe

    def fp8_hf_names(self) -> set[str]:
        return self.store.fp8_hf_names()

    def begin_refit(self, metadata: Optional[dict] = None) -> None:
        self.requant, self._post_findings = [], []
        self.store.begin_refit(metadata)

    def receive(self, batch: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.store.load_weights(list(batch))

    def finish_refit(self) -> None:
        # Checks see the state as loaded; requantization legitimately rewrites scales afterwards.
        self._post_findings = post_load_findings(self.store)
        self.requant = process_weights_after_loading(self.store, self.ue8m0_requant, self.output_dtype)
        self._post_findings = self._post_findings + requant_findings(self.requant, self.path)

    def state(self) -> EngineState:
        return EngineState(SINGLE, {Rank(): self.store.parameters()},
                           list(self.store.findings) + list(self._post_findings),
                           {"engine": self.name, "recipe": self.store.recipe.name, "placement": self.store.placement,
                            "path": self.path, "block": self.store.block, "requant": list(self.requant)})


class ReferenceEngineFactory:
    """Builds a ReferenceEngine per refit path with one set of loader settings."""

    def __init__(self, *, placement: str = "vllm", detection: str = "metadata", ue8m0_requant: bool = False,
                 output_dtype=torch.bfloat16, shape_mismatch_exemption: Optional[bool] = None):
        self.kw = dict(placement=placement, detection=detection, ue8m0_requant=ue8m0_requant,
                       output_dtype=output_dtype, shape_mismatch_exemption=shape_mismatch_exemption)
        self.options = dict(engine="reference", placement=placement, detection=detection,
                            ue8m0_requant=ue8m0_requant, output_dtype=str(output_dtype),
                            shape_mismatch_exemption=shape_mismatch_exemption)

    def __call__(self, cfg, path: str, recipe) -> ReferenceEngine:
        return ReferenceEngine(cfg, recipe=recipe, path=path, **self.kw)
