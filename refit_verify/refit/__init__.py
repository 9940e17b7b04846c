"""The refit pipeline in reference form (FACTS.md §4, §5).

- `exporter.TrainerExporter(weights, mode, quantizer, selection)`: trainer-side (name, tensor) stream
  and `{name: (shape, dtype)}` metadata; `selection.*` chooses what is quantized.
- `transport.InProcessTransport` / `distributed.broadcast_transfer`: packed uint8 buckets.
- `loader.EngineStore(cfg, placement=, detection=, recipe=)`: vLLM-style parameter store;
  `postload.process_weights_after_loading`, `postload.post_load_findings`.
- `run.run_refit(config, weights, before=, after=, ...) -> RefitResult`: both paths, compared.
- `checks.*`: assertion functions; `scenarios.SCENARIOS`: small runs ending in checks (self-test).
"""

from refit_verify.refit.exporter import TrainerExporter, export_weights
from refit_verify.refit.findings import HAZARDS, Finding
from refit_verify.refit.loader import EngineLinear, EngineStore
from refit_verify.refit.postload import post_load_findings, process_weights_after_loading
from refit_verify.refit.run import PathResult, RefitResult, TensorComparison, run_refit
from refit_verify.refit.selection import (
    Fp8Selection, explicit_selection, heuristic_selection, loader_selection, resolve_selection,
)
from refit_verify.refit.transport import InProcessTransport, plan_buckets

__all__ = [
    "HAZARDS", "EngineLinear", "EngineStore", "Finding", "Fp8Selection", "InProcessTransport", "PathResult",
    "RefitResult", "TensorComparison", "TrainerExporter", "explicit_selection", "export_weights",
    "heuristic_selection", "loader_selection", "plan_buckets", "post_load_findings",
    "process_weights_after_loading", "resolve_selection", "run_refit",
]
