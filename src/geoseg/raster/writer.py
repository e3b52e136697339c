"""Assemble per-window results into the scene outputs, window by window.

:class:`SceneWriter` receives :class:`WindowResult` objects in any order (from one
process, or gathered from Dask workers) and paints them into a scratch mask raster
(an uncompressed, sparse, tiled GeoTIFF next to the output; the union of every
prompt's answer) and, when asked, a scratch score raster. When vectors are asked for,
each result is polygonized as it arrives, under its own prompt: answers of different
prompts may overlap (two neighbouring parcels' boxes, a point and a text prompt on the
same field), and each keeps its whole polygons, as SAM answers several boxes.
:meth:`SceneWriter.finish` then streams the scratch rasters block by block into the
final outputs:

* the mask GeoTIFF: uint8, 1 = target, 0 = background, 255 = nodata (where the source
  is nodata), tiled, deflate, CRS and transform of the source, provenance tags;
* the optional float32 score raster (nodata -1);
* the optional vectors (see :mod:`geoseg.vector`): every prompt's polygons, nodata left out,
  simplified and cleared of small pieces and holes when asked (``simplify``, ``min_area``: the
  vectors only, the mask is never changed; both recorded in the provenance under ``vector``).

Every output is written to a temporary file in its destination folder and moved
into place with :func:`os.replace` only when everything succeeded; on error all
temporary files are removed. Memory is bounded by the block size, not the scene.

Scene-level presence: a text answer whose window's presence fell in the segmenter's grey band
(:class:`geoseg.unified.decision.ScenePresence`) arrives as ``WindowResult.held``. It is kept
aside as packed bits in a scratch file, and :meth:`SceneWriter.finish` paints it only when some
window of the same prompt proved the target present (``WindowResult.present``); otherwise it is
dropped, as the window's own gate would have done.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoseg.errors import GeosegError
from geoseg.metadata import bounded_json
from geoseg.prompts import Prompt
from geoseg.raster.areas import MaskArea
from geoseg.raster.io import GDAL_ENV, RasterSource
from geoseg.raster.tiling import intersect, iter_blocks
from geoseg.vector import (
    PolygonCollector,
    check_vector_options,
    replace_vector,
    vector_files,
    vector_provenance,
    write_vectors,
)

log = logging.getLogger(__name__)

MASK_NODATA = 255
SCORE_NODATA = -1.0
BLOCK = 1024


@dataclass
class WindowResult:
    """The answer of one prompt in one window, in scene pixel coordinates.

    Attributes:
        prompt_index: index of the prompt in the scene's prompt list.
        window: the scene window the arrays cover.
        mask: boolean array covering ``window``; it may be coarser than the window
            (a large context read decimated): it is then upsampled (nearest) when written.
        score: the segmenter's confidence for this window's mask.
        prob: optional float32 per-pixel probability with the shape of ``mask``.
        present: whether this window's presence decision found the target (None: the segmenter
            made no such decision, e.g. a point/box prompt or a backend without a presence head).
        held: the answer of a window whose presence fell in the grey band (``mask`` is then
            empty), with the shape of ``mask``: painted only if the scene proves the target present.
    """

    prompt_index: int
    window: Window
    mask: np.ndarray
    score: float
    prob: np.ndarray | None = None
    present: bool | None = None
    held: np.ndarray | None = None

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())


@dataclass
class WriteSummary:
    """What :meth:`SceneWriter.finish` wrote."""

    outputs: dict[str, str]
    mask_pixels: int
    mask_area: float
    area_unit: str
    n_polygons: int
    prompt_scores: list[float | None] = field(default_factory=list)


def resample_part(arr: np.ndarray, window: Window, part: Window) -> np.ndarray:
    """The piece of ``arr`` (covering ``window``, possibly at lower resolution) that covers ``part``."""
    h, w = arr.shape[:2]
    r0 = int(part.row_off - window.row_off)
    c0 = int(part.col_off - window.col_off)
    ph, pw = int(part.height), int(part.width)
    if (h, w) == (int(window.height), int(window.width)):
        return arr[r0:r0 + ph, c0:c0 + pw]
    rows = np.minimum(((np.arange(r0, r0 + ph) + 0.5) * h / window.height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(c0, c0 + pw) + 0.5) * w / window.width).astype(np.int64), w - 1)
    return arr[rows][:, cols]


def temp_path_for(path: str) -> str:
    """A fresh temporary path in the folder of ``path`` (so :func:`os.replace` is atomic)."""
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp" + ext, dir=folder)
    os.close(fd)
    os.unlink(tmp)
    return tmp


def _open(path: str, mode: str, **kw):
    """rasterio.open without the warning a non-georeferenced image's outputs would raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, mode, **kw)


