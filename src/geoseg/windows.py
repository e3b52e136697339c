"""Windows of a scene and the work done in one: the planning and processing stages of :func:`geoseg.segment`.

:func:`plan_windows` turns a scene size and its prompts into :class:`WindowTask` objects
(point/box prompts: one context window each, or a shared window for backends that
share; text prompts: every tile of an overlapping grid, whose answers are united where
tiles overlap, see :data:`STITCHING`); :func:`group_tasks` groups the tasks that read the same window, so the image is
set once; :func:`process_window` reads one window and answers its tasks, writing
nothing, so a batch runner can call it on any worker that can open the source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.prompts import Prompt
from geoseg.raster.io import RasterSource
from geoseg.raster.tiling import Tile, check_tiling, context_window, plan_tiles
from geoseg.raster.writer import WindowResult
from geoseg.segmenters import Segmenter

log = logging.getLogger(__name__)

#: How the answers of a text prompt's overlapping tiles make one scene mask: each tile's whole answer is
#: kept and the writer unites them (a pixel is in the mask when a tile holding it marks it). Keeping only
#: each tile's core (its part up to the middle of each overlap) cut objects along straight seams where
#: neighbouring tiles, seeing different context, disagreed. Measured with the shipped model on the same
#: per-tile answers (``benchmarks/tile_stitching.py``; class texts, pooled IoU, mean of five classes,
#: difference to cores with its 95 % interval over scenes): validation region tile_6 at 512-px tiles
#: +0.018 [+0.009, +0.029], at 256 +0.014 [+0.008, +0.020]; held-out tile_7 at 512 +0.026 [+0.017,
#: +0.032], at 1024 +0.021 [+0.013, +0.030]; no scene without the class newly marked. A per-pixel backend answers the same in both tiles
#: of an overlap, so its stitched mask is still exactly its whole-image mask.
STITCHING = "union"


# --------------------------------------------------------------------------------------
# 1. planning
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowTask:
    """One prompt in one window.

    Attributes:
        prompt_index: index of the prompt in the scene's prompt list (its label in outputs).
        prompt: the prompt in scene pixel coordinates.
        read: the scene window to read.
        core: the part of ``read`` this task stands for (equal to ``read`` for point/box prompts; the
            cores of a text prompt's tiles partition the scene): a task whose core holds no valid
            pixel is not run. Its whole answer in ``read`` is kept (:data:`STITCHING`).
        out_shape: ``(h, w)`` the window is read at (smaller than ``read`` = decimated read).
    """

    prompt_index: int
    prompt: Prompt
    read: Window
    core: Window
    out_shape: tuple[int, int]

    @property
    def key(self) -> tuple:
        """Tasks with the same key read the same pixels (set the image once)."""
        r = self.read
        return (int(r.col_off), int(r.row_off), int(r.width), int(r.height), self.out_shape)


def geometry_bounds(p: Prompt) -> tuple[float, float, float, float]:
    xs = [x for x, _ in p.points]
    ys = [y for _, y in p.points]
    if p.box is not None:
        xs += [p.box[0], p.box[2]]
        ys += [p.box[1], p.box[3]]
    return min(xs), min(ys), max(xs), max(ys)


def plan_windows(width: int, height: int, prompts: Sequence[Prompt], tile_size: int = 1024,
                 overlap: int = 128, shared: bool = False) -> list[WindowTask]:
    """Plan the windows to process for a ``width`` x ``height`` scene.

    Point/box prompts get one context window around them (the geometry plus half its
    size as margin, at least 256 px for boxes and 512 px for points); when that window
    is larger than ``tile_size`` it is read decimated to fit ``tile_size``. With ``shared``
    (backends whose ``shares_windows`` is set, e.g. SAM) they instead share the whole scene
    when it fits ``tile_size``, else the grid tile that holds them with the most context
    (:func:`tile_for`), so prompts pay one image embedding per window; a prompt no tile
    holds keeps its own context window. Text-only prompts get every tile of the
    overlapping grid (:func:`geoseg.raster.tiling.plan_tiles`). Tasks are ordered so that
    tasks reading the same window are adjacent.
    """
    check_tiling(tile_size, overlap)
    tasks: list[WindowTask] = []
    text_prompts: list[int] = []
    whole = Window(0, 0, width, height)
    tiles = plan_tiles(width, height, tile_size, overlap) if shared and max(width, height) > tile_size else []
    for i, p in enumerate(prompts):
        if not p.points and p.box is None:
            text_prompts.append(i)
            continue
        bounds = geometry_bounds(p)
        if shared:
            tile = tile_for(tiles, bounds, width, height, overlap) if tiles else Tile(whole, whole)
            if tile is not None:
                tasks.append(WindowTask(i, p, tile.read, tile.read, (int(tile.read.height), int(tile.read.width))))
                continue
        win = context_window(bounds, width, height, margin=0.5, min_size=256 if p.box is not None else 512)
        h, w = int(win.height), int(win.width)
        scale = min(1.0, tile_size / max(h, w))
        out_shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        tasks.append(WindowTask(i, p, win, win, out_shape))
    if text_prompts:
        for tile in plan_tiles(width, height, tile_size, overlap):
            shape = (int(tile.read.height), int(tile.read.width))
            for i in text_prompts:
                tasks.append(WindowTask(i, prompts[i], tile.read, tile.core, shape))
    return tasks


def tile_for(tiles: Sequence[Tile], bounds: tuple[float, float, float, float], width: int, height: int,
             overlap: int) -> Tile | None:
    """The grid tile holding ``bounds`` with the most context around it, if it has enough.

    Context is the distance from the geometry to the nearest tile edge that is not a scene
    edge; enough is ``min(32, overlap / 2, a quarter of the geometry's size + 8)`` pixels.
    """
    x0, y0, x1, y1 = bounds
    best, best_margin = None, -np.inf
    for tile in tiles:
        r = tile.read
        left = x0 - r.col_off if r.col_off > 0 else np.inf
        top = y0 - r.row_off if r.row_off > 0 else np.inf
        right = r.col_off + r.width - x1 if r.col_off + r.width < width else np.inf
        bottom = r.row_off + r.height - y1 if r.row_off + r.height < height else np.inf
        inside = r.col_off <= x0 and x1 <= r.col_off + r.width and r.row_off <= y0 and y1 <= r.row_off + r.height
        margin = min(left, top, right, bottom)
        if inside and margin > best_margin:
            best, best_margin = tile, margin
    need = min(32.0, overlap / 2, 0.25 * max(x1 - x0, y1 - y0) + 8)
    return best if best is not None and best_margin >= need else None


def group_tasks(tasks: Sequence[WindowTask]) -> list[list[WindowTask]]:
    """Consecutive groups of tasks that share a read window (order preserved)."""
    groups: dict[tuple, list[WindowTask]] = {}
    for t in tasks:
        groups.setdefault(t.key, []).append(t)
    return list(groups.values())


# --------------------------------------------------------------------------------------
# 2. processing one window
# --------------------------------------------------------------------------------------
def process_window(source: RasterSource, tasks: Sequence[WindowTask], segmenter: Segmenter,
                   image: tuple[np.ndarray, np.ndarray] | None = None) -> list[WindowResult]:
    """Run ``segmenter`` on one window for each task; pure (reads, never writes).

    Args:
        source: the scene (reads use its bands and scene-level stretch).
        tasks: tasks sharing one read window (see :func:`group_tasks`).
        segmenter: any :class:`~geoseg.segmenters.Segmenter`; ``set_image`` is called once.
        image: optional pre-read ``(rgb, valid)`` for the window.

    Returns:
        One :class:`WindowResult` per task over its read window (:data:`STITCHING`); pixels that
        are nodata in the source are never part of a mask.
    """
    if not tasks:
        return []
    first = tasks[0]
    if any(t.key != first.key for t in tasks):
        raise ValueError("process_window() takes tasks that share one read window")
    rgb, valid = image if image is not None else source.read_rgb(first.read, first.out_shape)
    if not any(valid[core_slices(t)].any() for t in tasks):  # every answer would be cut away: skip the model
        log.debug("window %s: no valid pixel in any task's core, skipped", first.key)
        return [empty_result(t) for t in tasks]
    segmenter.set_image(rgb)
    return predict_tasks(tasks, segmenter, valid)


def core_slices(task: WindowTask) -> tuple[slice, slice]:
    """Rows and columns of ``task.core`` in its read window's array (at the read resolution)."""
    oh, ow = task.out_shape
    sy, sx = oh / task.read.height, ow / task.read.width
    r0 = round((task.core.row_off - task.read.row_off) * sy)
    c0 = round((task.core.col_off - task.read.col_off) * sx)
    return slice(r0, r0 + max(1, round(task.core.height * sy))), slice(c0, c0 + max(1, round(task.core.width * sx)))


def empty_result(task: WindowTask) -> WindowResult:
    """The answer for a task whose core holds no valid pixel: nothing, without asking the segmenter.

    Its pixels are nodata, so any answer there would be cut away; a scene whose valid footprint
    is a rotated strip in a large nodata frame would otherwise run the model on every empty tile.
    """
    rows, cols = core_slices(task)
    return WindowResult(task.prompt_index, task.core, np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool),
                        0.0, None)


def input_provenance(src: RasterSource) -> dict:
    """How the source's pixels were turned into what the model saw: the answer depends on it.

    The same uint16 scene answers "the water" with nothing under its default bands and with the
    water under ``--bands 3,2,1``; an output that does not say which was used cannot be reproduced.
    """
    return {"bands": list(src.bands), "stretch": src.stretch, "palette": src.palette is not None,
            "dtype": src.dtype}


def predict_tasks(tasks: Sequence[WindowTask], segmenter: Segmenter, valid: np.ndarray) -> list[WindowResult]:
    """Answer tasks sharing one read window on a segmenter whose image is already that window.

    This is the prompt-dependent half of :func:`process_window`; the stateful predictor
    calls it directly to reuse a cached ``set_image``. ``valid`` is the window's validity
    mask at the read resolution.
    """
    if not tasks:
        return []
    first = tasks[0]
    oh, ow = first.out_shape
    sy, sx = oh / first.read.height, ow / first.read.width
    results = []
    for t in tasks:
        core = core_slices(t)
        if not valid[core].any():  # nothing to stand for: the tiles of its neighbours' cores cover its overlap
            results.append(empty_result(t))
            continue
        local = t.prompt.shifted(t.read.col_off, t.read.row_off)
        if (sx, sy) != (1.0, 1.0):
            local = local.scaled(sx, sy)
        if local.box is not None:
            from dataclasses import replace

            b = local.box
            local = replace(local, box=(max(0.0, b[0]), max(0.0, b[1]), min(float(ow), b[2]), min(float(oh), b[3])))
        pred = segmenter.predict(local)
        mask = pred.mask & valid
        prob = pred.prob.astype(np.float32, copy=False) if pred.prob is not None else None
        present, held = scene_gate(pred.info)
        held = held & valid if held is not None else None
        results.append(WindowResult(t.prompt_index, t.read, mask, float(pred.score), prob, present=present, held=held))
    return results


def scene_gate(info: dict) -> tuple[bool | None, np.ndarray | None]:
    """What a prediction says for the scene-level presence rule: ``(present, held mask)``.

    A segmenter that decides presence per scene (the unified one on text prompts, see
    :class:`geoseg.unified.decision.ScenePresence`) tells, per window, whether the target is
    here (``presence_gate == "pass"``) and hands over the answer it kept aside (``held_mask``)
    when the window's presence fell in the grey band; the scene writer paints that answer
    only if another window of the prompt proved the target present. ``(None, None)`` when the
    segmenter decides every window alone.
    """
    gate = info.get("presence_gate")
    if gate is None:
        return None, None
    held = info.get("held_mask") if gate == "hold" else None
    return gate == "pass", np.asarray(held, dtype=bool) if held is not None else None
