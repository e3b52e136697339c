#!/usr/bin/env bash
# Create .venv (once) and install geoseg with every extra and the dev tools.
# torch is installed first as the CPU build that lies on this machine's disk
# (any other torch spec may pull a multi-GB CUDA build).
# Usage: bash scripts/setup.sh [--with-browser]
#   --with-browser  also install Debian's chromium (for the Playwright browser test) when missing.
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
  # SAM 2 without its declared torchvision dependency (never imported by geoseg; it would replace CPU torch)
  SAM2_BUILD_CUDA=0 python -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
  touch "$stamp"
fi
if [ "${1:-}" = "--with-browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test ..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
      || echo "warning: chromium could not be installed; the browser test will skip" >&2
  else
    echo "warning: chromium not found and not root; the browser test will skip" >&2
  fi
fi