def _remove(path: str | None) -> None:
    if path and os.path.exists(path):
        try:
            os.unlink(path)
        except OSError:  # pragma: no cover
            log.warning("could not remove temporary file %s", path)


class SceneWriter:
    """Paint window results into scene outputs; see the module docstring.

    Use as a context manager: leaving the block with an exception removes every
    temporary file and leaves no output behind; call :meth:`finish` inside the block
    to produce the outputs.

    Args:
        source: the scene (gives size, CRS, transform and the nodata mask).
        output: path of the mask GeoTIFF.
        prompts: the scene's prompts (their index is the label in the scratch raster;
            ``describe()`` fills the vector ``prompt`` field).
        provenance: model/version facts written into tags and vector metadata.
        score_raster: optional path of the float32 score raster.
        vector: optional ``.gpkg``, ``.fgb`` or ``.shp`` (source CRS) or ``.geojson`` (EPSG:4326) path.
        simplify: simplify each prompt's polygons as a coverage, tolerance in pixels (0: exact outlines).
        min_area: fill holes and drop polygons under this area, in the layer's ``area`` unit (0: keep all).
    """

    def __init__(self, source: RasterSource, output: str, prompts: Sequence[Prompt], provenance: dict,
                 score_raster: str | None = None, vector: str | None = None, block: int = BLOCK,
                 simplify: float = 0.0, min_area: float = 0.0) -> None:
        check_vector_options(simplify, min_area, vector)
        self.source = source
        self.output = os.fspath(output)
        self.prompts = list(prompts)
        self.provenance = dict(provenance)
        # the segmenter's scene presence rule: recorded only in outputs where it could act (finish)
        self._scene_rule = self.provenance.pop("scene_presence", None)
        self.score_raster = os.fspath(score_raster) if score_raster else None
        self.vector = os.fspath(vector) if vector else None
        self.simplify, self.min_area = float(simplify), float(min_area)
        self.block = block
        self._label_dtype = np.uint16 if len(self.prompts) < 65535 else np.int32
        self._union_path: str | None = None
        self._scores_path: str | None = None
        self._union: rasterio.io.DatasetWriter | None = None
        self._collector: PolygonCollector | None = None
        self._scores: rasterio.io.DatasetWriter | None = None
        self._temps: list[str] = []
        self._made_dirs: list[str] = []
        self._score_sum = np.zeros(len(self.prompts), dtype=np.float64)
        self._score_px = np.zeros(len(self.prompts), dtype=np.int64)
        self._decided = np.zeros(len(self.prompts), dtype=np.int64)  # windows with a presence decision
        self._positive = np.zeros(len(self.prompts), dtype=bool)  # some window proved the target present
        self._held: list[tuple[int, Window, tuple[int, int], float, bool, int, int]] = []
        self._held_file = None
        self._env: rasterio.Env | None = None

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> SceneWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abort=exc_type is not None)

    def open(self) -> None:
        """Create the output folders and the scratch rasters next to the outputs.

        All or nothing: if any step fails (a folder that cannot be made, a full disk),
        everything made so far -- scratch files and the folders made for the outputs --
        is removed before the error propagates, because a failing ``__enter__`` means
        ``__exit__`` (the usual cleanup) never runs.
        """
        try:
            self._open()
        except BaseException:
            self.close(abort=True)
            for d in reversed(self._made_dirs):
                try:
                    os.rmdir(d)
                except OSError:  # not empty (something else landed there) or already gone
                    pass
            self._made_dirs = []
            raise

    def _open(self) -> None:
        for p in (self.output, self.score_raster, self.vector):
            if p:
                self._makedirs(os.path.dirname(os.path.abspath(p)))
        self._env = rasterio.Env(**GDAL_ENV)
        self._env.__enter__()
        src = self.source
        base = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "tiled": True,
                "blockxsize": 256, "blockysize": 256, "SPARSE_OK": "TRUE", "BIGTIFF": "IF_SAFER",
                **src.profile_for_output()}
        self._union_path = temp_path_for(self.output)
        self._temps.append(self._union_path)
        self._union = _open(self._union_path, "w+", dtype="uint8", **base)
        # a text prompt's tiles overlap and their answers are united (geoseg.windows.STITCHING)
        text_labels = [i + 1 for i, p in enumerate(self.prompts) if not p.points and p.box is None]
        self._collector = PolygonCollector(src.width, src.height, text_labels) if self.vector else None
        if self.score_raster:
            self._scores_path = temp_path_for(self.score_raster)
            self._temps.append(self._scores_path)
            self._scores = _open(self._scores_path, "w+", dtype="float32", **base)

    def _makedirs(self, folder: str) -> None:
        """Make ``folder`` and its missing parents, remembering each one made (to undo if :meth:`open` fails)."""
        missing: list[str] = []
        while folder and not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:  # made meanwhile by someone else: theirs, not ours to remove
                if not os.path.isdir(d):
                    raise
                continue
            self._made_dirs.append(d)

    def close(self, abort: bool = False) -> None:
        """Close scratch files and remove every temporary file (outputs already moved stay). Safe to call twice."""
        if self._held_file is not None:
            self._held_file.close()
            self._held_file = None
        for ds in (self._union, self._scores):
            if ds is not None and not ds.closed:
                ds.close()
        self._union = self._scores = None
        for p in self._temps:
            _remove(p)
        self._temps = []
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None

    # -- painting --------------------------------------------------------------------
    def add(self, result: WindowResult) -> None:
        """Paint one window result into the union mask, polygonize it under its prompt, keep the max score."""
        if self._union is None:
            raise RuntimeError("SceneWriter.add() outside its context")
        scene = Window(0, 0, self.source.width, self.source.height)
        win = intersect(result.window, scene)
        if win is None:
            return
        if result.present is not None:
            self._decided[result.prompt_index] += 1
            self._positive[result.prompt_index] |= bool(result.present)
        if result.held is not None and result.held.any():
            self._hold(result)
        self._paint(result, win, scores=True)

    def _hold(self, result: WindowResult) -> None:
        """Keep a grey-band answer aside (packed bits in a scratch file) until :meth:`finish` knows the scene."""
        if self._held_file is None:
            path = temp_path_for(self.output)
            self._temps.append(path)
            self._held_file = open(path, "w+b")  # noqa: SIM115 - closed by close()
        bits = np.packbits(result.held.astype(bool, copy=False)).tobytes()
        self._held.append((result.prompt_index, result.window, tuple(result.held.shape), float(result.score),
                           result.prob is not None, self._held_file.tell(), len(bits)))
        self._held_file.write(bits)

    def _paint_held(self) -> None:
        """Paint the held answers of the prompts some window proved present; record the rule in the provenance."""
        painted = 0
        if self._held_file is not None:
            self._held_file.flush()
        scene = Window(0, 0, self.source.width, self.source.height)
        for index, window, shape, score, had_prob, offset, size in self._held:
            if not self._positive[index]:
                continue
            self._held_file.seek(offset)
            bits = np.frombuffer(self._held_file.read(size), dtype=np.uint8)
            mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
            # the score raster already holds this window's probabilities (add painted them)
            self._paint(WindowResult(index, window, mask, score), intersect(window, scene), scores=not had_prob)
            painted += 1
        if self._scene_rule is not None and (self._decided > 1).any():
            self.provenance["scene_presence"] = {**self._scene_rule, "held_windows": len(self._held),
                                                 "painted_windows": painted}

    def _paint(self, result: WindowResult, win: Window, scores: bool) -> None:
        """Paint ``result`` (within ``win``) into the union mask, the polygons and, with ``scores``, the score raster."""
        has_mask = not result.is_empty
        if has_mask:
            self._score_sum[result.prompt_index] += float(result.score) * float(result.mask.sum())
            self._score_px[result.prompt_index] += int(result.mask.sum())
        if not has_mask and (self._scores is None or not scores):
            return
        label = result.prompt_index + 1
        for part in iter_blocks(int(win.width), int(win.height), self.block):
            part = Window(win.col_off + part.col_off, win.row_off + part.row_off, part.width, part.height)
            m = resample_part(result.mask, result.window, part).astype(bool, copy=False)
            if m.any():
                cur = self._union.read(1, window=part)
                if (m & (cur == 0)).any():
                    cur[m] = 1
                    self._union.write(cur, 1, window=part)
                if self._collector is not None:
                    own = m & self.source.read_valid(part)
                    self._collector.add_block(np.where(own, label, 0).astype(self._label_dtype), part)
            if self._scores is not None and scores:
                if result.prob is not None:
                    p = resample_part(result.prob, result.window, part).astype(np.float32)
                else:
                    p = m.astype(np.float32) * np.float32(result.score)
                cur_s = self._scores.read(1, window=part)
                np.maximum(cur_s, p, out=cur_s)
                self._scores.write(cur_s, 1, window=part)

    def prompt_scores(self) -> list[float | None]:
        """Per prompt: the pixel-weighted mean score of its non-empty window results (``None`` if empty)."""
        return [float(s / n) if n else None for s, n in zip(self._score_sum, self._score_px)]

    # -- final pass ------------------------------------------------------------------
    def _tags(self) -> dict:
        prompts = [p.describe() for p in self.prompts]
        return {
            "prompt": " || ".join(prompts)[:4000],
            "prompts_json": bounded_json([p.to_dict() for p in self.prompts], 30000),
            "model": str(self.provenance.get("model", "")),
            "geoseg_version": str(self.provenance.get("geoseg_version", "")),
            "provenance_json": bounded_json(self.provenance, 8000),
            "source": os.path.basename(self.source.path),
            "values": "1=target, 0=background, 255=nodata",
        }

    def finish(self) -> WriteSummary:
        """Stream the scratch rasters into the final outputs and move them into place."""
        if self._union is None:
            raise RuntimeError("SceneWriter.finish() outside its context")
        self._paint_held()
        src = self.source
        prof = {"driver": "GTiff", "count": 1, "tiled": True, "blockxsize": 256, "blockysize": 256,
                "compress": "deflate", "BIGTIFF": "IF_SAFER", **src.profile_for_output()}
        tmp_mask = temp_path_for(self.output)
        self._temps.append(tmp_mask)
        tmp_score = None
        if self._scores is not None and self.score_raster:
            tmp_score = temp_path_for(self.score_raster)
            self._temps.append(tmp_score)
        mask_px, area = 0, MaskArea(src)
        if self.vector:  # the mask's tags say how its polygons were shaped too
            self.provenance["vector"] = vector_provenance(self.simplify, self.min_area, area.unit)
        tags = self._tags()
        dst_s = None
        with _open(tmp_mask, "w", dtype="uint8", nodata=MASK_NODATA, predictor=2, **prof) as dst:
            dst.update_tags(**tags)
            dst.set_band_description(1, "mask")
            if tmp_score:
                dst_s = _open(tmp_score, "w", dtype="float32", nodata=SCORE_NODATA, **prof)
                dst_s.update_tags(**tags)
                dst_s.set_band_description(1, "score")
            try:
                for win in iter_blocks(src.width, src.height, self.block):
                    mask = self._union.read(1, window=win)
                    valid = src.read_valid(win)
                    if not valid.all():
                        mask[~valid] = 0
                    mask_px += int(mask.sum())
                    area.add(mask == 1, win)  # pixel by pixel: geographic pixels differ in size
                    mask[~valid] = MASK_NODATA
                    dst.write(mask, 1, window=win)
                    if dst_s is not None and self._scores is not None:
                        sc = self._scores.read(1, window=win)
                        sc[~valid] = SCORE_NODATA
                        dst_s.write(sc, 1, window=win)
                add_overviews(dst, Resampling.mode)
                if dst_s is not None:
                    add_overviews(dst_s, Resampling.average)
            finally:
                if dst_s is not None:
                    dst_s.close()
        outputs = {"mask": self.output}
        n_polygons = 0
        tmp_vec = None
        scores = self.prompt_scores()
        if self._collector is not None and self.vector:
            tmp_vec = temp_path_for(self.vector)
            self._temps.extend(vector_files(tmp_vec))
            n_polygons = write_vectors(self._collector.polygons(), tmp_vec, self.vector, src, self.prompts, scores,
                                       self.provenance, simplify=self.simplify, min_area=self.min_area)
        # everything succeeded: move into place
        os.replace(tmp_mask, self.output)
        if tmp_score and self.score_raster:
            os.replace(tmp_score, self.score_raster)
            outputs["score_raster"] = self.score_raster
        if tmp_vec and self.vector:
            replace_vector(tmp_vec, self.vector)
            outputs["vector"] = self.vector
        return WriteSummary(outputs=outputs, mask_pixels=mask_px, mask_area=area.total, area_unit=area.unit,
                            n_polygons=n_polygons, prompt_scores=scores)


