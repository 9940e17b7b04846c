"""Print native-vs-emulated block-FP8 GEMM figures on this GPU, and which scale layouts torch accepts.

    PYTHONPATH=. python tools/gpu_native_gemm.py            # figures per shape, then the layout probe
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "suites" / "nightly"))

from refit_verify.fp8.format import probe_cast_semantics  # noqa: E402
from refit_verify.model.native import native_available, probe_layouts  # noqa: E402


def main() -> int:
    ok, why = native_available()
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "native": ok, "why": why,
                      "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
    if not ok:
        return 0
    print("cast semantics:", json.dumps(probe_cast_semantics("cuda")))
    import test_native_gemm as t  # the nightly test's figures, so both print the same numbers

    for m, n, k in t.SHAPES:
        try:
            print(json.dumps(t.figures(m, n, k)), flush=True)
        except Exception as exc:  # keep going: one rejected shape must not hide the others
            print(json.dumps({"shape": [m, n, k], "error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
    # last: every candidate layout, since a misread layout could fault the context
    a, w, s = t._operands(256, 384, 1280)
    exact = (t.lin.dequantize_act(a).double() @ t.lin.dequantize_weight(w, s).double().t())
    for row in probe_layouts(a.data, a.scale_inv, w, s):
        out = row.pop("out", None)
        if out is not None:
            row["rel_l2_vs_exact"] = ((out.double() - exact).norm() / exact.norm()).item()
        print("probe", json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
