"""Training data for the unified model: shard rows → batched tensors at the working scale.

Rows come from the data engine's Parquet shards (:mod:`geoseg.data.schema`). Tiles are
decoded once (one read per source image, then cropped) and kept in memory at the
network input size, because on a CPU decoding JPEG tiles every step would cost more
than the network; masks are decoded from RLE per batch (cheap).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch

from geoseg.data.imagery import raster_shape, read_rgb, read_window, to_display
from geoseg.data.schema import prompt_of
from geoseg.errors import InputError
from geoseg.models import TASK_IDS
from geoseg.progress import progress
from geoseg.rle import rle_decode
from geoseg.unified.text_encoder import canonical_instruction

log = logging.getLogger(__name__)

MAX_POINTS = 3


def shard_files(shards: str | Path) -> list[str]:
    """Parquet files of a shard folder (recursively) or a glob."""
    s = str(shards)
    if os.path.isdir(s):
        files = sorted(glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True))
    else:
        files = sorted(glob.glob(s))
    if not files:
        raise InputError(f"no Parquet shards found at {s}", "build them with: geoseg data build ... -o DIR")
    return files


def map_image_path(path: str, path_map: Mapping[str, str]) -> str:
    """``path`` with its longest matching prefix of ``path_map`` replaced (unchanged when none matches).

    Prefixes match whole path components: ``/data`` maps ``/data/x.tif``, not ``/database/x.tif``.
    """
    for old in sorted(path_map, key=len, reverse=True):
        base = old.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return path_map[old].rstrip("/") + path[len(base):]
    return path


def check_images(rows: Sequence[dict]) -> None:
    """Raise a one-line error naming the first image file the rows point at that does not exist."""
    for path in sorted({r["image_path"] for r in rows}):
        if not os.path.exists(path):
            raise InputError(f"image {path} of the shards does not exist",
                             "if shards and imagery moved, set train.image_path_map: {OLD_PREFIX: NEW_PREFIX}")


def load_rows(shards: str | Path, split: str | None = None, sources: Sequence[str] | None = None,
              path_map: Mapping[str, str] | None = None) -> list[dict]:
    """All rows of the shards (optionally one split / some sources) as dicts.

    ``path_map`` rewrites each row's ``image_path`` (see :func:`map_image_path`).
    """
    rows: list[dict] = []
    for f in shard_files(shards):
        table = pq.read_table(f)
        for r in table.to_pylist():
            if split is not None and r["split"] != split:
                continue
            if sources and r["source"] not in sources:
                continue
            if path_map:
                r["image_path"] = map_image_path(r["image_path"], path_map)
            rows.append(r)
    return rows


def load_val_rows(tc) -> tuple[list[dict], str]:
    """A run's ``val`` rows (from ``train.val_shards`` when set, image paths mapped) and their build."""
    val_shards = tc.val_shards or tc.shards
    return load_rows(val_shards, "val", path_map=tc.image_path_map), val_shards


def tile_key(row: dict) -> tuple:
    w = row["window"]
    return (row["image_path"], row.get("image_key") or "", w["col_off"], w["row_off"], w["width"], w["height"],
            tuple(row.get("bands") or ()), tuple(tuple(s) for s in (row.get("stretch") or ())))


def row_text(row: dict) -> str:
    """The canonical instruction the text encoder sees for a row."""
    p = prompt_of(row)
    has_geom = bool(p.get("points") or p.get("box"))
    return canonical_instruction(row["instruction"], has_geom)


