"""The main job: segment one scene of any size from point, box or text prompts.

:func:`segment` is the Python twin of ``geoseg segment``. It is built from three
reusable stages so that a batch runner (e.g. Dask over many scenes or windows) can
call them separately:

1. **Planning** — :func:`plan_windows` (:mod:`geoseg.windows`) turns a scene size and its prompts into
   :class:`WindowTask` objects. Point/box prompts touch one context window around
   them (read decimated when the prompt is larger than a tile); text prompts touch
   every tile of an overlapping grid whose cores partition the scene.
   :func:`group_tasks` groups tasks that share a read window so the image is set once.
2. **Processing** — :func:`process_window` (:mod:`geoseg.windows`) is a pure function of (source, tasks of one
   window, segmenter): it reads the window as display RGB with the scene-level
   stretch, runs the segmenter once per prompt, and returns
   :class:`~geoseg.raster.writer.WindowResult` objects (mask, score, optional
   probability, cropped to the task's core and to valid pixels). It writes nothing,
   so it can run on any worker that can open the source path.
3. **Writing** — :class:`~geoseg.raster.writer.SceneWriter` accepts results in any
   order and produces the mask GeoTIFF, the optional score raster and vectors,
   window by window, with temp files moved into place at the end.

Example (what :func:`segment` does)::

    src = open_source("scene.tif")
    prompts = prepare_prompts(src, [Prompt(box=(10, 10, 90, 90))])
    seg, notes = build_backend("classical", prompts)
    tasks = plan_windows(src.width, src.height, prompts, tile_size=1024, overlap=128)
    with SceneWriter(src, "mask.tif", prompts, seg.provenance(), vector="out.gpkg") as w:
        for group in group_tasks(tasks):
            for result in process_window(src, group, seg):
                w.add(result)
        summary = w.finish()
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from geoseg.backends import (
    DEFAULT_BACKEND,
    FALLBACK_BACKEND,
    NO_CHECKPOINT_BACKENDS,
    build_backend,
    check_backend_args,
)
from geoseg.errors import PromptError
from geoseg.notes import note
from geoseg.progress import progress
from geoseg.prompt_layer import PromptLayer, read_prompt_layer
from geoseg.prompts import Prompt, as_boxes, as_points
from geoseg.raster.io import RasterSource, open_source
from geoseg.raster.tiling import check_tiling
from geoseg.raster.writer import SceneWriter, check_output_paths
from geoseg.segmenters import Segmenter
from geoseg.unified.instruction_check import check_instructions
from geoseg.vector import check_vector_crs, check_vector_options, vector_driver
from geoseg.windows import (
    WindowTask,
    group_tasks,
    input_provenance,
    plan_windows,
    predict_tasks,
    process_window,
    tile_for,
)

log = logging.getLogger(__name__)

# the stages' names stay importable from here (batch, the predictor, serve and user code use them)
__all__ = ["DEFAULT_BACKEND", "FALLBACK_BACKEND", "NO_CHECKPOINT_BACKENDS", "PromptLike", "SegmentResult",
           "WindowTask", "build_backend", "build_prompts", "check_backend_args", "empty_answer_hints",
           "group_tasks", "input_provenance", "layer_prompts", "normalize_prompts", "plan_windows",
           "predict_tasks", "prepare_prompts", "process_window", "segment", "tile_for"]


PromptLike = Prompt | dict


# --------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------
def build_prompts(points: Iterable[Sequence[float]] = (), negative_points: Iterable[Sequence[float]] = (),
                  boxes: Iterable[Sequence[float]] = (), texts: Iterable[str] = ()) -> list[Prompt]:
    """Group command-line style prompts into :class:`Prompt` objects (one per target).

    Rules: every box is one target; points (positive or negative) that fall inside a box
    refine that box; the remaining points form one more target (SAM semantics: several
    positive points mark one object) when at least one of them is positive; every text
    is its own target over the whole scene. Combine text and geometry in one target
    through the Python API (``Prompt(text=..., box=...)``).

    Raises:
        PromptError: nothing given, or negative points with nothing to refine.
    """
    pos = as_points(points)
    neg = as_points(negative_points, "negative_points")
    tagged = [(p, 1) for p in pos] + [(p, 0) for p in neg]
    out: list[Prompt] = []
    used: set[int] = set()
    for b in as_boxes(boxes):
        mine = [i for i, ((x, y), _) in enumerate(tagged) if i not in used and b[0] <= x <= b[2] and b[1] <= y <= b[3]]
        used.update(mine)
        out.append(Prompt(points=tuple(tagged[i][0] for i in mine), labels=tuple(tagged[i][1] for i in mine), box=b))
    rest = [tagged[i] for i in range(len(tagged)) if i not in used]
    if rest:
        if not any(lab == 1 for _, lab in rest):
            if not out:
                raise PromptError("negative points alone do not mark a target", "add a --point or a --box on the target")
            log.warning("%d negative point(s) outside every box were ignored", len(rest))
        else:
            out.append(Prompt(points=tuple(p for p, _ in rest), labels=tuple(lab for _, lab in rest)))
    for text in texts:
        out.append(Prompt(text=text))
    if not out:
        raise PromptError("no prompt given", "give --point X,Y, --box X0,Y0,X1,Y1 or --text '...'")
    return out


def normalize_prompts(prompts: PromptLike | Iterable[PromptLike] | None) -> list[Prompt]:
    """Accept a :class:`Prompt`, a dict (``Prompt.to_dict`` form) or a sequence of them."""
    if prompts is None:
        return []
    if isinstance(prompts, (Prompt, dict)):
        prompts = [prompts]
    out = [p if isinstance(p, Prompt) else Prompt.from_dict(p) for p in prompts]
    for p in out:
        if p.is_empty:
            raise PromptError("a prompt is empty", "give points, a box or text in every prompt")
    return out


def prepare_prompts(source: RasterSource, prompts: Sequence[Prompt], prompt_crs: str | None = None) -> list[Prompt]:
    """Prompts in scene pixels, checked to lie on the image, boxes clipped to it.

    Raises:
        PromptError / InputError: a prompt outside the image or a CRS that cannot be used; map
        coordinates on a scene without CRS (the error says why it has none:
        :func:`geoseg.georef.no_crs_error`).
    """
    from dataclasses import replace

    from geoseg.georef import prompt_to_pixels

    if prompt_crs and source.crs is None and any(p.points or p.box is not None for p in prompts):
        from geoseg.georef import no_crs_error

        raise no_crs_error(source, f"--prompt-crs {prompt_crs} coordinates cannot be placed on it",
                           "give pixel coordinates (drop --prompt-crs)")
    out = []
    for p in prompts:
        if not prompt_crs:
            p.check_inside(source.width, source.height)
            q = p
        else:
            q = prompt_to_pixels(p, prompt_crs, source.crs, source.transform)
            try:
                q.check_inside(source.width, source.height)
            except PromptError:  # say it in the coordinates the user gave, not the pixels they became
                miss = "does not overlap" if p.box is not None else "falls outside"
                what = "box" if p.box is not None else "point(s)"
                raise PromptError(f"{what} {_coords(p)} in {prompt_crs} {miss} the {source.width}x{source.height} "
                                  f"image (at pixel {_coords(q, 1)})",
                                  f"check the coordinates and --prompt-crs: the image covers "
                                  f"{_bounds_in(source, prompt_crs)} in {prompt_crs}") from None
        if q.box is not None:
            x0, y0, x1, y1 = q.box
            q = replace(q, box=(max(0.0, x0), max(0.0, y0), min(float(source.width), x1), min(float(source.height), y1)))
        out.append(q)
    return out


def _coords(p: Prompt, digits: int = 6) -> str:
    """A prompt's box or points for an error message, rounded to ``digits`` decimals (6: as given; 1: pixels)."""
    def num(v: float) -> str:
        return f"{round(v, digits):.12g}"
    if p.box is not None:
        return "(" + ", ".join(num(v) for v in p.box) + ")"
    return ", ".join(f"({num(x)}, {num(y)})" for x, y in p.points)


