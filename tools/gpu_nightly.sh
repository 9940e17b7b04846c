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
# each GPU-lane mutant against its nightly killers, one process per mutant (findings kept apart)
REFIT_NIGHTLY_FINDINGS=$OUT/nightly_findings.json.mutants PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
  timeout ${MUTANT_TIMEOUT:-300} $PY -m refit_verify.selftest.run --lane gpu --jobs 1 --out "$OUT/selftest_gpu" 2>&1 | tail -15
echo "mutants in $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
timeout ${BENCH_TIMEOUT:-330} $PY -m refit_verify.bench --out "$OUT" ${BENCH_ARGS:---graph-all} 2>&1 | tee "$OUT/bench.log"
echo "bench rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