class TileCache:
    """Display-RGB tiles resized to ``size×size`` uint8, decoded once per source image."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tiles: dict[tuple, np.ndarray] = {}

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[:2] == (self.size, self.size):
            return rgb
        return cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def fill(self, rows: Sequence[dict]) -> None:
        """Decode every tile the rows point at (grouped by source image)."""
        groups: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
        for r in rows:
            k = tile_key(r)
            if k not in self.tiles:
                groups[(r["image_path"], r.get("image_key") or "", k[6], k[7])][k] = r
        for (path, key, bands, stretch), members in progress(groups.items(), desc="decode tiles", total=len(groups)):
            full, lut = None, None
            if len(members) > 1:
                try:
                    full, lut = read_window(path, _full_window(path, key), list(bands) or None, key)
                except Exception:  # noqa: BLE001 - fall back to per-tile reads
                    full = None
            for k, r in members.items():
                if full is not None:
                    c0, r0, w, h = k[2:6]
                    rgb = to_display(full[r0:r0 + h, c0:c0 + w], lut, [list(s) for s in stretch] or None)
                else:
                    rgb = read_rgb(r)
                self.tiles[k] = self._resize(rgb)

    def get(self, row: dict) -> np.ndarray:
        k = tile_key(row)
        if k not in self.tiles:
            self.tiles[k] = self._resize(read_rgb(row))
        return self.tiles[k]

    def save(self, path: str | Path, keys: Sequence[tuple] | None = None) -> Path:
        """Write the decoded tiles (``keys`` of them, default all) to one ``.npz``, each as lossless WebP.

        Why: a machine without GDAL or the imagery (a lent GPU box) can then train on exactly the
        pixels this one decoded; lossless WebP keeps them bit-exact at about 40 % of the raw size.
        """
        keys = list(self.tiles) if keys is None else list(keys)
        arrays: dict[str, np.ndarray] = {}
        for i, k in enumerate(keys):
            ok, buf = cv2.imencode(".webp", np.ascontiguousarray(self.tiles[k][:, :, ::-1]),
                                   [cv2.IMWRITE_WEBP_QUALITY, 101])
            if not ok:
                raise InputError(f"cannot encode tile {k[:2]} as WebP", "check that OpenCV was built with WebP")
            arrays[f"tile_{i}"] = buf.reshape(-1)
        meta = {"format": TILE_STORE_FORMAT, "size": self.size, "keys": [_key_to_json(k) for k in keys]}
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        tmp.replace(out)
        return out

    def load(self, path: str | Path) -> int:
        """Add the tiles of a store written by :meth:`save` (same size only); returns how many."""
        try:
            with np.load(path) as z:
                meta = json.loads(z["meta"].tobytes())
                if meta.get("format") != TILE_STORE_FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}")
                if int(meta["size"]) != self.size:
                    raise InputError(f"tile store {path} holds {meta['size']}-px tiles, the model takes {self.size} px",
                                     "pack the store again for this model's input_size")
                for i, k in enumerate(meta["keys"]):
                    bgr = cv2.imdecode(z[f"tile_{i}"], cv2.IMREAD_COLOR)
                    self.tiles[_key_from_json(k)] = np.ascontiguousarray(bgr[:, :, ::-1])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read tile store {path} ({exc})",
                             "write it again with geoseg train --pack") from exc
        return len(meta["keys"])


TILE_STORE_FORMAT = "geoseg.tiles.webp/1"


def _key_to_json(k: tuple) -> list:
    return [*k[:6], list(k[6]), [list(s) for s in k[7]]]


def _key_from_json(k: list) -> tuple:
    return (k[0], k[1], k[2], k[3], k[4], k[5], tuple(k[6]), tuple(tuple(s) for s in k[7]))


def training_tiles(rows: Sequence[dict], size: int, store: str | Path = "") -> TileCache:
    """The rows' tiles at ``size`` px: those in ``store`` (a :meth:`TileCache.save` file) from there, the
    rest decoded from the imagery, whose files must then exist (one-line error naming the first missing)."""
    tiles = TileCache(size)
    if store:
        n = tiles.load(store)
        log.info("loaded %d decoded tiles from %s", n, store)
    missing = [r for r in rows if tile_key(r) not in tiles.tiles]
    check_images(missing)
    tiles.fill(missing)
    return tiles


def _full_window(path: str, key: str) -> dict:
    h, w = raster_shape(path, key)
    return {"col_off": 0, "row_off": 0, "width": w, "height": h}


def norm_stats(tiles: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Per-channel mean and std of uint8 RGB tiles (recorded in the checkpoint)."""
    if not tiles:
        return {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    x = np.stack([t[::4, ::4] for t in tiles]).reshape(-1, 3).astype(np.float64)
    return {"mean": x.mean(0).round(3).tolist(), "std": np.maximum(x.std(0), 1.0).round(3).tolist()}


def geometry(row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Normalised points (P×2), labels (P, -1 padding), box (4) and box validity of a row."""
    p = prompt_of(row)
    w, h = row["window"]["width"], row["window"]["height"]
    pts = np.zeros((MAX_POINTS, 2), np.float32)
    labels = np.full(MAX_POINTS, -1, np.int64)
    src = p.get("points_norm") or ([[x / w, y / h] for x, y in p["points"]] if p.get("points") else [])
    for i, xy in enumerate(src[:MAX_POINTS]):
        pts[i] = xy
        labels[i] = int((p.get("labels") or [1] * len(src))[i])
    box = np.zeros(4, np.float32)
    valid = False
    b = p.get("box_norm") or ([p["box"][0] / w, p["box"][1] / h, p["box"][2] / w, p["box"][3] / h]
                              if p.get("box") else None)
    if b:
        box[:] = b
        valid = True
    return np.clip(pts, 0, 1), labels, np.clip(box, 0, 1), valid


def mask_target(row: dict, size: int) -> np.ndarray:
    """The row's mask at ``size×size`` as float32 coverage in [0, 1]."""
    m = rle_decode(row["mask"]).astype(np.float32)
    if m.shape != (size, size):
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA)
    return m


# words whose meaning changes under a flip or transpose of the tile
_ORIENTED = re.compile(r"\b(left\w*|right\w*|top\w*|bottom\w*|upper|lower|north\w*|south\w*|east\w*|west\w*|"
                       r"corner|cent(?:re|er|ral)|middle|above|below|horizontal\w*|vertical\w*|diagonal\w*|"
                       r"orient\w*|beside|side)\b", re.IGNORECASE)


def orientation_free(row: dict) -> bool:
    """True when flipping/transposing the tile keeps the instruction correct (no position words)."""
    return row["task"] == "interactive" or not _ORIENTED.search(row["instruction"])


@dataclass(frozen=True)
class Shadow:
    """One cast shadow: a soft-edged polygon (pixel vertices) and its dimming factor."""

    polygon: np.ndarray
    blur: int
    dim: float


def draw_shadow(h: int, w: int, rng: np.random.Generator) -> Shadow:
    """A random shadow polygon for an ``h×w`` image (see :func:`cast_shadow`)."""
    n = int(rng.integers(5, 9))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    radius = rng.uniform(0.08, 0.3) * min(h, w)
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = radius * rng.uniform(0.5, 1.0, n)
    poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round().astype(np.int32)
    return Shadow(poly, 2 * int(max(1, radius * 0.04)) + 1, float(rng.uniform(0.25, 0.6)))


def apply_shadow(img: np.ndarray, shadow: Shadow) -> np.ndarray:
    """Darken ``img`` (float ``H×W×3``) under ``shadow``; the blue channel is dimmed less (skylight)."""
    m = np.zeros(img.shape[:2], np.float32)
    cv2.fillPoly(m, [shadow.polygon], 1.0)
    m = cv2.GaussianBlur(m, (shadow.blur, shadow.blur), 0)[..., None]
    factor = np.array([shadow.dim, shadow.dim, min(1.0, shadow.dim * 1.15)], np.float32)
    return img * (1 - m * (1 - factor))


def cast_shadow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken one random soft-edged polygon of ``img`` (float ``H×W×3``), as a building's or a
    cloud's shadow would; the labels do not change.

    Why: the default model read high-rise shadows as water (dark, smooth, low texture) in the
    benchmark region; the training regions have few such scenes. Shadows are darker and
    slightly bluer than the lit surface (skylight), so the blue channel is dimmed less.
    """
    return apply_shadow(img, draw_shadow(*img.shape[:2], rng))


@dataclass(frozen=True)
class Augmentation:
    """One drawn training augmentation: dihedral flips, brightness/contrast jitter, an optional shadow.

    Drawn once and applied to an image and, separately, to each target on it, so that several
    prompts sharing one image pass (``prompts_per_image``) see the same transformed tile.
    """

    hflip: bool = False
    vflip: bool = False
    transpose: bool = False
    gain: float = 1.0
    bias: float = 0.0
    shadow: Shadow | None = None


def draw_augmentation(size: tuple[int, int], rng: np.random.Generator, geometric: bool, shadow: float = 0.0
                      ) -> Augmentation:
    """Draw flips (when ``geometric``), jitter and, with probability ``shadow``, a cast shadow."""
    flips = [bool(rng.random() < 0.5) for _ in range(3)] if geometric else [False] * 3
    gain, bias = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-12, 12))
    cast = draw_shadow(*size, rng) if shadow > 0 and rng.random() < shadow else None
    return Augmentation(*flips, gain=gain, bias=bias, shadow=cast)


def augment_image(img: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Apply ``aug`` to a ``H×W×3`` tile → float32 in [0, 255]."""
    if aug.hflip:
        img = img[:, ::-1]
    if aug.vflip:
        img = img[::-1]
    if aug.transpose:
        img = img.transpose(1, 0, 2)
    img = img.astype(np.float32) * aug.gain + aug.bias
    if aug.shadow is not None:
        img = apply_shadow(img, aug.shadow)
    return np.ascontiguousarray(np.clip(img, 0, 255))


def augment_target(mask: np.ndarray, geo: tuple, aug: Augmentation) -> tuple[np.ndarray, tuple]:
    """Apply ``aug``'s flips to a target mask and its prompt geometry (normalised points and box)."""
    pts, labels, box, valid = geo
    pts, box = pts.copy(), box.copy()
    if aug.hflip:
        mask = mask[:, ::-1]
        pts[:, 0] = 1 - pts[:, 0]
        box[[0, 2]] = 1 - box[[2, 0]]
    if aug.vflip:
        mask = mask[::-1]
        pts[:, 1] = 1 - pts[:, 1]
        box[[1, 3]] = 1 - box[[3, 1]]
    if aug.transpose:
        mask = mask.T
        pts = pts[:, ::-1].copy()
        box = box[[1, 0, 3, 2]]
    pts = np.where(labels[:, None] >= 0, pts, 0).astype(np.float32)
    return np.ascontiguousarray(mask), (pts, labels, box.astype(np.float32), valid)


def augment(img: np.ndarray, mask: np.ndarray, geo: tuple, rng: np.random.Generator, geometric: bool,
            shadow: float = 0.0) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Random dihedral transform (when ``geometric``), brightness/contrast jitter and, with
    probability ``shadow``, a cast shadow (:func:`cast_shadow`) of one sample."""
    aug = draw_augmentation(img.shape[:2], rng, geometric, shadow)
    return (augment_image(img, aug), *augment_target(mask, geo, aug))


def collate(rows: Sequence[dict], tiles: TileCache, text_cache: dict[str, torch.Tensor], classes: Sequence[str],
            mean: torch.Tensor, std: torch.Tensor, rng: np.random.Generator | None = None,
            shadow: float = 0.0, prompts_per_image: int = 1) -> dict[str, torch.Tensor]:
    """Stack rows into the model's inputs and training targets (augmented when ``rng`` is given,
    with a cast shadow on a ``shadow`` share of the images).

    With ``prompts_per_image`` = k > 1, each run of k consecutive rows must share one tile: the
    tile is stacked (and augmented) once, ``image`` holds one tile per group and ``image_of``
    maps each row to its tile, so the image encoder runs once for k prompts. A group is flipped
    only when every one of its instructions allows it (:func:`orientation_free`).
    """
    size = tiles.size
    k = prompts_per_image
    if k < 1 or len(rows) % k:
        raise ValueError(f"{len(rows)} rows do not split into groups of {k} prompts per image")
    groups = [list(rows[i:i + k]) for i in range(0, len(rows), k)]
    for g in groups:
        if len({tile_key(r) for r in g}) > 1:
            raise ValueError("rows grouped for one image pass come from different tiles")
    images = [tiles.get(g[0]) for g in groups]
    masks = [mask_target(r, size) for r in rows]
    geo = [geometry(r) for r in rows]
    if rng is not None:
        for gi, g in enumerate(groups):
            aug = draw_augmentation(images[gi].shape[:2], rng, all(orientation_free(r) for r in g), shadow)
            images[gi] = augment_image(images[gi], aug)
            for i in range(gi * k, gi * k + k):
                masks[i], geo[i] = augment_target(masks[i], geo[i], aug)
    imgs = torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2)
    # batches are built on the CPU; validation hands in the statistics on the model's device
    imgs = (imgs - mean.view(1, 3, 1, 1).cpu()) / std.view(1, 3, 1, 1).cpu()
    embs = [text_cache[row_text(r)] for r in rows]
    n = max(e.shape[0] for e in embs)
    tokens = torch.zeros(len(rows), n, embs[0].shape[1])
    tmask = torch.zeros(len(rows), n, dtype=torch.bool)
    for i, e in enumerate(embs):
        tokens[i, : e.shape[0]] = e.float()
        tmask[i, : e.shape[0]] = True
    cls_index = {c: i for i, c in enumerate(classes)}
    return {
        "image": imgs,
        "tokens": tokens,
        "token_mask": tmask,
        "task": torch.tensor([TASK_IDS[r["task"]] for r in rows]),
        "points": torch.from_numpy(np.stack([g[0] for g in geo])),
        "point_labels": torch.from_numpy(np.stack([g[1] for g in geo])),
        "box": torch.from_numpy(np.stack([g[2] for g in geo])),
        "box_valid": torch.tensor([g[3] for g in geo]),
        "target": torch.from_numpy(np.stack(masks)).unsqueeze(1),
        "empty": torch.tensor([bool(r["empty_target"]) for r in rows]),
        "category": torch.tensor([cls_index.get(r["category"], -1) for r in rows]),
        "image_of": torch.arange(len(groups)).repeat_interleave(k),
    }


MODEL_INPUTS = ("tokens", "token_mask", "task", "points", "point_labels", "box", "box_valid")