def _bounds_in(source: RasterSource, crs: str) -> str:
    """The image's extent in ``crs`` as ``x0..x1, y0..y1`` (or 'an unknown extent')."""
    from rasterio.warp import transform_bounds

    from geoseg.georef import parse_crs

    try:
        x0, y0, x1, y1 = transform_bounds(source.crs, parse_crs(crs), *source.dataset.bounds)
    except Exception:  # noqa: BLE001 - only a hint inside an error that is already being raised
        return "an unknown extent"
    digits = 2 if parse_crs(crs).is_projected else 6
    return f"x {round(x0, digits):.12g}..{round(x1, digits):.12g}, y {round(y0, digits):.12g}..{round(y1, digits):.12g}"


def layer_prompts(layer: PromptLayer, source: RasterSource, others: Sequence[Prompt] = ()) -> list[Prompt]:
    """The features of ``layer`` that fall on ``source``, in its pixels, boxes clipped to it.

    Raises:
        PromptError: none does and ``others`` is empty, so the scene has nothing to answer.
    """
    name = os.path.basename(source.path)
    if layer.crs is not None and source.crs is None:
        from geoseg.georef import no_crs_error

        raise no_crs_error(source, f"the features of {layer.path} cannot be placed on it",
                           "give a prompt file in pixel coordinates without a CRS")
    out = layer.on_scene(source.crs, source.transform, source.width, source.height, name)
    if not out and not others:
        raise PromptError(f"none of the {len(layer)} feature(s) of {layer.path} fall on {name}",
                          "check that the layer covers the scene and has the right CRS")
    return prepare_prompts(source, out, None)


