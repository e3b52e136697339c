#!/usr/bin/env bash
# Train the unified model on a lent GPU machine (configs/unigeoseg_gpu.yaml by default).
#
#   bash scripts/gpu_train.sh prepare [CONFIG]   # here: pack the run into .gpu/ (git-ignored), fetch wheels
#     (needs the config's shards: geoseg data build --config configs/data/dubai_nt.yaml -o data/shards/dubai_nt
#      and configs/data/dubai.yaml -o data/shards/dubai; instructions missing from $TEXT_CACHE, default
#      runs/text_cache.pt, are encoded here with MiniLM: 22 s for all 5,245 of the Dubai run)
#   then two device calls, back to back (the machine keeps what the first left for ~30 s):
#     1. command "bash scripts/gpu_speed.sh run", carry [".whl", ".gpu/text"]   (GPU timings; leaves the text cache)
#     2. command "bash scripts/gpu_train.sh run", carry [".whl", ".gpu/data"]   (trains, tunes, exports to $OUT)
#   bash scripts/gpu_train.sh rehearse           # here: call 2 on the CPU for half a minute, outputs in /tmp/gpu_out
#
# Why two calls: a call uploads at most 64 MiB. The pack (geoseg train --pack) holds the run's rows, their
# tiles decoded losslessly (~40 MB for the Dubai build) and the instruction embeddings as int8 (~30 MB), so
# the embeddings go with the first call and the rest with the second. The GPU image has torch, pyarrow,
# OpenCV, Pillow, PyYAML, click and tqdm; it lacks pycocotools (carried as a wheel) and needs neither
# rasterio nor the text encoder, since the pack replaces both. Call 2 writes to $OUT: the exported float16
# bundle with tuned decision thresholds (gpu_model.pt), train.log, history.jsonl and config.yaml. Then, here:
#   mkdir -p runs/unigeoseg_gpu && cp FILES_AT/gpu_model.pt runs/unigeoseg_gpu/best.pt
#   geoseg train --config configs/unigeoseg_gpu.yaml --export-only --fit-selector \
#       --text-cache runs/text_cache.pt --export runs/gpu_full.pt      # keeps the tuned thresholds
# and compare runs/gpu_full.pt with the shipped model on validation (docs/model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    config="${2:-configs/unigeoseg_gpu.yaml}"
    rm -rf .gpu
    geoseg -q train --config "$config" --text-cache "${TEXT_CACHE:-runs/text_cache.pt}" --pack .gpu
    bash scripts/gpu_speed.sh prepare >/dev/null
    tree_mb=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    for part in text data; do
      part_mb=$(du -sb .gpu/$part | cut -f1)
      whl_mb=$(du -sb .whl | cut -f1)
      echo "call with .gpu/$part: $(( (tree_mb + part_mb + whl_mb) / 1048576 )) MiB of the 64 MiB upload"
    done
    echo 'device call 1: command "bash scripts/gpu_speed.sh run", carry [".whl", ".gpu/text"], timeout_s 240'
    echo 'device call 2 (at once): command "bash scripts/gpu_train.sh run", carry [".whl", ".gpu/data"], timeout_s 540' ;;
  run|rehearse)
    if [ ! -f .gpu/text/text_cache.pt ]; then
      echo "error: .gpu/text/text_cache.pt is missing: make the call that carries .gpu/text first (within 30 s)" >&2
      exit 2
    fi
    if [ "$1" = run ] && ls .whl/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    out="${OUT:-/tmp/gpu_out}"
    mkdir -p "$out"
    run_dir=/tmp/geoseg_gpu_run
    rm -rf "$run_dir"
    if [ "$1" = run ]; then
      device=cuda extra=()
      nvidia-smi --query-gpu=name,memory.total --format=csv || true
      # batch workers hand batches over through /dev/shm (~60 MB a batch, ~24 in flight): a container's
      # default 64 MB would crash them, so grow it when it is small
      shm_kb=$(df -k --output=size /dev/shm 2>/dev/null | tail -1 | tr -d ' ' || echo 0)
      if [ "${shm_kb:-0}" -lt 8000000 ]; then mount -o remount,size=16G /dev/shm 2>/dev/null || true; fi
      shm_kb=$(df -k --output=size /dev/shm 2>/dev/null | tail -1 | tr -d ' ' || echo 0)
      if [ "${shm_kb:-0}" -lt 2000000 ]; then
        echo "warning: /dev/shm is ${shm_kb:-0} kB and could not be grown: building batches in the training loop" >&2
        sed -i 's/^  num_workers: .*/  num_workers: 0/' .gpu/data/config.yaml
      fi
      df -h /dev/shm || true
    else
      device=cpu extra=(--max-minutes 0.5)
    fi
    set +e
    python3 -m geoseg train --config .gpu/data/config.yaml --text-cache .gpu/text/text_cache.pt --device "$device" \
      --out "$run_dir" "${extra[@]}" --tune-decision --export "$out/gpu_model.pt" 2>&1 | tee "$out/console.txt"
    rc=${PIPESTATUS[0]}
    set -e
    for f in train.log history.jsonl config.yaml; do
      [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$out/"
    done
    exit "$rc" ;;
  *)
    echo "usage: bash scripts/gpu_train.sh prepare [CONFIG] | run | rehearse" >&2; exit 2 ;;
esac
