"""Bad input gets a typed error naming the tensor; empty tensors do what each implementation does."""

import pytest
import torch

from refit_verify.errors import BadInputError, RecipeFailure
from refit_verify.fp8 import Recipe, WEIGHT_PRESETS, quantize


@pytest.mark.parametrize("bad,match", [
    (torch.randn(10), "1-D"),
    (torch.randn(2, 3, 4), "3-D"),
    (torch.ones(4, 4, dtype=torch.int32), "int32"),
    (torch.ones(4, 4).to(torch.float8_e4m3fn), "already quantized"),
    (torch.empty(4, 4, device="meta"), "meta"),
    ([[1.0]], "torch.Tensor"),
])
def test_bad_input_is_a_typed_error_naming_the_tensor(bad, match):
    with pytest.raises(BadInputError, match=match) as exc:
        quantize(bad, "vllm_per_block", name="model.layers.3.mlp.up_proj.weight")
    assert "model.layers.3.mlp.up_proj.weight" in str(exc.value)


@pytest.mark.parametrize("block", [(0, 128), (128, -1), (1.5, 128)])
def test_non_positive_block_sizes_rejected(block):
    with pytest.raises(BadInputError, match="block"):
        Recipe(name="bad", block=block)


def test_unknown_recipe_lists_presets():
    with pytest.raises(BadInputError, match="vllm_per_block"):
        quantize(torch.randn(4, 4), "no_such_recipe")


def test_non_contiguous_input_is_fine():
    x = torch.randn(256, 300).bfloat16()
    assert torch.equal(quantize(x.t(), "vllm_per_block").codes, quantize(x.t().contiguous(), "vllm_per_block").codes)


# What each real implementation does on empty weights, reproduced (not invented):
# zero-padding recipes view the padded buffer with -1 and 0 elements -> RuntimeError in torch;
# NeMo-RL reads data_hp[-1, -1] to pad -> IndexError.
@pytest.mark.parametrize("recipe", WEIGHT_PRESETS)
@pytest.mark.parametrize("shape", [(0, 128), (128, 0), (0, 0)])
def test_empty_tensors_reproduce_the_implementation(recipe, shape):
    x = torch.zeros(shape, dtype=torch.bfloat16)
    try:
        q = quantize(x, recipe, name="empty")
    except RecipeFailure as exc:
        assert exc.recipe == recipe and "empty" in str(exc)
        assert isinstance(exc.cause, (RuntimeError, IndexError))
    else:
        assert q.data.shape == x.shape


def test_activation_groups_must_divide_k():
    # the Triton/CUDA kernels need whole groups; the native torch path pads (next test)
    with pytest.raises(RecipeFailure, match="multiple of the block"):
        quantize(torch.randn(4, 200), "vllm_act_group", name="act")


def test_native_activation_path_zero_pads_a_partial_group():
    x = torch.randn(4, 200)
    q = quantize(x, "vllm_act_group_native", name="act")
    assert q.data.shape == (4, 200) and q.scale_inv.shape == (4, 2)
    tail = quantize(x[:, 128:], "vllm_act_group_native", name="tail")  # zeros do not move the amax
    assert torch.equal(q.scale_inv[:, 1:], tail.scale_inv)
