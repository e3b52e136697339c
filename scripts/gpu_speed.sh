#!/usr/bin/env bash
# The unified model's GPU figures (tiles/s at batch 64 in bf16, FLOP/s, % of peak) on a lent GPU machine.
#
#   bash scripts/gpu_speed.sh prepare   # here, with network access to PyPI: fetch what the GPU image lacks
#   bash scripts/gpu_speed.sh run       # there (the device tool's `run`, carry: [".whl"]), as one command
#
# The GPU image has torch, numpy, pyarrow, OpenCV, Pillow, PyYAML and tqdm but not pycocotools, which
# geoseg's mask codec imports; the benchmark's GPU part needs nothing else (rasterio is imported only
# where rasters are read). `prepare` downloads that one wheel (~0.4 MB) for the image's Python 3.12
# into the git-ignored .whl/; `run` installs it into /tmp/site and runs the timing on the packaged
# checkpoint, writing the printout to $OUT/gpu_speed.txt when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    mkdir -p .git/info && { grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "pycocotools>=2.0.7"
    ls .whl ;;
  run)
    if ls .whl/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv || true
    python3 benchmarks/model_speed.py --gpu-only 2>&1 | tee "${OUT:-/tmp}/gpu_speed.txt" ;;
  *)
    echo "usage: bash scripts/gpu_speed.sh prepare|run" >&2; exit 2 ;;
esac
