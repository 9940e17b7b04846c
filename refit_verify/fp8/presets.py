"""Named recipes reproducing real implementations (FACTS.md §3)."""

from __future__ import annotations

from refit_verify.fp8.recipe import Recipe

VLLM_PER_BLOCK = Recipe(
    name="vllm_per_block",
    padding="zero",
    amax_floor=1e-4,
    scale_form="descale",
    quantize_op="mul_reciprocal",
    source="vllm-project/vllm vllm/utils/deep_gemm.py per_block_cast_to_fp8 (use_ue8m0=False) @v0.33.0",
)
VLLM_PER_BLOCK_UE8M0 = VLLM_PER_BLOCK.replace(
    name="vllm_per_block_ue8m0", pow2="float_ceil",
    source="vllm-project/vllm vllm/utils/deep_gemm.py per_block_cast_to_fp8(use_ue8m0=True), float "
    "2**ceil(log2(sf)) @v0.33.0",
)

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
    source="NVIDIA-NeMo/RL nemo_rl/models/generation/fp8.py cast_tensor_to_fp8_blockwise "
    "@381cc6b095f2bec5e4e85a844de41221d16a8cbe (and vllm/quantization/fp8.py @c12caf81cbc4; loader side "
    "and trainer-side refit copy)",
)
NEMO_RL_POW2 = NEMO_RL.replace(name="nemo_rl_pow2", pow2="nemo_e8m0",
                               source=NEMO_RL.source + ", use_weight_pow2_scale=True")
NEMO_RL_NAN_TO_NUM = NEMO_RL.replace(
    name="nemo_rl_nan_to_num", nan_policy="zero", source=NEMO_RL.source + ", later revision with nan_to_num"
)

# DeepGEMM without UE8M0 is the vLLM formula exactly (vLLM copied it), so only the bit-based
# UE8M0 variant is a preset of its own: that rounding is what sets DeepGEMM apart.
DEEPGEMM = VLLM_PER_BLOCK.replace(
    name="deepgemm", pow2="bits_ceil",
    source="deepseek-ai/DeepGEMM deep_gemm/utils/math.py per_block_cast_to_fp8(use_ue8m0=True), ceil_to_ue8m0 "
    "@38939a4c494ce6e904b54da94a1183955a5e9497"
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
    source="pytorch/ao blockwise fp8 weight quantization (path and revision never pinned: 448/amax in float64 "
    "as torchao's prototype kernels compute it; torchao/prototype/blockwise_fp8_training/kernels.py "
    "torch_blockwise_scale_weight_quant also clamps, needs divisible shapes and returns s, not 1/s)",
)

