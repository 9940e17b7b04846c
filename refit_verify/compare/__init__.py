"""Comparison primitives: bitwise first, magnitudes after; one result type (TensorComparison) per tensor."""

from refit_verify.compare.bitwise import (
    Mismatch, TensorComparison, assert_fp8_equal, assert_quantized_equal, compare_bits, compare_fp8,
)
from refit_verify.compare.metrics import (
    calc_diff, cosine, error_metrics, max_abs, nan_accounting, rel_l2, scale_stats, sqnr_db,
)

__all__ = [
    "Mismatch", "TensorComparison", "assert_fp8_equal", "assert_quantized_equal", "calc_diff", "compare_bits",
    "compare_fp8", "cosine", "error_metrics", "max_abs", "nan_accounting", "rel_l2",
    "scale_stats", "sqnr_db",
]
