#!/usr/bin/env bash
# The one script the GPU machine runs: nightly suite, GPU mutants, bench. Results under $OUT.
# Usage (repo root): OUT=/some/dir bash tools/gpu_nightly.sh [quick]
set -u
OUT=${OUT:-reports/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=nightly
# NVLink multicast stays off (shared hosts): see the device notes
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export REFIT_NIGHTLY_FINDINGS=$OUT/nightly_findings.json
PY=${PY:-python3}
{
  nvidia-smi -L
  $PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "gpus", torch.cuda.device_count())'
} 2>&1 | tee "$OUT/env.txt"

t0=$(date +%s)
timeout ${NIGHTLY_TIMEOUT:-300} $PY -m pytest suites/nightly -p refit_verify.pytest_plugin -q -rs --durations=15 \
  -p no:cacheprovider --junitxml="$OUT/nightly_junit.xml" 2>&1 | tee "$OUT/nightly.log" | tail -60
echo "nightly rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/nightly.log"

t0=$(date +%s)
timeout ${MUTANT_TIMEOUT:-90} $PY - <<'PYEOF' 2>&1 | tail -5
import json, os
from refit_verify.selftest.mutants_gpu import run_mutants
r = run_mutants("gpu", ["-p", "refit_verify.pytest_plugin", "-W", "ignore"])
json.dump(r, open(os.environ["OUT"] + "/mutants_gpu.json", "w"), indent=1)
print("GPU mutants killed:", r)
PYEOF
echo "mutants in $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
timeout ${BENCH_TIMEOUT:-330} $PY -m refit_verify.bench --out "$OUT" ${BENCH_ARGS:---graph-all} 2>&1 | tee "$OUT/bench.log"
echo "bench rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
