"""The Parquet shard schema shared by the data engine, the benchmark and training.

One row is one image–mask–instruction triplet. Images are not copied: a row points
at its source image and the tile window inside it, plus how to turn the source
bands into display RGB (band indices and the *scene-level* stretch), so every
consumer renders a tile identically.

Columns:
    sample_id     unique, deterministic id ``source/scene/tile/instance/task-k``
    source        adapter name (``dubai``, ``dk_fields``, ``ukis``, ``coco`` ...)
    scene         the source image's id within the source
    region        the split unit (Dubai: ``tile_N``); tiles of one region share a split
    split         ``train`` | ``val`` | ``test``
    image_path    path of the source image (as given to the engine, usually absolute)
    image_key     array name inside ``.npz`` sources, empty otherwise
    window        tile in source pixels: ``col_off, row_off, width, height``
    bands         1-based source bands shown as R, G, B
    stretch       per display band ``[lo, hi]`` mapped to 0..255; empty = no stretch (uint8 data)
    mask          target mask at tile size, COCO RLE ``{size: [h, w], counts}``; all zero for no-target
    task          ``interactive`` | ``referring`` | ``reasoning``
    level         difficulty 1..3
    category      target class name (for no-target rows: the absent class asked for)
    instruction   the instruction text
    prompt        JSON: ``{"points": [[x, y]...], "labels": [...], "box": [x0, y0, x1, y1],
                  "points_norm": ..., "box_norm": ...}`` in tile pixels and in [0, 1]; ``{}`` for text tasks
    answer        short answer / rationale (reasoning), or the referring expression's parts
    empty_target  True when the target is absent from the tile
    instance_id   instance index within the tile (-1 for class-level or empty targets)
    attributes    JSON of the target's extracted attributes
"""

from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = 1

WINDOW_TYPE = pa.struct([("col_off", pa.int32()), ("row_off", pa.int32()), ("width", pa.int32()), ("height", pa.int32())])
RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])

SHARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("scene", pa.string()),
        ("region", pa.string()),
        ("split", pa.string()),
        ("image_path", pa.string()),
        ("image_key", pa.string()),
        ("window", WINDOW_TYPE),
        ("bands", pa.list_(pa.int32())),
        ("stretch", pa.list_(pa.list_(pa.float32()))),
        ("mask", RLE_TYPE),
        ("task", pa.string()),
        ("level", pa.int8()),
        ("category", pa.string()),
        ("instruction", pa.string()),
        ("prompt", pa.string()),
        ("answer", pa.string()),
        ("empty_target", pa.bool_()),
        ("instance_id", pa.int32()),
        ("attributes", pa.string()),
    ],
    metadata={"geoseg_schema_version": str(SCHEMA_VERSION)},
)


def prompt_of(row: dict) -> dict:
    """The decoded structured prompt of a row (``{}`` for text-only tasks)."""
    p = row.get("prompt") or "{}"
    return json.loads(p) if isinstance(p, str) else dict(p)
