"""A SAM-like stateful predictor over a raster: set the image once, prompt it many times.

:class:`SegmentPredictor` is the interactive twin of :func:`geoseg.segment`. It opens a
scene once (GeoTIFF, JPG, PNG or an in-memory array, validated, with its scene-level
stretch, bands and nodata handled by :class:`~geoseg.raster.io.RasterSource`) and then
answers prompts cheaply, each with a mask, a score and georeferenced polygons::

    predictor = SegmentPredictor(backend="classical")
    predictor.set_image("scene.tif")
    a = predictor.predict(box=(120, 80, 260, 190))
    b = predictor.predict(points=[(9.51, 55.70)], prompt_crs="EPSG:4326")
    a.polygons()          # shapely polygons in the scene CRS
    predictor.write([a, b], "mask.tif", vector="objects.gpkg")

Each prompt is answered on the windows :func:`geoseg.segment` uses for it, so the predictor
and the command give the same answer. The expensive half of a segmenter
(``set_image``: decoding, normalising, the image embedding) is computed once per
*window* and cached. For backends that share windows (``shares_windows``: SAM, SAM 2,
whose encoder is the cost) a scene no larger than ``tile_size`` is one window, embedded by
:meth:`SegmentPredictor.set_image` itself, so every later prompt only pays for
``predict``; a larger scene is covered by the overlapping tile grid of
:func:`geoseg.raster.tiling.plan_tiles`: a point/box prompt uses the tile that holds
it with the most context (prompts in the same tile share its embedding); a prompt too
large for any tile gets its own context window. The other backends (``unified``,
``classical``, ``trainfree``) answer each point/box prompt on its own context window around
it, as :func:`geoseg.segment` does (for the unified model that answers clicks better: 4-5
gIoU points on the Dubai regions, ``benchmarks/small_boxes.py``; its encoder is cheap);
the same prompt asked again reuses its window. A text prompt runs on every tile and the tiles' answers are united (a tile whose presence fell in
the grey band of the unified backend's scene presence rule counts when another tile found the
target, as in :func:`geoseg.segment`). The last
``max_windows`` embedded windows are kept (by default every grid tile plus four
context windows, at most 32; each on a shallow copy of the segmenter, the same
contract the server relies on: ``_set_image`` assigns its cached state).

Results hold their mask in memory for the prompt's window only (the whole scene for
text prompts); for scenes too large for that use :func:`geoseg.segment`, which streams.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.backends import build_backend
from geoseg.errors import GeosegError, InputError, PromptError
from geoseg.pipeline import PromptLike, normalize_prompts, prepare_prompts
from geoseg.progress import progress
from geoseg.prompts import Prompt, as_box, as_points
from geoseg.raster.io import RasterSource, open_source, parse_bands
from geoseg.raster.tiling import Tile, check_tiling, plan_tiles
from geoseg.raster.writer import WindowResult, WriteSummary, resample_part
from geoseg.segmenters import Segmenter
from geoseg.unified.instruction_check import check_instructions
from geoseg.windows import (
    WindowTask,
    group_tasks,
    input_provenance,
    plan_windows,
    predict_tasks,
)

log = logging.getLogger(__name__)

__all__ = ["PIXELS", "PredictorResult", "SegmentPredictor"]

#: ``prompt_crs`` value meaning pixel coordinates even when the predictor has a default CRS
PIXELS = "pixels"


@dataclass
class PredictorResult:
    """One prompt's answer on the predictor's scene.

    Attributes:
        prompt: the prompt in scene pixel coordinates (after ``prompt_crs`` conversion).
        mask: boolean mask at full resolution covering ``window`` (not the whole scene;
            :meth:`full_mask` pastes it into a scene-sized array).
        score: the segmenter's confidence in ``[0, 1]``.
        window: the scene window ``mask`` covers.
        scene_transform: the scene's pixel→map affine transform.
        crs: the scene's ``rasterio.crs.CRS`` or ``None`` (not georeferenced).
        scene_shape: ``(height, width)`` of the scene.
        pixel_area: area of one pixel in ``area_unit`` (at the scene centre: geographic pixels and
            those of an area-distorting projection differ across the scene; :attr:`area` measures each).
        area_unit: ``"m2"`` when the scene's CRS places it (see :mod:`geoseg.raster.areas`), ``"px"`` otherwise.
        prob: optional float32 per-pixel probability with the shape of ``mask``.
    """

    prompt: Prompt
    mask: np.ndarray
    score: float
    window: Window
    scene_transform: Affine
    crs: object | None
    scene_shape: tuple[int, int]
    pixel_area: float
    area_unit: str
    prob: np.ndarray | None = None

    @property
    def transform(self) -> Affine:
        """The pixel→map transform of ``mask`` (its window's transform)."""
        return window_transform(self.window, self.scene_transform)

    @property
    def pixels(self) -> int:
        """Number of target pixels."""
        return int(self.mask.sum())

    @property
    def area(self) -> float:
        """Target area in ``area_unit``, each pixel measured where it lies (as ``geoseg segment`` reports it)."""
        from geoseg.raster.areas import MaskArea, scene_grid

        h, w = self.scene_shape
        area = MaskArea(scene_grid(self.crs, self.scene_transform, w, h))
        return area.add(self.mask, self.window)

    def full_mask(self) -> np.ndarray:
        """The mask pasted into a scene-sized boolean array."""
        out = np.zeros(self.scene_shape, dtype=bool)
        r0, c0 = int(self.window.row_off), int(self.window.col_off)
        out[r0:r0 + self.mask.shape[0], c0:c0 + self.mask.shape[1]] = self.mask
        return out

    def polygons(self, crs: str | None = None) -> list:
        """The mask's polygons (shapely), one per connected object.

        Args:
            crs: ``None`` for the scene CRS (pixel coordinates when the scene has no
                georeference), or a CRS such as ``"EPSG:4326"`` to reproject to.

        Raises:
            GeosegError: a target ``crs`` was asked for on a scene without CRS.
        """
        from geoseg.vector import pixel_to_map, polygonize_mask, reproject_geoms

        h, w = self.scene_shape
        geoms = np.array(polygonize_mask(self.mask, self.window, w, h), dtype=object)
        if len(geoms) == 0:
            return []
        if self.crs is not None or not self.scene_transform.is_identity:
            geoms = pixel_to_map(geoms, self.scene_transform)
        if crs is not None:
            if self.crs is None:
                raise GeosegError("the image has no CRS, so its polygons cannot be reprojected",
                                  "call polygons() without crs (pixel coordinates) or georeference the image")
            geoms = reproject_geoms(geoms, self.crs, crs)
        return list(geoms)


class SegmentPredictor:
    """Set a raster once, then prompt it many times; see the module docstring.

    Args:
        backend: registry name (default ``unified``, falling back to ``classical`` for
            point/box prompts when it is unavailable); ignored when ``segmenter`` is given.
        segmenter: an already built :class:`~geoseg.segmenters.Segmenter`.
        checkpoint, device: passed to the backend.
        tile_size, overlap: the window grid for scenes larger than ``tile_size``.
        prompt_crs: default CRS of prompt coordinates (``"EPSG:4326"``); pixels when ``None``.
        max_windows: how many embedded windows are kept; ``None``: every grid tile of the
            scene plus four, at most 32 (so repeated text prompts reuse every tile).
    """

    def __init__(self, backend: str | None = None, *, segmenter: Segmenter | None = None,
                 checkpoint: str | None = None, device: str = "auto", tile_size: int = 1024, overlap: int = 128,
                 prompt_crs: str | None = None, max_windows: int | None = None) -> None:
        check_tiling(tile_size, overlap)
        self.notes: list[str] = []
        if segmenter is None:
            segmenter, self.notes = build_backend(backend, (), checkpoint, device)
        self.segmenter = segmenter
        self.tile_size, self.overlap = int(tile_size), int(overlap)
        self.prompt_crs = prompt_crs
        self._max_windows = max_windows
        self.source: RasterSource | None = None
        #: how many times ``set_image`` ran on the backend since the predictor was built
        self.embed_count = 0
        self._owns_source = False
        self._memfile = None
        self._tiles: list[Tile] = []
        self._cache: OrderedDict[tuple, tuple[Segmenter, np.ndarray]] = OrderedDict()

    # -- image -------------------------------------------------------------------------
    def set_image(self, image: str | os.PathLike | np.ndarray | RasterSource, *,
                  bands: str | Sequence[int] | None = None, stretch: list[list[float]] | None = None,
                  transform: Affine | None = None, crs: object | None = None,
                  nodata: float | None = None) -> None:
        """Open ``image`` and compute what every prompt on it shares.

        Args:
            image: a GeoTIFF/JPG/PNG path, an open :class:`RasterSource` (not closed by the
                predictor), or an array ``H x W`` or ``H x W x C`` (channels last, any dtype).
            bands: 1-based bands to read as RGB (``"4,3,2"``) or one band for grey.
            stretch: a precomputed scene stretch (per display band ``[lo, hi]``).
            transform, crs, nodata: georeference and nodata of an array ``image``.

        Raises:
            GeosegError: unreadable image, bands out of range, all-nodata scene.
        """
        self.reset_image()
        if isinstance(image, RasterSource):
            src, owned = image, False
        elif isinstance(image, np.ndarray):
            src, owned = self._array_source(image, bands, stretch, transform, crs, nodata), True
        elif isinstance(image, (str, os.PathLike)):
            if transform is not None or crs is not None or nodata is not None:
                raise InputError("transform/crs/nodata are only for array images",
                                 "georeference the file itself, or pass the pixels as an array")
            src, owned = open_source(image, bands, stretch=stretch), True
        else:
            raise InputError(f"cannot use a {type(image).__name__} as an image",
                             "give a file path, a numpy array (H x W or H x W x C) or a RasterSource")
        self.source, self._owns_source = src, owned
        if max(src.width, src.height) > self.tile_size:
            self._tiles = plan_tiles(src.width, src.height, self.tile_size, self.overlap)
            if len(self._tiles) > self.max_windows:
                log.info("%d tiles but %d cached windows: text prompts re-embed tiles", len(self._tiles),
                         self.max_windows)
        elif self.segmenter.shares_windows:  # one window every prompt uses: embed it now, as SAM's set_image does
            self._embedding(Window(0, 0, src.width, src.height), (src.height, src.width))

    def _array_source(self, image: np.ndarray, bands, stretch, transform, crs, nodata) -> RasterSource:
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.io import MemoryFile

        a = np.asarray(image)
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3 and a.shape[2] <= 16:
            a = np.moveaxis(a, 2, 0)
        else:
            raise InputError(f"cannot use an array of shape {a.shape} as an image",
                             "give H x W or H x W x C (channels last, C <= 16)")
        if a.size == 0:
            raise InputError(f"the array image is empty (shape {image.shape})", "give a non-empty image")
        if a.dtype == bool or a.dtype == np.float16:
            a = a.astype(np.uint8 if a.dtype == bool else np.float32)
        if a.dtype.kind not in "uif":
            raise InputError(f"cannot use an array of dtype {a.dtype} as an image", "give integer or float pixels")
        valid = np.isfinite(a) if a.dtype.kind == "f" else np.ones(a.shape, bool)
        if nodata is not None:
            valid &= a != nodata
        if not valid.any():
            raise InputError("the array image has no valid pixels (every value is NaN, infinite or nodata)",
                             "check the array and the nodata value given")
        profile = {"driver": "GTiff", "width": a.shape[2], "height": a.shape[1], "count": a.shape[0],
                   "dtype": a.dtype.name, "transform": transform if transform is not None else Affine.identity()}
        if crs is not None:
            profile["crs"] = crs
        if nodata is not None:
            profile["nodata"] = nodata
        mem = MemoryFile(ext=".tif")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with mem.open(**profile) as ds:
                ds.write(np.ascontiguousarray(a))
        self._memfile = mem
        return RasterSource(mem.name, parse_bands(bands), stretch=stretch)

    def reset_image(self) -> None:
        """Forget the current image and its cached embeddings."""
        self._cache.clear()
        self._tiles = []
        if self.source is not None and self._owns_source:
            self.source.close()
        self.source = None
        if self._memfile is not None:
            self._memfile.close()
            self._memfile = None

    close = reset_image

    def __enter__(self) -> SegmentPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset_image()

    @property
    def max_windows(self) -> int:
        """How many embedded windows are kept for the current image."""
        if self._max_windows is not None:
            return max(1, int(self._max_windows))
        return min(32, len(self._tiles) + 4)

    def _require_source(self) -> RasterSource:
        if self.source is None:
            raise RuntimeError("call set_image() before predict()")
        return self.source

    # -- windows and their cached embeddings ---------------------------------------------
    def _embedding(self, read: Window, out_shape: tuple[int, int]) -> tuple[Segmenter, np.ndarray]:
        """The segmenter holding window ``read`` (set once, kept LRU) and the window's validity."""
        key = WindowTask(-1, Prompt(), read, read, out_shape).key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rgb, valid = self._require_source().read_rgb(read, out_shape)
        seg = copy.copy(self.segmenter)
        seg.set_image(rgb)
        self.embed_count += 1
        self._cache[key] = (seg, valid)
        while len(self._cache) > self.max_windows:
            self._cache.popitem(last=False)
        return seg, valid

    def _plan(self, prompts: Sequence[Prompt]) -> list[WindowTask]:
        """The windows :func:`geoseg.segment` uses (:func:`geoseg.windows.plan_windows`): every tile for
        text; for point/box prompts the shared scene or grid tile when the backend shares windows, else
        each prompt's own context window."""
        src = self._require_source()
        return plan_windows(src.width, src.height, prompts, self.tile_size, self.overlap,
                            shared=self.segmenter.shares_windows)

    # -- prompting ---------------------------------------------------------------------
    def predict(self, prompt: PromptLike | None = None, *, points: Iterable[Sequence[float]] = (),
                negative_points: Iterable[Sequence[float]] = (), box: Sequence[float] | None = None,
                text: str | None = None, task: str | None = None, prompt_crs: str | None = None
                ) -> PredictorResult:
        """Answer one target: a :class:`Prompt` (or its dict), or the keywords combined into one.

        Args:
            prompt: a ready prompt; or leave it ``None`` and give the keywords.
            points, negative_points: ``(x, y)`` on / off the target.
            box: ``(x0, y0, x1, y1)`` around the target.
            text: a referring expression or reasoning query (text-capable backends).
            task: ``"referring"`` or ``"reasoning"`` to override the guess from the text.
            prompt_crs: CRS of the coordinates; ``None`` uses the predictor's default and
                ``"pixels"`` forces pixel coordinates.

        Raises:
            PromptError: empty prompt, prompt outside the image, unsupported kind.
        """
        pos = as_points(points)
        neg = as_points(negative_points, "negative_points")
        if prompt is None:
            prompt = Prompt(points=tuple(pos + neg), labels=(1,) * len(pos) + (0,) * len(neg),
                            box=as_box(box) if box is not None else None, text=text, task=task)
        elif pos or neg or box is not None or text is not None or task is not None:
            raise PromptError("predict() got both a Prompt and prompt keywords", "give one or the other")
        return self.predict_many([prompt], prompt_crs=prompt_crs)[0]

    def predict_many(self, prompts: PromptLike | Iterable[PromptLike], prompt_crs: str | None = None
                     ) -> list[PredictorResult]:
        """Answer several targets; prompts sharing a window are answered on one embedding.

        ``prompt_crs`` as in :meth:`predict`.
        """
        src = self._require_source()
        plist = normalize_prompts(prompts)
        if not plist:
            raise PromptError("no prompt given", "give points, a box or text")
        crs = self.prompt_crs if prompt_crs is None else (None if prompt_crs == PIXELS else prompt_crs)
        plist = prepare_prompts(src, plist, crs)
        for p in plist:
            self.segmenter.check_prompt(p)
        check_instructions(self.segmenter, plist)  # logs a text unlike the model's training instructions
        per_prompt: dict[int, list[WindowResult]] = {i: [] for i in range(len(plist))}
        groups = group_tasks(self._plan(plist))
        for group in progress(groups, desc="predict", total=len(groups), unit="window"):
            seg, valid = self._embedding(group[0].read, group[0].out_shape)
            for r in predict_tasks(group, seg, valid):
                per_prompt[r.prompt_index].append(r)
        return [self._assemble(plist[i], per_prompt[i]) for i in range(len(plist))]

    def _assemble(self, prompt: Prompt, results: list[WindowResult]) -> PredictorResult:
        """One full-resolution result from a prompt's window results (upsampled / stitched)."""
        from geoseg.raster.areas import pixel_area

        src = self._require_source()
        unit_area, unit = pixel_area(src)
        common = {"scene_transform": src.transform, "crs": src.crs, "scene_shape": (src.height, src.width),
                  "pixel_area": unit_area, "area_unit": unit}
        if len(results) == 1:
            r = results[0]
            mask = resample_part(r.mask, r.window, r.window).astype(bool, copy=False)
            prob = resample_part(r.prob, r.window, r.window) if r.prob is not None else None
            return PredictorResult(prompt, mask, float(r.score), r.window, prob=prob, **common)
        full = Window(0, 0, src.width, src.height)
        mask = np.zeros((src.height, src.width), dtype=bool)
        has_prob = any(r.prob is not None for r in results)
        prob = np.zeros((src.height, src.width), dtype=np.float32) if has_prob else None
        weighted, pixels = 0.0, 0
        present = any(r.present for r in results)  # the scene presence rule (SceneWriter): held answers count
        for r in results:
            r0, c0 = int(r.window.row_off), int(r.window.col_off)
            h, w = int(r.window.height), int(r.window.width)
            m = resample_part(r.held if present and r.held is not None else r.mask, r.window, r.window)
            mask[r0:r0 + h, c0:c0 + w] |= m  # overlapping tiles' answers are united, as the writer does
            if prob is not None:
                p = resample_part(r.prob, r.window, r.window) if r.prob is not None else m * np.float32(r.score)
                np.maximum(prob[r0:r0 + h, c0:c0 + w], p, out=prob[r0:r0 + h, c0:c0 + w])
            n = int(m.sum())
            weighted += float(r.score) * n
            pixels += n
        score = weighted / pixels if pixels else max(float(r.score) for r in results)
        return PredictorResult(prompt, mask, score, full, prob=prob, **common)

    # -- outputs -----------------------------------------------------------------------
    def write(self, results: Sequence[PredictorResult], output: str | os.PathLike, *,
              vector: str | os.PathLike | None = None, score_raster: str | os.PathLike | None = None,
              simplify: float = 0.0, min_area: float = 0.0) -> WriteSummary:
        """Write results as ``geoseg segment`` does: mask GeoTIFF, optional vectors and score raster.

        Each result is one prompt (its ``prompt`` fills the vector ``prompt`` field);
        outputs appear only when everything succeeded. ``simplify`` (pixels) and ``min_area``
        (the layer's area unit) shape the polygons as :func:`geoseg.segment` does (checked by
        :class:`SceneWriter` before anything is written).
        """
        from geoseg.raster.writer import SceneWriter, check_output_paths
        from geoseg.vector import vector_driver

        src = self._require_source()
        if not results:
            raise PromptError("no result to write", "predict() first and pass its results")
        for r in results:
            if not isinstance(r, PredictorResult):
                raise GeosegError(f"cannot write a {type(r).__name__} as a result",
                                  "pass the PredictorResult objects predict() returned")
            if (r.scene_shape != (src.height, src.width) or r.scene_transform != src.transform
                    or r.crs != src.crs):
                raise GeosegError(f"a result belongs to another image ({r.scene_shape[1]}x{r.scene_shape[0]}, "
                                  f"{r.crs or 'no CRS'}) than the predictor's ({src.width}x{src.height}, "
                                  f"{src.crs or 'no CRS'})",
                                  "write results with the predictor (and image) that made them")
        output = os.fspath(output)
        vector = os.fspath(vector) if vector else None
        score_raster = os.fspath(score_raster) if score_raster else None
        check_output_paths(output, score_raster, vector, None if src.path.startswith("/vsi") else src.path)
        if vector:
            vector_driver(vector)
        prompts = [r.prompt for r in results]
        provenance = {**self.segmenter.provenance(), "backend": self.segmenter.name,
                      "prompts": [p.to_dict() for p in prompts], "input": input_provenance(src)}
        with SceneWriter(src, output, prompts, provenance, score_raster=score_raster, vector=vector,
                         simplify=simplify, min_area=min_area) as writer:
            for i, r in enumerate(results):
                writer.add(WindowResult(i, r.window, r.mask, r.score, r.prob))
            return writer.finish()
