#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras.
# The CPU build of torch is installed first, so that no multi-GB CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-export,mlflow}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[${extras}]"
# onnxruntime and onnxruntime-gpu must never be installed together
if python -m pip show onnxruntime >/dev/null 2>&1 && python -m pip show onnxruntime-gpu >/dev/null 2>&1; then
  echo "error: both onnxruntime and onnxruntime-gpu are installed; uninstall one" >&2
  exit 1
fi
