#!/usr/bin/env bash
# Install everything the tests need (CPU torch first), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "export,mlflow,bench,test"
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== ruff"
ruff check .
ruff format --check .
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
