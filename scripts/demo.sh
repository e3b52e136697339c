#!/usr/bin/env bash
# Set everything up and run the main job on a real sample scene with the default (unified) model.
# Usage: bash scripts/demo.sh [IMAGE.tif [INSTRUCTION]]
#   default: a NEON aerial GeoTIFF of a pine forest fetched from PyPI (see scripts/fetch_sample.sh),
#   prompted with two boxes around tree crowns (from the deepforest annotations of that scene).
#   The default model's text path knows Dubai's classes at ~0.5 m; on a 10 cm forest it finds
#   nothing for "vegetation" (docs/model_card.md), so the demo shows the prompts that transfer.
#   With IMAGE and INSTRUCTION the instruction is used instead (e.g. "the water").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
if [ $# -ge 1 ]; then
  img=$1
  prompt=(--text "${2:-the water}")
else
  img=$(bash scripts/fetch_sample.sh)
  prompt=(--box 166,253,225,304 --box 65,143,117,190)
fi
.venv/bin/geoseg segment "$img" "${prompt[@]}" -o out/demo_mask.tif --score-raster out/demo_score.tif \
  --vector out/demo.gpkg
echo "wrote out/demo_mask.tif, out/demo_score.tif and out/demo.gpkg (open them in QGIS)"
