"""Model configs, synthetic weights, the Llama-family forward with W8A8 block-FP8 linears, and
the logits differential (heavy pieces stay in their modules: llama, linear, native, logits, checkpoint)."""

from refit_verify.model.config import LinearSpec, ModelConfig, ShardSpec, list_configs, load_config
from refit_verify.model.weights import build_engine_params, iter_synth_weights, synthesize_weights, synth_tensor

__all__ = ["build_engine_params", "LinearSpec", "ModelConfig", "ShardSpec", "iter_synth_weights", "list_configs", "load_config",
           "synth_tensor", "synthesize_weights"]