# --------------------------------------------------------------------------------------
# the whole job
# --------------------------------------------------------------------------------------
@dataclass
class SegmentResult:
    """What :func:`segment` did; ``to_dict()`` is the ``--json`` summary."""

    image: str
    outputs: dict[str, str]
    backend: str
    n_prompts: int
    n_windows: int
    n_objects: int | None
    mask_pixels: int
    mask_area: float
    area_unit: str
    prompt_scores: list[float | None]
    timings: dict[str, float]
    width: int
    height: int
    crs: str | None
    notes: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def band_choice_note(source: RasterSource) -> str | None:
    """A line saying which bands were read as R,G,B when the file declares no colour interpretation.

    Without ``--bands`` such a file is read by its band names when they name red, green and blue
    (:func:`geoseg.raster.io.default_bands`), else as bands 1,2,3: on the usual Blue, Green, Red,
    NIR, ... stack without names that is Blue shown as red, and text answers change with it (a
    stack of Sentinel-2 reflectance answered "the water" with a different mask under
    ``--bands 3,2,1``). A user who did not choose must be told what was chosen, and how it was.
    Call it only when no bands were given. ``None`` when there was nothing to choose: the file
    declares R, G and B, or has at most three bands in an order its names (if any) agree with.
    """
    from geoseg.raster.io import declared_rgb, named_rgb

    ds = source.dataset
    if declared_rgb(ds) is not None:
        return None  # the file says which bands are R, G and B, and they were read
    named = named_rgb(ds.descriptions)
    bands = tuple(source.bands)
    if (named is None and source.count <= 3) or named == bands == (1, 2, 3):
        return None
    names = [(d or "").strip() for d in ds.descriptions]
    listed = ", ".join(f"{i + 1}={n}" for i, n in enumerate(names) if n)
    read = (f"read bands {','.join(map(str, bands))} of {os.path.basename(source.path)} ({source.count} bands"
            f"{': ' + listed if listed else ''}) as R,G,B")
    if named == bands:
        return f"{read}, chosen by their band names as the file declares no colour interpretation; give --bands to choose others"
    which = (f"its band names say red, green, blue are {','.join(map(str, named))}: give --bands "
             f"{','.join(map(str, named))}" if named is not None
             else "give --bands R,G,B to choose (e.g. --bands 3,2,1 for a Blue, Green, Red, ... stack)")
    return f"{read}, as it declares no colour interpretation; {which}"


class ValidityMap(Protocol):
    """What :func:`prompt_on_nodata` asks of a scene: a :class:`RasterSource`, or the server's open image."""

    def any_valid(self, window: Any) -> bool: ...


def prompt_on_nodata(source: ValidityMap, prompt: Prompt) -> bool:
    """Whether every pixel a point or box prompt marks is nodata (``False`` for a text-only prompt).

    The box's pixels, or the pixel under each positive point, are read through ``source``'s
    validity mask at full resolution, window by window (:meth:`RasterSource.any_valid`), so a
    large box does not bring the scene into memory.
    """
    from rasterio.windows import Window

    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        c0, r0 = math.floor(x0), math.floor(y0)
        return not source.any_valid(Window(c0, r0, max(1, math.ceil(x1) - c0), max(1, math.ceil(y1) - r0)))
    marked = [(x, y) for (x, y), label in zip(prompt.points, prompt.labels) if label]
    return bool(marked) and not any(source.any_valid(Window(math.floor(x), math.floor(y), 1, 1)) for x, y in marked)


#: the advice for a point or box that lies on nodata only (an empty answer that no backend can mend)
NODATA_PROMPT_HINT = ("it lies on nodata pixels only; move it onto the image's valid data "
                      "(check --prompt-crs if map coordinates were meant)")


