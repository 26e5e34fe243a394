#!/usr/bin/env bash
# Set up objbench in ./.venv (idempotent). A torch that is already importable, e.g. your CUDA
# build, is kept: the venv sees system packages, and torch is installed only when missing.
# On a machine without one, `torch==2.13.0` is installed (the CPU build on this project's CI).
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup.sh: a GPU is present but no torch: install the CUDA torch build you want, then rerun" >&2
    exit 1
  fi
  .venv/bin/python -m pip install --quiet torch==2.13.0
fi
# export: minicons and lm-eval for exported models; tensorboard: the tracker. Neither pins torch.
.venv/bin/python -m pip install --quiet -e ".[test,bench,export,tensorboard]"
.venv/bin/python -c "import torch, objbench; print(f'objbench {objbench.__version__} ready; torch {torch.__version__}, CUDA: {torch.cuda.is_available()}')"
