#!/usr/bin/env bash
# Set everything up and run the main job on a real sample scene with the default model.
# Usage: bash scripts/demo.sh [IMAGE.tif]   (default: a NEON aerial scene fetched from PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
img=${1:-$(bash scripts/fetch_sample.sh)}
mkdir -p out
.venv/bin/geoseg segment "$img" --box 150,150,250,250 -o out/demo_mask.tif --vector out/demo.gpkg --backend classical
echo "wrote out/demo_mask.tif and out/demo.gpkg"