def empty_answer_advice(segmenter: Segmenter, prompt: Prompt, source: ValidityMap | None = None,
                        nodata_hint: str = NODATA_PROMPT_HINT) -> str | None:
    """The advice for one prompt that found nothing: ``nodata_hint`` when it lies on ``source``'s nodata only
    (:func:`prompt_on_nodata`; the server passes its open image and its own wording), else the backend's."""
    if source is not None and prompt_on_nodata(source, prompt):
        return nodata_hint
    return segmenter.empty_answer_hint(prompt)


def empty_answer_hints(segmenter: Segmenter, prompts: Sequence[Prompt], scores: Sequence[float | None],
                       source: RasterSource | None = None) -> list[str]:
    """One line per prompt that found nothing in the scene (``scores`` entry ``None``), with advice.

    A point or box that lies on ``source``'s nodata pixels only (outside a rotated or clipped
    scene's valid data, or on its nodata value) is told so (:func:`prompt_on_nodata`): the
    backend's advice (rephrase, another class) does not help there. Other prompts get the
    backend's advice (:meth:`Segmenter.empty_answer_hint`).
    """
    hints = []
    for prompt, score in zip(prompts, scores):
        if score is None:
            advice = empty_answer_advice(segmenter, prompt, source)
            hints.append(f"nothing found for {prompt.describe()!r}" + (f": {advice}" if advice else ""))
    return hints


