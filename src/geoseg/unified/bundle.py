"""Pack what a training run reads into one small folder that trains without the imagery, GDAL or MiniLM.

Why: a lent GPU machine has torch but neither rasterio/GDAL nor the text encoder's weights, and
what is sent to it is capped (64 MiB). A run reads three things besides its config: shard rows,
the tiles they point at (decoded at the model's input size) and the instructions' token
embeddings. The pack holds exactly those, written by this machine's readers, so the other machine
trains on the same pixels and (to int8 rounding) the same embeddings:

- ``data/shards/{train,val}/part-00000.parquet``: the run's train rows and its validation rows;
- ``data/tiles.npz``: their tiles, lossless (:meth:`geoseg.unified.data.TileCache.save`);
- ``data/init.pt``: the ``init_from`` checkpoint, when the run fine-tunes one;
- ``data/config.yaml``: the run's resolved config pointing at the above (paths as given for ``out``);
- ``text/text_cache.pt``: the embeddings, packed (:func:`geoseg.unified.text_cache.save_packed`).

``text`` and ``data`` are separate folders so that each can travel in its own upload when the two
together are over the cap. Train from the pack with
``geoseg train --config OUT/data/config.yaml --text-cache OUT/text/text_cache.pt``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geoseg.data.writer import staged_dir
from geoseg.errors import InputError
from geoseg.unified.config import ExperimentConfig
from geoseg.unified.data import load_rows, load_val_rows, row_text, shard_files, tile_key, training_tiles
from geoseg.unified.text_cache import encode_texts_keyed, save_packed

log = logging.getLogger(__name__)


def _write_rows(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def pack_run(cfg: ExperimentConfig, out: str | Path, text_cache: str | Path | None = None) -> dict[str, int]:
    """Write the pack of ``cfg``'s run to ``out`` (see the module docstring); returns row, tile and text counts.

    ``text_cache``: the run's ``--text-cache`` (instructions missing from it are encoded with MiniLM here).
    The folder is filled beside ``out`` and moved into place only when complete.
    """
    tc, out = cfg.train, Path(out)
    train_rows = load_rows(tc.shards, "train", path_map=tc.image_path_map)
    val_rows, val_shards = load_val_rows(tc)
    if not train_rows:
        raise InputError(f"the shards at {tc.shards} hold no train rows", "build them with geoseg data build")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty", "pack into a new folder (or delete this one)")
    rows = train_rows + val_rows
    keys = list(dict.fromkeys(tile_key(r) for r in rows))
    texts = [row_text(r) for r in rows]
    with staged_dir(out) as tmp:
        _write_rows(train_rows, pq.read_schema(shard_files(tc.shards)[0]),
                    tmp / "data" / "shards" / "train" / "part-00000.parquet")
        _write_rows(val_rows, pq.read_schema(shard_files(val_shards)[0]),
                    tmp / "data" / "shards" / "val" / "part-00000.parquet")
        training_tiles(rows, cfg.model.input_size, tc.tile_store).save(tmp / "data" / "tiles.npz", keys=keys)
        cache, encoder = encode_texts_keyed(texts, Path(text_cache) if text_cache else None, None,
                                            cfg.model.max_tokens)
        save_packed(cache, tmp / "text" / "text_cache.pt", texts, encoder)  # the encoder goes with them
        # the config names the folder's final paths
        data = out / "data"
        tc.shards, tc.val_shards = str(data / "shards" / "train"), str(data / "shards" / "val")
        tc.tile_store, tc.image_path_map = str(data / "tiles.npz"), {}
        if tc.init_from:
            shutil.copy(tc.init_from, tmp / "data" / "init.pt")
            tc.init_from = str(data / "init.pt")
        (tmp / "data" / "config.yaml").write_text(f"# packed from {cfg.name} by geoseg train --pack\n" + cfg.to_yaml())
    counts = {"train_rows": len(train_rows), "val_rows": len(val_rows), "tiles": len(keys),
              "texts": len(set(texts))}
    log.info("packed %s into %s: %s", cfg.name, out, counts)
    return counts


__all__ = ["pack_run"]
