"""Window planning: overlapping tiles whose *cores* partition the scene.

Each tile is read with ``overlap`` pixels of context shared with its neighbours;
only its core (the part up to the middle of each overlap) is written back, so
every output pixel comes from exactly one tile and from the tile where it lies
farthest from a border (no seams, no double counting). Interactive prompts get
a single context window around them instead (:func:`context_window`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.windows import Window

from geoseg.errors import InputError


@dataclass(frozen=True)
class Tile:
    """One planned tile.

    Attributes:
        read: the window to read (with overlap), in scene pixels.
        core: the window whose result is kept, in scene pixels (inside ``read``).
    """

    read: Window
    core: Window


def _axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def _axis_cores(starts: list[int], size: int, tile: int) -> list[tuple[int, int]]:
    cuts = [0]
    for prev, cur in zip(starts, starts[1:]):
        prev_end = min(prev + tile, size)
        cuts.append((cur + prev_end) // 2)
    cuts.append(size)
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def check_tiling(tile_size: int, overlap: int) -> None:
    """Raise :class:`InputError` for a tile size/overlap that cannot work."""
    if tile_size < 64:
        raise InputError(f"--tile-size {tile_size} is too small", "use at least 64 (1024 is a good default)")
    if overlap < 0 or overlap * 2 >= tile_size:
        raise InputError(
            f"--overlap {overlap} does not fit --tile-size {tile_size}",
            "use an overlap between 0 and half the tile size (e.g. 128 for 1024)",
        )


def plan_tiles(width: int, height: int, tile_size: int = 1024, overlap: int = 128) -> list[Tile]:
    """Tiles covering a ``width`` x ``height`` scene, row by row; their cores partition it."""
    check_tiling(tile_size, overlap)
    xs = _axis_starts(width, tile_size, overlap)
    ys = _axis_starts(height, tile_size, overlap)
    xc = _axis_cores(xs, width, tile_size)
    yc = _axis_cores(ys, height, tile_size)
    tiles = []
    for y0, (cy0, cy1) in zip(ys, yc):
        th = min(tile_size, height - y0)
        for x0, (cx0, cx1) in zip(xs, xc):
            tw = min(tile_size, width - x0)
            tiles.append(Tile(read=Window(x0, y0, tw, th), core=Window(cx0, cy0, cx1 - cx0, cy1 - cy0)))
    return tiles


def context_window(bounds: tuple[float, float, float, float], width: int, height: int,
                   margin: float = 0.5, min_margin: int = 32, min_size: int = 256) -> Window:
    """A window around ``bounds`` (x0, y0, x1, y1 in pixels) with context, clipped to the scene.

    The margin is ``margin`` times the larger side of ``bounds`` (at least ``min_margin``
    pixels), and the window is at least ``min_size`` pixels per side where the scene allows.
    """
    x0, y0, x1, y1 = bounds
    side = max(x1 - x0, y1 - y0)
    m = max(min_margin, margin * side)
    x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max(x1 - x0, min_size) / 2
    half_h = max(y1 - y0, min_size) / 2
    c0 = int(max(0, min(cx - half_w, width - 2 * half_w)))
    r0 = int(max(0, min(cy - half_h, height - 2 * half_h)))
    c1 = int(min(width, max(cx + half_w, 2 * half_w)))
    r1 = int(min(height, max(cy + half_h, 2 * half_h)))
    return Window(c0, r0, max(1, c1 - c0), max(1, r1 - r0))


def intersect(a: Window, b: Window) -> Window | None:
    """The intersection of two windows, or ``None`` when they do not overlap."""
    c0, r0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def iter_blocks(width: int, height: int, size: int = 1024) -> list[Window]:
    """Square blocks of ``size`` pixels, row by row (for streaming passes whose memory must not grow)."""
    return [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]