def segment(image: str | os.PathLike, prompts: PromptLike | Iterable[PromptLike] | None = None,
            output: str | os.PathLike = "mask.tif", *, points: Iterable[Sequence[float]] = (),
            negative_points: Iterable[Sequence[float]] = (), boxes: Iterable[Sequence[float]] = (),
            text: str | Iterable[str] | None = None, backend: str | None = None,
            segmenter: Segmenter | None = None, checkpoint: str | None = None, device: str = "auto",
            bands: str | Sequence[int] | None = None, tile_size: int = 1024, overlap: int = 128,
            prompt_crs: str | None = None, vector: str | os.PathLike | None = None,
            score_raster: str | os.PathLike | None = None, stretch: list[list[float]] | None = None,
            backend_options: Mapping[str, Any] | None = None,
            prompt_file: str | os.PathLike | None = None, simplify: float = 0.0,
            min_area: float = 0.0) -> SegmentResult:
    """Segment one scene and write a mask GeoTIFF (and optionally vectors and a score raster).

    Args:
        image: GeoTIFF (any bands/dtype, with or without CRS/nodata), JPG or PNG.
        prompts: :class:`Prompt` objects (or dicts); each is one target. May be combined
            with the CLI-style ``points``/``negative_points``/``boxes``/``text`` keywords,
            grouped by :func:`build_prompts`.
        output: the mask GeoTIFF (uint8: 1 target, 0 background, 255 nodata).
        backend: registry name (default ``unified``, falling back to ``classical`` for
            point/box prompts when it is unavailable); ignored when ``segmenter`` is given.
        segmenter: an already built segmenter (e.g. reused across scenes).
        checkpoint, device: passed to the backend.
        backend_options: the backend's own keyword arguments (see :func:`build_backend`).
        bands: 1-based bands to read as RGB (``"4,3,2"``), or one band for grey.
        tile_size, overlap: the window grid for text prompts and the largest window
            a point/box prompt is processed at.
        prompt_crs: CRS of the prompt coordinates (``"EPSG:4326"``); pixels when ``None``.
        prompt_file: a vector file whose point / polygon features are one target each
            (:mod:`geoseg.prompt_layer`); features that miss the scene are left out.
        vector: ``.gpkg``, ``.fgb`` or ``.shp`` (source CRS) or ``.geojson`` (EPSG:4326) polygons.
        simplify: simplify each prompt's polygons as one coverage (valid, no overlaps), tolerance in
            pixels, the same in any CRS: ``1`` removes the pixel staircases; ``0`` keeps the exact
            pixel outlines. Needs ``vector``.
        min_area: fill holes and drop polygons smaller than this, in the layer's ``area`` unit (m²
            for a georeferenced scene, pixels otherwise). Needs ``vector``. Neither option changes
            the mask raster; both are recorded in the provenance (``vector``).
        score_raster: optional float32 score GeoTIFF.
        stretch: a precomputed scene stretch (per band ``[lo, hi]``).

    Returns:
        A :class:`SegmentResult` summary.

    Raises:
        GeosegError: bad input (one line naming the fix); no output is left behind.
    """
    t0 = time.perf_counter()
    output = os.fspath(output)
    vector = os.fspath(vector) if vector else None
    score_raster = os.fspath(score_raster) if score_raster else None
    texts = [] if text is None else [text] if isinstance(text, str) or not isinstance(text, Iterable) else list(text)
    plist = normalize_prompts(prompts)
    if points or negative_points or boxes or texts:
        plist += build_prompts(points, negative_points, boxes, texts)
    layer = read_prompt_layer(prompt_file, prompt_crs) if prompt_file is not None else None
    if not plist and layer is None:
        raise PromptError("no prompt given", "give --point X,Y, --box X0,Y0,X1,Y1, --text '...' or --prompt-file")
    check_tiling(tile_size, overlap)
    check_output_paths(output, score_raster, vector, os.fspath(image))
    check_vector_options(simplify, min_area, vector)  # before the backend is built
    if vector:
        vector_driver(vector)
    src = open_source(image, bands, stretch=stretch)
    try:
        if vector:
            check_vector_crs(vector, src)
        given = [p.to_dict() for p in plist]
        plist = prepare_prompts(src, plist, prompt_crs)
        if layer is not None:
            plist += layer_prompts(layer, src, plist)
        notes: list[str] = []
        if segmenter is None:
            segmenter, notes = build_backend(backend, plist, checkpoint, device, backend_options)
        else:
            for p in plist:
                segmenter.check_prompt(p)
        checked = check_instructions(segmenter, plist)  # text unlike the model's training instructions
        notes += checked.notes
        band_note = band_choice_note(src) if bands is None else None
        if band_note is not None:  # a warning when a guess was made; the names chose right: for information
            from geoseg.raster.io import named_rgb

            note(band_note, logging.INFO if named_rgb(src.dataset.descriptions) == tuple(src.bands) else logging.WARNING)
            notes.append(band_note)
        t_open = time.perf_counter() - t0
        tasks = plan_windows(src.width, src.height, plist, tile_size, overlap, shared=segmenter.shares_windows)
        groups = group_tasks(tasks)
        provenance = {**segmenter.provenance(), "backend": segmenter.name, "prompts": [p.to_dict() for p in plist],
                      "input": input_provenance(src)}
        if prompt_crs is not None:  # the prompts above are in pixels: keep what the user gave too
            provenance["prompt_crs"], provenance["prompts_given"] = str(prompt_crs), given
        if layer is not None:
            provenance["prompt_file"] = layer.provenance()
        if checked.record is not None:  # the measure of every text prompt
            provenance["instruction_check"] = checked.record
        t_read = t_pred = 0.0
        with SceneWriter(src, output, plist, provenance, score_raster=score_raster, vector=vector,
                         simplify=simplify, min_area=min_area) as writer:
            for group in progress(groups, desc="segment", total=len(groups), unit="window"):
                ta = time.perf_counter()
                image_data = src.read_rgb(group[0].read, group[0].out_shape)
                tb = time.perf_counter()
                results = process_window(src, group, segmenter, image=image_data)
                tc = time.perf_counter()
                t_read += tb - ta
                t_pred += tc - tb
                for r in results:
                    writer.add(r)
            tw = time.perf_counter()
            summary = writer.finish()
            t_finish = time.perf_counter() - tw
        hints = empty_answer_hints(segmenter, plist, summary.prompt_scores, src)
        t_total = time.perf_counter() - t0
    finally:
        src.close()
    t_write = t_total - t_open - t_read - t_pred - t_finish
    res = SegmentResult(
        image=os.fspath(image), outputs=summary.outputs, backend=segmenter.name, n_prompts=len(plist),
        n_windows=len(groups), n_objects=summary.n_polygons if vector else None, mask_pixels=summary.mask_pixels,
        mask_area=summary.mask_area, area_unit=summary.area_unit, prompt_scores=summary.prompt_scores,
        timings={"open": round(t_open, 3), "read": round(t_read, 3), "predict": round(t_pred, 3),
                 "paint": round(max(0.0, t_write), 3),
                 "finish": round(t_finish, 3), "total": round(t_total, 3)},
        width=src.width, height=src.height, crs=src.crs.to_string() if src.crs else None, notes=notes,
        hints=hints,
    )
    for hint in res.hints:
        log.info(hint)
    log.info("segmented %s: %d prompt(s), %d window(s), %d mask pixels in %.2fs", image, len(plist), len(groups),
             summary.mask_pixels, t_total)
    return res
