#!/usr/bin/env bash
# Fetch a real georeferenced sample scene from a package registry (not committed):
# NEON aerial RGB orthophoto OSBS_029.tif (10 cm, EPSG:32617, 400x400) shipped inside the
# deepforest wheel on PyPI. NEON data are released under CC0 (public domain); the deepforest
# package itself is MIT-licensed. Prints the path of the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p samples
out=samples/OSBS_029.tif
if [ ! -s "$out" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q deepforest==2.1.0 --no-deps -d "$tmp" >/dev/null 2>&1
  .venv/bin/python - "$tmp" "$out" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/deepforest-*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2] + ".part", "wb") as f:
    f.write(z.read("deepforest/data/OSBS_029.tif"))
PY
  mv "$out.part" "$out"
fi
echo "$out"
