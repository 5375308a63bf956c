#!/usr/bin/env bash
# Install everything the tests need (CPU torch first), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "export,mlflow,bench,test"
. .venv/bin/activate
# Exasol 7.1 runs UDFs on Python 3.8: where a CPython 3.8 is installed (pyenv), the generated UDF
# code also runs under it (tests/test_udf_py38.py; it skips, saying why, where there is none)
py38="${EMS_PYTHON38_BASE:-$HOME/.pyenv/versions/3.8.18/bin/python3.8}"
if [ -x "$py38" ] && [ ! -x .cache/py38/bin/python ]; then
  "$py38" -m venv .cache/py38 && .cache/py38/bin/python -m pip install --quiet requests
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== ruff"
ruff check .
ruff format --check .
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