#: outputs larger than this (pixels on a side) get internal overviews, down to about this size
OVERVIEW_MIN = 512


def overview_factors(width: int, height: int, smallest: int = OVERVIEW_MIN) -> list[int]:
    """Powers of two that shrink a ``width`` x ``height`` raster step by step to about ``smallest`` px on a side."""
    factors, f = [], 2
    while max(width, height) / f >= smallest / 2 and max(width, height) > smallest:
        factors.append(f)
        f *= 2
    return factors


def add_overviews(dst, resampling: Resampling) -> None:
    """Internal overviews for a written output, so QGIS shows a large mask at any zoom without first
    building pyramids (``gdaladdo``). The mask uses ``mode`` (a class map: no blended values), the
    score raster ``average``; nodata pixels are left out of both. Small outputs get none."""
    factors = overview_factors(dst.width, dst.height)
    if factors:
        dst.build_overviews(factors, resampling)
        dst.update_tags(ns="rio_overview", resampling=resampling.name)


def check_output_paths(output: str, score_raster: str | None = None, vector: str | None = None,
                       source_path: str | None = None) -> None:
    """Raise a :class:`GeosegError` before any work when an output path cannot be used."""
    paths = [p for p in (output, score_raster, vector) if p]
    if len(set(map(os.path.abspath, paths))) != len(paths):
        raise GeosegError("two outputs have the same path", "give distinct paths to -o, --score-raster and --vector")
    for p in paths:
        if source_path and os.path.abspath(p) == os.path.abspath(source_path):
            raise GeosegError(f"output {p} would overwrite the input image", "write the outputs to another path")
        if os.path.isdir(p):
            raise GeosegError(f"output {p} is a folder", "give a file path such as out/mask.tif")
    for p in (output, score_raster):
        if p and not p.lower().endswith((".tif", ".tiff")):
            raise GeosegError(f"raster output {p} must be a GeoTIFF", "give a path ending in .tif")
    for p in vector_files(vector) if vector else []:  # a Shapefile's companions too
        if os.path.isdir(p):
            raise GeosegError(f"output {p} (part of {vector}) is a folder", "remove it or give another --vector path")
    for p in paths:
        check_writable_folder(p)


def check_writable_folder(path: str) -> None:
    """Raise a :class:`GeosegError` when the file ``path`` could not be created.

    The writer makes the missing folders above ``path``, writes temporary files next to
    it and moves them into place, so what must hold is: the nearest existing ancestor
    folder is a folder (not a file) that this process may write to and enter. Checked
    before any work, so a bad path fails in a second with one line, not after the
    whole segmentation with a traceback. (Root with CAP_DAC_OVERRIDE passes the access
    check on any folder, as it can indeed write there; a read-only file system fails it.)
    """
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise GeosegError(f"cannot write output {path}: {folder} is a file, not a folder",
                          "give an output path inside a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GeosegError(f"cannot write output {path}: no permission to write in folder {folder}",
                          "give an output path in a folder you can write to, or change its permissions")
