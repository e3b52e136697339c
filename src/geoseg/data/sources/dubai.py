"""Dubai aerial imagery (Humans in the Loop): RGB JPEG tiles with RGB palette masks.

Layout: ``ROOT/tile_N/images/image_part_00K.jpg`` and ``ROOT/tile_N/masks/image_part_00K.png``.
The mask colours are NOT those of ``classes.json``; the palette below is the one in the
masks. Some masks are stored as paletted PNGs; they are converted to RGB first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geoseg.data.sources.base import MAX_SIZE_SLACK, UNLABELED, Scene, SceneRef, Source, fit_to
from geoseg.data.sources.raster import read_full
from geoseg.errors import InputError

log = logging.getLogger(__name__)

CLASSES = ["land", "water", "building", "vegetation", "road"]

#: mask RGB -> class index (UNLABELED for the unlabeled grey and stray black pixels)
PALETTE: dict[tuple[int, int, int], int] = {
    (132, 41, 246): 0,
    (226, 169, 41): 1,
    (60, 16, 152): 2,
    (254, 221, 58): 3,
    (110, 193, 228): 4,
    (155, 155, 155): UNLABELED,
    (0, 0, 0): UNLABELED,
}


def palette_to_classes(rgb: np.ndarray, palette: dict[tuple[int, int, int], int], path: str = "",
                       unknown: str = "error") -> tuple[np.ndarray, int]:
    """Map an ``H x W x 3`` palette mask to class indices (vectorised).

    Args:
        rgb: the mask.
        palette: colour -> class index.
        path: the mask's path, for error messages.
        unknown: ``"error"`` raises on a colour not in the palette; ``"unlabeled"`` maps it to
            UNLABELED and counts it (never to a wrong class).

    Returns:
        The class map and the number of pixels of unknown colour.
    """
    if unknown not in ("error", "unlabeled"):
        raise InputError(f"unknown_colour {unknown!r} is not a choice", "use unknown_colour: error or unlabeled")
    key = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) | rgb[:, :, 2].astype(np.int32)
    colours = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in palette), dtype=np.int32)
    values = np.array([palette[((c >> 16) & 255, (c >> 8) & 255, c & 255)] for c in colours], dtype=np.uint8)
    pos = np.searchsorted(colours, key).clip(0, len(colours) - 1)
    known = colours[pos] == key
    n_unknown = int(known.size - np.count_nonzero(known))
    if n_unknown and unknown == "error":
        bad = np.unique(key[~known])[:3]
        names = ", ".join(f"({(c >> 16) & 255}, {(c >> 8) & 255}, {c & 255})" for c in bad)
        raise InputError(f"mask {path} has {n_unknown} pixels of colours not in the palette: {names}",
                         "the Dubai palette is fixed; to count such pixels as unlabeled, set the source's "
                         "options: {unknown_colour: unlabeled}")
    out = values[pos]
    out[~known] = UNLABELED
    return out, n_unknown


#: the project's split of the Dubai regions (overridden by a config's ``splits:``)
DEFAULT_SPLITS = {"train": ["tile_1", "tile_2", "tile_3", "tile_4", "tile_5"], "val": ["tile_6"], "test": ["tile_7"]}


class DubaiSource(Source):
    """The Dubai semantic-segmentation set; regions are the ``tile_N`` folders.

    A region that a config's ``splits:`` does not name goes to ``test`` (held out), never to
    ``train``: a map that lists only training regions must not turn the validation and test
    regions into training data. Option ``regions: [...]`` reads only those folders.
    """

    name = "dubai"
    default_split = "test"

    def __init__(self, root: str, splits: dict[str, list[str]] | None = None, **options: object) -> None:
        super().__init__(root, splits or DEFAULT_SPLITS, **options)

    def scenes(self) -> list[SceneRef]:
        root = Path(self.root)
        if not root.is_dir():
            raise InputError(f"Dubai folder {root} does not exist", "pass the folder holding tile_1 ... tile_7")
        refs = []
        regions = self.options.get("regions")
        for region_dir in sorted(p for p in root.iterdir() if p.is_dir() and (p / "images").is_dir()):
            if regions and region_dir.name not in regions:
                continue
            for img in sorted((region_dir / "images").glob("*.jpg")):
                mask = region_dir / "masks" / (img.stem + ".png")
                if not mask.exists():
                    log.warning("no mask for %s, skipped", img)
                    continue
                refs.append(SceneRef(self.name, f"{region_dir.name}/{img.stem}", region_dir.name,
                                     str(img.resolve()), "", (1, 2, 3), (("mask", str(mask.resolve())),)))
        limit = self.options.get("max_scenes_per_region")
        if limit:
            by_region: dict[str, int] = {}
            kept = []
            for r in refs:
                by_region[r.region] = by_region.get(r.region, 0) + 1
                if by_region[r.region] <= int(limit):
                    kept.append(r)
            refs = kept
        if not refs:
            raise InputError(f"no image/mask pairs found under {root}",
                             "expected tile_N/images/*.jpg with tile_N/masks/*.png")
        return refs

    def load(self, ref: SceneRef) -> Scene:
        from PIL import Image, UnidentifiedImageError

        rgb = read_full(ref.image_path, list(ref.bands))
        mpath = str(ref.option("mask"))
        try:
            with Image.open(mpath) as im:
                mrgb = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"cannot read mask {mpath} ({exc})", "check the file") from exc
        label, n_unknown = palette_to_classes(mrgb, PALETTE, mpath, str(self.options.get("unknown_colour", "error")))
        notes = {"unknown_colour_px": n_unknown} if n_unknown else {}
        h, w = rgb.shape[:2]
        if label.shape != (h, w):
            if abs(label.shape[0] - h) > MAX_SIZE_SLACK or abs(label.shape[1] - w) > MAX_SIZE_SLACK:
                raise InputError(f"mask {mpath} is {label.shape[1]}x{label.shape[0]} but its image is {w}x{h}",
                                 "pair each image with its own mask")
            label, _ = fit_to(label, h, w, UNLABELED)
            notes["mask_size_adjusted"] = 1
        return Scene(ref, rgb, list(CLASSES), label=label, notes=notes)
