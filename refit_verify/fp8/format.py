"""float8_e4m3fn and UE8M0 facts, and the helpers that manipulate their bit patterns."""

from __future__ import annotations

import torch

E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6
E4M3_MIN_SUBNORMAL = 2.0**-9
E4M3_NAN_CODES = (0x7F, 0xFF)
FP32_FILL = torch.finfo(torch.float32).min  # vLLM pre-fills weight_scale_inv with this


def ue8m0_ceil_float(s: torch.Tensor) -> torch.Tensor:
    """2**ceil(log2(|s|)) in float arithmetic (vLLM's weight and activation UE8M0).

    log2 rounds, so a value just above a power of two can map to that power (rounding down):
    this differs from the bit-based rule exactly there.
    """
    return torch.pow(2.0, torch.ceil(torch.log2(s.abs())))


def ue8m0_ceil_float_exp2(s: torch.Tensor) -> torch.Tensor:
    """exp2(ceil(log2(s))): vLLM's native activation UE8M0 (QuantFP8._quantize_group_native).

    Same values as ue8m0_ceil_float on finite input, but a NaN scale keeps another sign bit than
    torch.pow(2.0, NaN) gives, and that sign reaches the NaN codes (0x7f vs 0xff): found by the
    real-vLLM conformance suite.
    """
    return torch.exp2(torch.ceil(torch.log2(s)))


def ue8m0_ceil_bits(s: torch.Tensor) -> torch.Tensor:
    """DeepGEMM's bit rule: keep the exponent, add one if any mantissa bit is set, clamp [1, 254]."""
    bits = s.abs().float().view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) + (bits & 0x7FFFFF).bool().int()
    return (exponent.clamp(1, 254) << 23).view(torch.float32)


def ue8m0_nemo_scale(descale: torch.Tensor) -> torch.Tensor:
    """NeMo-RL's pow2 path: returns the *multiplier* s (not scale_inv).

    The biased exponent goes through a uint8 container and 0 means s = 1, not 2**127.
    """
    exponent = torch.ceil(torch.log2(descale))
    exponent = torch.clamp(exponent, min=-127, max=127) + 127
    exponent = exponent.to(torch.uint8)
    return torch.where(exponent == 0, 1.0, torch.exp2(127 - exponent.to(torch.float32)))


def pow2_floor_frexp(s: torch.Tensor) -> torch.Tensor:
    """TransformerEngine reference: the multiplier's exponent via frexp, minus one (rounds s down)."""
    _, exponent = torch.frexp(s)
    return torch.ldexp(torch.ones_like(s), (exponent - 1).to(s.dtype))


def mx_e8m0_scale(descale: torch.Tensor) -> torch.Tensor:
    """MXFP8 shared scale (vLLM torch path): 2**clamp(ceil(log2(amax/448)), -127, 127); NaN stays NaN."""
    return torch.exp2(torch.clamp(torch.ceil(torch.log2(descale)), -127.0, 127.0))


E4M3_MAX_RCP_F32 = float(torch.tensor(1.0 / E4M3_MAX, dtype=torch.float32))  # rounds up: > 1/448


def te_e8m0_byte(v: torch.Tensor) -> torch.Tensor:
    """TransformerEngine's float_to_e8m0 (tests/cpp/test_common.h) on float32 bits, as int32 bytes.

    The exponent field, plus one when any mantissa bit is set (an exact ceil), except: exponent 0xFE
    stays (satfinite), a subnormal <= 2**-127 stays at byte 0 (byte 0 *is* 2**-127); 0 -> 0,
    +inf -> 0xFE, NaN -> 0xFF. v >= 0 (an amax times a positive constant).
    """
    bits = v.float().contiguous().view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    up = (mantissa > 0) & (exponent != 0xFE) & ~((exponent == 0) & (mantissa <= 0x400000))
    byte = exponent + up.int()
    byte = torch.where(torch.isinf(v), torch.full_like(byte, 0xFE), byte)
    return torch.where(torch.isnan(v), torch.full_like(byte, 0xFF), byte)


def te_e8m0_scale(v: torch.Tensor) -> torch.Tensor:
    """The power of two TE's byte stands for, float32 (byte 0 -> 2**-127, 0xFF -> NaN)."""
    return e8m0_to_scale(te_e8m0_byte(v)).reshape(v.shape)


# how implementations hand back MXFP8 scales: the E8M0 byte as uint8, or torch's float8_e8m0fnu
E8M0_DTYPES = tuple(d for d in (torch.uint8, getattr(torch, "float8_e8m0fnu", None)) if d is not None)


def e8m0_bytes(scale: torch.Tensor) -> torch.Tensor:
    """float32 powers of two -> E8M0 bytes (biased exponent, 127 = 1.0); NaN -> 0xFF (OCP MX NaN)."""
    s = scale.float()
    e = torch.log2(s) + 127.0
    return torch.where(torch.isnan(e), torch.full_like(e, 255.0), e.clamp(0, 254)).to(torch.uint8)


def e8m0_to_scale(b: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes -> float32 scale (0xFF -> NaN): what `exp2(byte - 127)` gives on the engine side."""
    f = torch.exp2(b.to(torch.float32) - 127.0)
    return torch.where(b == 255, torch.full_like(f, float("nan")), f)


def codes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of an fp8 tensor (uint8 view); the only safe way to compare fp8 values."""
    if t.dtype == torch.uint8:
        return t
    if t.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise TypeError(f"expected an fp8 or uint8 tensor, got {t.dtype}")
    return t.view(torch.uint8)


def is_nan_code(c: torch.Tensor) -> torch.Tensor:
    return (c & 0x7F) == 0x7F


def ordered_code(c: torch.Tensor) -> torch.Tensor:
    """Map e4m3fn codes to integers whose difference counts representable steps (ulps).

    Sign-magnitude to two's complement: +0 and -0 both map to 0.
    """
    c = c.to(torch.int32)
    magnitude = c & 0x7F
    return torch.where(c & 0x80 != 0, -magnitude, magnitude)


def ordered_f32(x: torch.Tensor) -> torch.Tensor:
    """Same for float32: integers whose difference is the distance in float32 ulps."""
    bits = x.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def probe_cast_semantics(device: str = "cpu") -> dict:
    """How the running torch casts out-of-range values to float8_e4m3fn (changed across releases)."""
    probes = [448.0, 449.0, 463.0, 464.0, 500.0, 1e9, float("inf"), float("-inf"), float("nan"), 2.0**-10]
    x = torch.tensor(probes, dtype=torch.float32, device=device)
    got = x.to(torch.float8_e4m3fn).view(torch.uint8).cpu().tolist()
    out = {"torch": torch.__version__, "device": str(device), "codes": {repr(p): f"0x{c:02x}" for p, c in zip(probes, got)}}
    out["overflow"] = "saturate" if got[probes.index(500.0)] == 0x7E else "nan"
    out["inf"] = "saturate" if got[probes.index(float("inf"))] == 0x7E else "nan"
    return out
