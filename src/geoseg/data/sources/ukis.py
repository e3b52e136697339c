"""Multispectral tiles with class masks (DLR ukis-csmask test tiles: clouds and cloud shadow).

Layout: a folder of ``.npz`` files, each one scene and one region, holding ``img``
(``H x W x B`` float reflectance; bands Blue, Green, Red, NIR, SWIR1.6, SWIR2.2) and
``msk`` (``H x W`` or ``H x W x 1``; 0 = cloud shadow, 1-3 = clear surfaces, 4 = cloud).
The display image is bands Red, Green, Blue (``bands: [3, 2, 1]``) under a scene-level
2-98 % stretch; rows point at the ``.npz`` with ``image_key: img``, so
:func:`geoseg.data.imagery.read_bands` still returns all bands.

Options:
    bands: 1-based display bands (default ``[3, 2, 1]``).
    image_key / mask_key: array names (default ``img`` / ``msk``).
    values: mask value -> class name (default the ukis-csmask coding above); a mask value not
        listed is an error, or unlabeled and counted with ``unknown_value: unlabeled``.
    split: put every scene in this split (default: the split map, else ``test``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from geoseg.data.sources.base import UNLABELED, Scene, SceneRef, Source, check_size, fit_to
from geoseg.data.sources.raster import scene_stretch, to_display
from geoseg.errors import InputError

DEFAULT_VALUES = {0: "cloud shadow", 1: "clear ground", 2: "clear ground", 3: "clear ground", 4: "cloud"}


class UkisSource(Source):
    """Cloud / cloud-shadow masks on 6-band reflectance tiles."""

    name = "ukis"
    default_split = "test"

    def _values(self) -> dict[int, str]:
        raw = self.options.get("values") or DEFAULT_VALUES
        return {int(k): str(v) for k, v in dict(raw).items()}  # type: ignore[call-overload]

    def scenes(self) -> list[SceneRef]:
        root = Path(self.root)
        if not root.is_dir():
            raise InputError(f"folder {root} does not exist", "pass the folder holding the .npz tiles")
        files = sorted(root.glob("*.npz"))
        if not files:
            raise InputError(f"no .npz tiles in {root}", "expected files holding 'img' and 'msk' arrays")
        bands = tuple(int(b) for b in self.options.get("bands", (3, 2, 1)))  # type: ignore[union-attr]
        key = str(self.options.get("image_key", "img"))
        return [SceneRef(self.name, f.stem, f.stem, str(f.resolve()), key, bands,
                         (("mask_key", str(self.options.get("mask_key", "msk"))),)) for f in files]

    def load(self, ref: SceneRef) -> Scene:
        mkey = str(ref.option("mask_key"))
        try:
            with np.load(ref.image_path) as z:
                img, msk = np.asarray(z[ref.image_key]), np.asarray(z[mkey])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read arrays {ref.image_key!r} and {mkey!r} from {ref.image_path} ({exc})",
                             "check the file and image_key/mask_key") from exc
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or not (np.issubdtype(img.dtype, np.number) or img.dtype == bool):
            raise InputError(f"array {ref.image_key!r} of {ref.image_path} is {img.dtype} of shape {img.shape}, "
                             "not an H x W x bands image", "store the image as a numeric H x W x B array")
        if msk.ndim not in (2, 3) or not (np.issubdtype(msk.dtype, np.number) or msk.dtype == bool):
            raise InputError(f"mask {mkey!r} of {ref.image_path} is {msk.dtype} of shape {msk.shape}, "
                             "not an H x W class mask", "store the mask as a numeric H x W (or H x W x 1) array")
        if msk.ndim == 3:
            if msk.shape[2] != 1:
                raise InputError(f"mask {mkey!r} of {ref.image_path} has {msk.shape[2]} channels",
                                 "give a single-channel class mask")
            msk = msk[:, :, 0]
        if max(ref.bands) > img.shape[2]:
            raise InputError(f"{ref.image_path} has {img.shape[2]} bands, band {max(ref.bands)} was asked for",
                             "choose bands that exist (1-based)")
        h, w = img.shape[:2]
        notes: dict[str, int] = {}
        values = self._values()
        classes = sorted(set(values.values()))
        lut = np.full(65536, UNLABELED, dtype=np.uint8)
        for v, name in values.items():
            lut[v] = classes.index(name)
        # NaN/inf mask pixels are unlabeled (counted); fractional values are not class values
        finite_m = np.isfinite(msk) if np.issubdtype(msk.dtype, np.floating) else np.ones(msk.shape, dtype=bool)
        if not finite_m.all():
            notes["nonfinite_mask_px"] = int((~finite_m).sum())
        m = np.where(finite_m, msk, -1).astype(np.int64)
        known = finite_m & np.isin(m, list(values)) & (m == np.where(finite_m, msk, -1))
        fractional = finite_m & (m != np.where(finite_m, msk, -1))
        m[fractional] = -1
        n_unknown = int(np.count_nonzero(finite_m & ~known))
        if n_unknown:
            if self.options.get("unknown_value", "error") != "unlabeled":
                bad_px = msk[finite_m & ~known]
                bad = sorted(set(np.unique(bad_px).tolist()))[:5]
                raise InputError(f"mask of {ref.image_path} has {n_unknown} pixels of values {bad} not in the class map",
                                 "add them to values: in the config, or set unknown_value: unlabeled")
            notes["unknown_value_px"] = n_unknown
        label = np.where(known, lut[np.clip(m, 0, 65535)], UNLABELED).astype(np.uint8)
        if label.shape != (h, w):
            check_size(label.shape, (h, w), f"mask of {ref.image_path}")
            label, _ = fit_to(label, h, w, UNLABELED)
            notes["mask_size_adjusted"] = 1
        data = img[:, :, [b - 1 for b in ref.bands]]
        finite = np.all(np.isfinite(data), axis=2)
        if not finite.all():
            label[~finite] = UNLABELED
            notes["nonfinite_px"] = int((~finite).sum())
        stretch = scene_stretch(data, valid=finite)
        return Scene(ref, to_display(data, stretch), classes, label=label, stretch=stretch, notes=notes)
