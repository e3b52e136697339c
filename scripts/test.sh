#!/usr/bin/env bash
# Run the whole test suite (and lint) on a fresh or existing checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
