"""Cutting scenes into tile windows (UniGeoSeg: 512 x 512 at stride 256)."""

from __future__ import annotations

from typing import NamedTuple


class Window(NamedTuple):
    """A tile in source pixels."""

    col_off: int
    row_off: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        return {"col_off": self.col_off, "row_off": self.row_off, "width": self.width, "height": self.height}


def _offsets(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    offs = list(range(0, length - size + 1, stride))
    if offs[-1] != length - size:
        offs.append(length - size)  # last tile flush with the edge so the whole scene is covered
    return offs


def tile_windows(height: int, width: int, size: int = 512, stride: int = 256) -> list[Window]:
    """Windows of ``size`` x ``size`` every ``stride`` pixels covering the whole scene, row-major.

    A scene smaller than ``size`` along an axis gives one tile of the scene's extent along that
    axis (never padded, so every pixel of a tile is real imagery). The last row/column of tiles
    is shifted to end at the scene edge.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"tile size and stride must be positive, got {size}, {stride}")
    return [Window(c, r, min(size, width), min(size, height))
            for r in _offsets(height, size, stride) for c in _offsets(width, size, stride)]
