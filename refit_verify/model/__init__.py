"""Model configs, synthetic weights and (later) the Llama-family forward."""

from refit_verify.model.config import LinearSpec, ModelConfig, ShardSpec, list_configs, load_config
from refit_verify.model.weights import iter_synth_weights, synthesize_weights, synth_tensor

__all__ = ["LinearSpec", "ModelConfig", "ShardSpec", "iter_synth_weights", "list_configs", "load_config",
           "synth_tensor", "synthesize_weights"]
