#!/usr/bin/env bash
# The prepared GPU check: one NVIDIA GPU, no internet, under 8 minutes.
#   1. correctness: bf16 autocast tracks fp32 (20 steps) and the leakage contract on the GPU;
#   2. throughput at BERT-base size (eager), then with torch.compile if time is left.
# Usage: bash bench/gpu_check.sh [extra gpu_check.py flags, e.g. --batch 64]
# Results: $OUT/gpu_check*.json when $OUT is set, else bench/gpu_check*.json.
# Exit status: 0 correctness passed; 1 correctness failed; 3 no GPU; other: a crash or timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUTDIR="${OUT:-bench}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing); nothing checked." >&2
  echo "gpu_check: for a CPU dry run of the same code use: $PY bench/gpu_check.py --device cpu --tiny" >&2
  exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 3
if ! "$PY" -c "import objbench.harness.trainer" 2>/dev/null; then
  echo "gpu_check: objbench is not importable by $PY; installing this checkout (editable, no deps)"
  "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . || exit 3
fi

start=$SECONDS
# correctness and eager throughput: about 2 minutes on an H100
timeout 300 "$PY" bench/gpu_check.py --device cuda --out "$OUTDIR/gpu_check.json" "$@"
status=$?
if [ $status -eq 124 ]; then echo "gpu_check: timed out after 300 s" >&2; fi

# torch.compile: only with the time left of the 8 minutes (compiling BERT-base takes minutes)
left=$((470 - (SECONDS - start)))
if [ $status -le 1 ] && [ $left -gt 120 ]; then
  timeout "$left" "$PY" bench/gpu_check.py --device cuda --only throughput --compile \
    --out "$OUTDIR/gpu_check_compiled.json" "$@" \
    || echo "gpu_check: the torch.compile pass did not finish in ${left} s (eager numbers above stand)" >&2
fi
echo "gpu_check: done in $((SECONDS - start)) s"
exit $status
