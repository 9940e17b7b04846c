"""Named recipes reproducing real implementations (FACTS.md §3)."""

from __future__ import annotations

from refit_verify.fp8.recipe import Recipe

VLLM_PER_BLOCK = Recipe(
    name="vllm_per_block",
    padding="zero",
    amax_floor=1e-4,
    scale_form="descale",
    quantize_op="mul_reciprocal",
    source="vllm/utils/deep_gemm.py per_block_cast_to_fp8 (vLLM 0.33)",
)
VLLM_PER_BLOCK_UE8M0 = VLLM_PER_BLOCK.replace(name="vllm_per_block_ue8m0", pow2="float_ceil")

NEMO_RL = Recipe(
    name="nemo_rl",
    upcast_input=True,
    padding="edge",
    scale_form="scale",
    zero_amax_scale_one=True,
    inf_scale="one",
    quantize_op="mul_scale",
    clamp=True,
    crop_as_view=True,
    source="nemo_rl cast_tensor_to_fp8_blockwise (loader side and trainer-side refit copy)",
)
NEMO_RL_POW2 = NEMO_RL.replace(name="nemo_rl_pow2", pow2="nemo_e8m0")
NEMO_RL_NAN_TO_NUM = NEMO_RL.replace(
    name="nemo_rl_nan_to_num", nan_policy="zero", source=NEMO_RL.source + ", later revision with nan_to_num"
)

# DeepGEMM without UE8M0 is the vLLM formula exactly (vLLM copied it), so only the bit-based
# UE8M0 variant is a preset of its own: that rounding is what sets DeepGEMM apart.
DEEPGEMM = VLLM_PER_BLOCK.replace(
    name="deepgemm", pow2="bits_ceil", source="DeepGEMM per_block_cast_to_fp8(use_ue8m0=True)"
)

TRANSFORMER_ENGINE = Recipe(
    name="transformer_engine",
    padding="zero",
    amax_floor=0.0,
    scale_form="scale_div",
    zero_amax_scale_one=True,
    inf_scale="fmax_input",
    quantize_op="mul_scale",
    clamp=True,
    source="NVIDIA/TransformerEngine tests/pytorch/references/blockwise_quantizer_reference.py + "
    "quantize_scale_calc.py scale_from_amax_tensor @ 1400f7a0 / 3580212c (eps=0 as in its tests)",
)
TRANSFORMER_ENGINE_POW2 = TRANSFORMER_ENGINE.replace(name="transformer_engine_pow2", pow2="te_frexp")

TORCHAO = Recipe(
    name="torchao",
    padding="zero",
    amax_floor=1e-12,
    scale_form="scale_f64",
    quantize_op="mul_scale",
    source="torchao blockwise fp8 weight quantization",
)

VLLM_ACT_GROUP = Recipe(
    name="vllm_act_group",
    block=(1, 128),
    padding="none",
    amax_floor=1e-10,
    scale_form="descale",
    quantize_op="div",
    clamp=True,
    source="vLLM per-token-group activation quant (Triton/CUDA kernels)",
)
VLLM_ACT_GROUP_UE8M0 = VLLM_ACT_GROUP.replace(name="vllm_act_group_ue8m0", pow2="float_ceil")
# The native path zero-pads K up to a whole group and crops the codes back (F.pad then slice), where
# the Triton/CUDA kernels need K to divide: found by the real-vLLM conformance suite.
VLLM_ACT_GROUP_NATIVE = Recipe(
    name="vllm_act_group_native",
    block=(1, 128),
    padding="zero",
    amax_floor=None,
    scale_form="descale",
    scale_min=1.0 / (448.0 * 512.0),
    quantize_op="div",
    clamp=True,
    source="vLLM QuantFP8 native torch path, per-token groups",
)
VLLM_ACT_GROUP_NATIVE_UE8M0 = VLLM_ACT_GROUP_NATIVE.replace(
    name="vllm_act_group_native_ue8m0", pow2="float_ceil_exp2"
)

PRESETS: dict[str, Recipe] = {
    r.name: r
    for r in (
        VLLM_PER_BLOCK,
        VLLM_PER_BLOCK_UE8M0,
        NEMO_RL,
        NEMO_RL_POW2,
        NEMO_RL_NAN_TO_NUM,
        DEEPGEMM,
        TRANSFORMER_ENGINE,
        TRANSFORMER_ENGINE_POW2,
        TORCHAO,
        VLLM_ACT_GROUP,
        VLLM_ACT_GROUP_UE8M0,
        VLLM_ACT_GROUP_NATIVE,
        VLLM_ACT_GROUP_NATIVE_UE8M0,
    )
}
WEIGHT_PRESETS = [n for n, r in PRESETS.items() if r.block == (128, 128)]
ACTIVATION_PRESETS = [n for n, r in PRESETS.items() if r.block == (1, 128)]


def get_recipe(name_or_recipe) -> Recipe:
    if isinstance(name_or_recipe, Recipe):
        return name_or_recipe
    try:
        return PRESETS[name_or_recipe]
    except KeyError:
        from refit_verify.errors import BadInputError

        raise BadInputError(
            f"unknown recipe {name_or_recipe!r}; presets: {', '.join(sorted(PRESETS))}"
        ) from None