# --- RL frameworks' trainer-side quantizers (docs/RECIPES.md: sources and where each differs) ---
NEMO_RL_POW2_NAN_TO_NUM = NEMO_RL_POW2.replace(
    name="nemo_rl_pow2_nan_to_num", nan_policy="zero",
    source=NEMO_RL.source + ", refit-PR revision with nan_to_num, use_weight_pow2_scale=True",
)
VERL_TORCH = Recipe(
    name="verl_torch",
    upcast_input=True,
    padding="zero",
    scale_form="scale_div",
    zero_amax_scale_one=True,
    inf_scale="one",
    quantize_op="mul_scale",
    clamp=True,
    source="verl-project/verl verl/utils/kernel/fp8_kernel.py _scaled_fp8_blockwise_pytorch "
    "@ad4ab5aa8b106a908f3db8d32a9174768a3a6602 (VERL_DISABLE_TRITON_FP8=1 or no triton)",
)
# verl before its fp8_kernel module (release v0.7.0): NeMo-RL's formula without padding (asserts
# divisibility) and with a contiguous result.
VERL_VLLM_FP8_UTILS = NEMO_RL.replace(
    name="verl_vllm_fp8_utils", padding="none", crop_as_view=False,
    source="verl-project/verl verl/utils/vllm/vllm_fp8_utils.py scaled_fp8_blockwise (release/v0.7.0)",
)
SLIME_UPDATE = Recipe(
    name="slime_update",
    padding="zero",
    amax_floor=1e-10,
    scale_form="descale",
    quantize_op="mul_reciprocal",
    clamp=True,
    source="THUDM/slime blockwise_cast_to_fp8_triton (weight update; eps=1e-10, x_s = amax/448, "
    "clamp(x * (1/x_s))) as carried by verl/utils/kernel/fp8_kernel.py @ad4ab5aa and "
    "inclusionAI/AReaL areal/utils/fp8_kernels.py @7702392ff03f6f51082d164109dde1ad248d1d57",
)
SLIME_CONVERT = Recipe(
    name="slime_convert",
    padding="zero",
    amax_floor=None,
    scale_form="descale",
    quantize_op="div",
    clamp=True,
    source="THUDM/slime tools/convert_hf_to_fp8.py block_fp8 @193a2e1369babbafacb0fdabfdafd8a95f3cc70c",
)
AREAL = SLIME_UPDATE.replace(
    name="areal", scale_dtype="bfloat16",
    source="inclusionAI/AReaL areal/utils/fp8_utils.py _quantize_param (scale.to(scale_dtype), default "
    "bfloat16) over areal/utils/fp8_kernels.py @7702392ff03f6f51082d164109dde1ad248d1d57",
)
TORCHAO_FLOAT8TENSOR = Recipe(
    name="torchao_float8tensor",
    padding="none",
    amax_floor=None,
    scale_form="descale",
    scale_compute_dtype="input",
    quantize_op="div",
    clamp=True,
    source="pytorch/ao torchao/quantization/quantize_/workflows/float8/float8_tensor.py Float8Tensor.from_hp "
    "torch path @0073d60f84ac6395fc6a9fb27d5c64b6372eebbf + quant_primitives choose/quantize_affine_float8",
)
COMPRESSED_TENSORS = Recipe(
    name="compressed_tensors",
    padding="none",
    amax_floor=None,
    scale_form="descale",
    scale_compute_dtype="input",
    scale_min=2.0**-23,  # torch.finfo(float32).eps
    quantize_op="div",
    quantize_dtype="input",
    add_zero_point=True,
    clamp=True,
    source="neuralmagic/compressed-tensors quantization/utils/helpers.py calculate_qparams "
    "@024cea3eda5f7e92c8428dc6b5405fc0107f07f0 + lifecycle/forward.py _quantize (block strategy, "
    "symmetric FP8 as llm-compressor writes it and vLLM loads weight_scale into float32)",
)

# MXFP8 weights: 1x32 groups along K, E8M0 scales (the uint8 byte is the biased exponent; the
# reference returns the float32 power of two, fmt.e8m0_bytes gives the bytes).
MXFP8_VLLM = Recipe(
    name="mxfp8_vllm",
    block=(1, 32),
    padding="none",
    amax_floor=2.0**-126,  # torch.finfo(float32).tiny
    scale_form="descale",
    pow2="mx_e8m0",
    quantize_op="div",
    clamp=False,
    source="vllm-project/vllm vllm/model_executor/layers/quantization/utils/mxfp8_utils.py "
    "_mxfp8_e4m3_quantize_torch @v0.33.0 "
    "(the path off Blackwell/flashinfer): K % 32 == 0, amax.clamp(min=tiny), ceil(log2(amax/448)) + 127 "
    "clamped to [0, 254] as uint8, x / exp2(byte - 127), no clamp",
)
# TransformerEngine's MXFP8 reference (the C++ test oracle every TE MXFP8 kernel is held to): the amax
# skips NaN (std::max), times float32(1/448), TE's own float_to_e8m0 bit rule, x * 2**(127 - byte),
# saturating cast (static_cast to __nv_fp8_e4m3 is satfinite). A partial last group (K % 32) is
# quantized over the elements present, which is zero padding.
MXFP8_TE = Recipe(
    name="mxfp8_te",
    block=(1, 32),
    padding="zero",
    amax_floor=None,
    scale_form="descale_rcp",
    pow2="te_e8m0",
    quantize_op="mul_reciprocal",
    clamp=True,
    nan_policy="ignore_in_amax",
    source="NVIDIA/TransformerEngine tests/cpp/operator/test_cast_mxfp8.cu compute_ref (rowwise, CAST_ONLY) "
    "@02e278fd821a2daf52d1641777d0c2724eaef659 + tests/cpp/test_common.h float_to_e8m0, exp2f_rcp "
    "@024ef1585311d543b7e7c683bd08264fb10bc92c",
)
# NeMo-RL's MXFP8 refit quantizes with vLLM's mxfp8_e4m3_quantize (its torch path off Blackwell) and then
# rewrites every E8M0 scale byte 0 to 1, the codes untouched.
MXFP8_NEMO_RL = MXFP8_VLLM.replace(
    name="mxfp8_nemo_rl",
    e8m0_byte0_to_1=True,
    source="NVIDIA-NeMo/RL nemo_rl/models/generation/vllm/quantization/fp8.py quantize_mxfp8_weight "
    "(is_mx refit, refit_prequantize off; main after PR #1887 'MXFP8 rollout support', 2026; the index "
    "holds no commit id for that version) over vLLM mxfp8_utils.mxfp8_e4m3_quantize",
)

