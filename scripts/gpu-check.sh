#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU and the project installed with onnxruntime-gpu
# (bash scripts/setup-venv.sh "export,test"): the CUDA tests, then the GPU benchmark on the fp16
# MiniLM export. Results: out/gpu/ (gpu.md, gpu.json). Exports come from the tests' cache
# (EMS_EXPORT_CACHE, default .cache/exports), made on first use where the export toolchain is.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python -m pytest -v -p no:cacheprovider tests/test_cuda.py
model=$(python -c "from tests.conftest import exported_model_dir as e; print(e('feature-extraction', 'fp16', 'O4'))")
python -m exasol_mlflow_server.benchmarks.gpu --model "$model" --out out/gpu "$@"
