"""Small boxes answered from a zoomed crop, as SAM-style tools answer any box at the network's size.

The unified model works at a fixed working scale (a 512-px tile becomes a 256-px network
input) and its decoder's cells are 8 network pixels, so a box whose longer side is under
about 40 source pixels covers one or two cells: the decoder's probabilities stay near zero
and the answer comes back empty (on the 276 Danish parcels given as boxes, 187 answers were
empty, nearly all parcels under 40 px). Such a box is answered instead from a crop around it,
``context`` times its side, resized to the network's trained input size, so the target
is as large to the network as the targets it was trained on; the answer is pasted back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZoomConfig:
    """When and how far to zoom a box prompt.

    Attributes:
        min_box_side: a box whose longer side, in network pixels at the working scale, is
            below this is answered from a zoomed crop.
        context: the crop's side as a multiple of the box's longer side.
        max_zoom: the largest magnification over the working scale (a tiny box gets a crop
            larger than ``context`` times its side rather than a blurrier one).
    """

    min_box_side: float = 48.0
    context: float = 4.0
    max_zoom: float = 8.0

    def to_dict(self) -> dict:
        return {"method": "zoomed-crop", "min_box_side": self.min_box_side, "context": self.context,
                "max_zoom": self.max_zoom}


def zoom_window(box: tuple[float, float, float, float], width: int, height: int, scale: float,
                input_size: int, cfg: ZoomConfig) -> tuple[int, int, int, int, float] | None:
    """The crop ``(c0, r0, c1, r1)`` of a ``width`` x ``height`` image to answer ``box`` from, and its
    magnification over the working ``scale``; ``None`` when the box is large enough as it is.

    The crop is square where the image allows, centred on the box and shifted inside the image;
    resized by ``scale * zoom`` it becomes about ``input_size`` network pixels per side.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1e-6)
    if side * scale >= cfg.min_box_side:
        return None
    crop = max(cfg.context * side, input_size / (scale * cfg.max_zoom))
    zoom = input_size / (scale * crop)
    if zoom <= 1.0:
        return None
    cw, ch = min(width, round(crop)), min(height, round(crop))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    c0 = int(min(max(0, round(cx - cw / 2)), width - cw))
    r0 = int(min(max(0, round(cy - ch / 2)), height - ch))
    return c0, r0, c0 + cw, r0 + ch, zoom