# Implementations that are exactly an existing preset: the name resolves to that recipe (the facts are
# pinned in suites/pr/test_recipes_sources.py).
ALIASES: dict[str, tuple[str, str]] = {
    "sglang_ue8m0": ("vllm_per_block_ue8m0", "sgl-project/sglang python/sglang/srt/layers/quantization/"
                     "fp8_utils.py quant_weight_ue8m0 -> per_block_cast_to_fp8(use_ue8m0=True), float "
                     "ceil_to_ue8m0 ('COPIED FROM DeepGEMM')"),
    "sglang_per_block": ("vllm_per_block", "sgl-project/sglang fp8_utils.py per_block_cast_to_fp8 "
                         "(use_ue8m0=False)"),
    "verl_triton": ("slime_update", "verl-project/verl verl/utils/kernel/fp8_kernel.py "
                    "_blockwise_cast_to_fp8_kernel @ad4ab5aa (eps=1e-10)"),
}

VLLM_ACT_GROUP = Recipe(
    name="vllm_act_group",
    block=(1, 128),
    padding="none",
    amax_floor=1e-10,
    scale_form="descale",
    quantize_op="div",
    clamp=True,
    source="vllm-project/vllm vllm/model_executor/layers/quantization/utils/fp8_utils.py "
    "per_token_group_quant_fp8 (Triton/CUDA kernels, eps 1e-10) @v0.33.0",
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
    source="vllm-project/vllm vllm/model_executor/layers/quantization/input_quant_fp8.py "
    "QuantFP8._quantize_group_native @v0.33.0",
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
        NEMO_RL_POW2_NAN_TO_NUM,
        VERL_TORCH,
        VERL_VLLM_FP8_UTILS,
        SLIME_UPDATE,
        SLIME_CONVERT,
        AREAL,
        TORCHAO_FLOAT8TENSOR,
        COMPRESSED_TENSORS,
        MXFP8_VLLM,
        MXFP8_TE,
        MXFP8_NEMO_RL,
        VLLM_ACT_GROUP,
        VLLM_ACT_GROUP_UE8M0,
        VLLM_ACT_GROUP_NATIVE,
        VLLM_ACT_GROUP_NATIVE_UE8M0,
    )
}
WEIGHT_PRESETS = [n for n, r in PRESETS.items() if r.block == (128, 128)]
ACTIVATION_PRESETS = [n for n, r in PRESETS.items() if r.block == (1, 128)]
MX_PRESETS = [n for n, r in PRESETS.items() if r.block == (1, 32)]


def get_recipe(name_or_recipe) -> Recipe:
    """A Recipe, a preset name (or alias), a recipe TOML file, or `PRESET:field=value,...`."""
    if isinstance(name_or_recipe, Recipe):
        return name_or_recipe
    if isinstance(name_or_recipe, str) and (":" in name_or_recipe or name_or_recipe.endswith(".toml")
                                            or "/" in name_or_recipe):
        from refit_verify.fp8.recipe_io import resolve_recipe_spec

        return resolve_recipe_spec(name_or_recipe, _named)
    return _named(name_or_recipe)


def _named(name) -> Recipe:
    if name in ALIASES:
        return PRESETS[ALIASES[name][0]]
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        from refit_verify.errors import BadInputError

        raise BadInputError(
            f"unknown recipe {name!r}; presets: {', '.join(sorted(PRESETS))}; also: {', '.join(sorted(ALIASES))}, "
            f"a recipe .toml file, or PRESET:field=value,..."
        ) from None
