#!/usr/bin/env bash
# Create .venv (once) and install geoseg with every extra and the dev tools.
# torch is installed first as the CPU build that lies on this machine's disk
# (any other torch spec may pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.geoseg-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[all,dev]"
  touch "$stamp"
fi
