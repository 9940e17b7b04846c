"""Block-FP8 formats, recipes and the reference quantizer."""

from refit_verify.fp8.presets import ACTIVATION_PRESETS, PRESETS, WEIGHT_PRESETS, get_recipe
from refit_verify.fp8.quantize import QuantizedTensor, dequantize, quantize, quantize_activation
from refit_verify.fp8.recipe import Recipe, recipe_diff

__all__ = [
    "ACTIVATION_PRESETS", "PRESETS", "WEIGHT_PRESETS", "QuantizedTensor", "Recipe",
    "dequantize", "get_recipe", "quantize", "quantize_activation", "recipe_diff",
]
