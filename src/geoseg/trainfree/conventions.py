"""Model families: how each multimodal LLM wants its image and in which frame it answers.

A grounding answer is only useful once its numbers are mapped back to the pixels of the
user's image, and every family counts differently (GUIDE §1, GeoSeg):

======================  ===========================  ======================================
family                  image sent                   coordinates in the answer
======================  ===========================  ======================================
``qwen2-vl``            smart resize (multiple 28)   0–1000 grid of the image
``qwen2.5-vl``          smart resize (multiple 28)   absolute pixels of the *resized* input
``qwen3-vl``            smart resize (multiple 32)   0–1000 grid of the image
``internvl``            longest side ≤ 1344          0–1000 grid of the image
``geopix``              padded to a centred square   0–100 grid of the square
``gemini``              longest side ≤ 1024          0–1000 grid, **y first**: ``[ymin, xmin, ymax, xmax]``
``generic``             longest side ≤ 1024          [0, 1] of the image (GeoSeg's JSON)
======================  ===========================  ======================================

The client does the resizing itself, so the frame the model answers in is known exactly:
an input that is already a multiple of the patch factor and inside the pixel budget is
left as it is by Qwen's own ``smart_resize`` on the server. :class:`Frame` records the
mapping original → sent image, and :func:`to_original` inverts it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from geoseg.errors import GeosegError

#: coordinate conventions: name -> what one unit of the answer means
CONVENTIONS = {
    "grid1000": "0-1000 grid over the sent image",
    "grid100": "0-100 grid over the sent image",
    "unit": "[0, 1] of the sent image",
    "pixels": "absolute pixels of the sent (resized) image",
}


@dataclass(frozen=True)
class ResizeRule:
    """How the client prepares the image for a family.

    Attributes:
        kind: ``smart`` (Qwen's rule: both sides multiples of ``factor``, pixel count in
            ``[min_pixels, max_pixels]``, aspect ratio kept), ``fit`` (longest side at most
            ``max_side``, never enlarged) or ``pad-square`` (centred on a square of the
            longest side, filled with ``fill``, then ``fit``).
    """

    kind: str
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    max_side: int = 1024
    fill: tuple[int, int, int] = (124, 116, 104)


@dataclass(frozen=True)
class Family:
    """One model family: its resize rule, coordinate convention and grounding prompt.

    ``prompt`` is formatted with ``{instruction}``; it asks in the words the family was
    trained on, so the model answers in its native format. ``order`` is ``xy`` or ``yx``
    (Gemini writes ``[ymin, xmin, ymax, xmax]`` and points as ``[y, x]``).
    """

    name: str
    resize: ResizeRule
    convention: str
    prompt: str
    description: str
    order: str = "xy"


_JSON_PROMPT_QWEN = (
    "Locate the object described by this instruction in the image: \"{instruction}\". "
    "Output its bbox coordinates in JSON format with the keys \"bbox_2d\" and \"label\" "
    "(a short noun naming the object)."
)

FAMILIES: dict[str, Family] = {
    "qwen2-vl": Family(
        "qwen2-vl", ResizeRule("smart", factor=28), "grid1000",
        "Output the bounding box of the object described by this instruction: {instruction}",
        "Qwen2-VL: <|object_ref_start|>label<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>, 0-1000 grid"),
    "qwen2.5-vl": Family(
        "qwen2.5-vl", ResizeRule("smart", factor=28), "pixels", _JSON_PROMPT_QWEN,
        "Qwen2.5-VL: JSON {\"bbox_2d\": [...], \"label\": ...} in absolute pixels of the resized input"),
    "qwen3-vl": Family(
        "qwen3-vl", ResizeRule("smart", factor=32, min_pixels=256 * 256, max_pixels=32 * 32 * 1024), "grid1000",
        _JSON_PROMPT_QWEN,
        "Qwen3-VL: JSON {\"bbox_2d\": [...], \"label\": ...} on a 0-1000 grid"),
    "internvl": Family(
        "internvl", ResizeRule("fit", max_side=1344), "grid1000",
        "Please provide the bounding box coordinate of the region this sentence describes: <ref>{instruction}</ref>",
        "InternVL: <ref>label</ref><box>[[x0, y0, x1, y1]]</box>, 0-1000 grid"),
    "geopix": Family(
        "geopix", ResizeRule("pad-square", max_side=1024), "grid100",
        "Please output the bounding box of {instruction} in the image as {{<x1><y1><x2><y2>}}.",
        "GeoPix: {<x1><y1><x2><y2>} on a 0-100 grid of the (square) input"),
    "gemini": Family(
        "gemini", ResizeRule("fit", max_side=1024), "grid1000",
        "Detect the object this instruction refers to: \"{instruction}\". Output a JSON list where each entry "
        "contains the 2D bounding box in \"box_2d\" and a short noun in \"label\".",
        "Gemini: JSON {\"box_2d\": [ymin, xmin, ymax, xmax], \"label\": ...} on a 0-1000 grid", order="yx"),
    "generic": Family(
        "generic", ResizeRule("fit", max_side=1024), "unit",
        "Find the object this instruction refers to in the image: \"{instruction}\". Answer only with JSON "
        "{{\"bbox\": [x0, y0, x1, y1], \"prompt\": \"<noun>\"}} where the coordinates are fractions of the "
        "image width and height between 0 and 1 and <noun> is a short noun naming the object.",
        "any other model, asked for GeoSeg's JSON {\"bbox\": [...], \"prompt\": ...} in [0, 1]"),
}

# model-name pattern -> family, most specific first (names as served by vLLM, Ollama, LM Studio, llama.cpp)
_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"qwen[-_ ]?3(\.\d+)?[-_ ]?vl|qwen3[-_.]?5", "qwen3-vl"),
    (r"qwen[-_ ]?2[._]5[-_ ]?vl|qwen2\.5vl", "qwen2.5-vl"),
    (r"qwen[-_ ]?2[-_ ]?vl", "qwen2-vl"),
    (r"intern[-_ ]?vl", "internvl"),
    (r"geopix", "geopix"),
    (r"gemini", "gemini"),
)


def guess_family(model: str | None) -> str:
    """The family a served model name belongs to (``generic`` when nothing matches).

    Matches names such as ``Qwen/Qwen2.5-VL-7B-Instruct``, ``qwen2.5vl:7b`` (Ollama),
    ``qwen3-vl-8b-instruct-q4_k_m.gguf`` and ``OpenGVLab/InternVL3-8B``.
    """
    name = (model or "").lower()
    for pattern, family in _NAME_RULES:
        if re.search(pattern, name):
            return family
    return "generic"


def get_family(name: str, model: str | None = None) -> Family:
    """The :class:`Family` called ``name``; ``auto`` guesses it from ``model``."""
    key = guess_family(model) if name == "auto" else name.lower()
    if key not in FAMILIES:
        raise GeosegError(f"unknown model family {name!r}", f"use auto or one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Qwen-VL's documented resize: sides rounded to multiples of ``factor``, pixel budget kept.

    Returns ``(height, width)``. Applying it twice gives the same size, which is why an
    image resized by the client is not resized again by the server.
    """
    if min(height, width) <= 0:
        raise GeosegError(f"image of size {width}x{height} is empty", "give an image with pixels")
    if max(height, width) / min(height, width) > 200:
        raise GeosegError(f"image of size {width}x{height} is too elongated for Qwen-VL (ratio > 200)",
                          "crop the image closer to the target")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class Frame:
    """Where the original image lies in the image sent to the model.

    ``sent = original * scale + offset`` per axis, in pixels; ``sent_size`` is ``(w, h)``.
    """

    orig_size: tuple[int, int]
    sent_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def prepare_image(image: np.ndarray, family: Family, max_pixels: int | None = None) -> tuple[np.ndarray, Frame]:
    """Resize (and pad) ``image`` as ``family`` expects; the sent image and its :class:`Frame`.

    ``max_pixels`` overrides the family's pixel budget (smart rule) or is turned into a
    longest side (other rules), for servers started with a different budget.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise GeosegError(f"the grounding client needs an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}",
                          "convert the image to 8-bit RGB first")
    h, w = image.shape[:2]
    rule = family.resize
    if rule.kind == "smart":
        nh, nw = smart_resize(h, w, rule.factor, rule.min_pixels, max_pixels or rule.max_pixels)
        return _resize(image, nw, nh), Frame((w, h), (nw, nh), (nw / w, nh / h))
    max_side = rule.max_side if max_pixels is None else max(1, int(math.sqrt(max_pixels)))
    if rule.kind == "fit":
        s = min(1.0, max_side / max(h, w))
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        return _resize(image, nw, nh), Frame((w, h), (nw, nh), (nw / w, nh / h))
    if rule.kind == "pad-square":
        side = max(h, w)
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = rule.fill
        ox, oy = (side - w) // 2, (side - h) // 2
        canvas[oy:oy + h, ox:ox + w] = image
        s = min(1.0, max_side / side)
        n = max(1, round(side * s))
        k = n / side
        return _resize(canvas, n, n), Frame((w, h), (n, n), (k, k), (ox * k, oy * k))
    raise GeosegError(f"unknown resize rule {rule.kind!r}", "use smart, fit or pad-square")


def sent_pixels(values: np.ndarray, convention: str, frame: Frame) -> np.ndarray:
    """Answer coordinates ``(..., 2)`` as ``(x, y)`` pixels of the sent image."""
    sw, sh = frame.sent_size
    per_unit = {"grid1000": 1000.0, "grid100": 100.0, "unit": 1.0}
    if convention == "pixels":
        return values.astype(float)
    if convention not in per_unit:
        raise GeosegError(f"unknown coordinate convention {convention!r}", f"use one of {', '.join(CONVENTIONS)}")
    return values.astype(float) / per_unit[convention] * np.array([sw, sh], float)


def to_original(values: np.ndarray | list, convention: str, frame: Frame) -> np.ndarray:
    """Map answer coordinates (pairs ``(x, y)``, shape ``(..., 2)``) to original-image pixels."""
    v = np.asarray(values, float)
    px = sent_pixels(v, convention, frame)
    return (px - np.array(frame.offset)) / np.array(frame.scale)


def from_original(values: np.ndarray | list, convention: str, frame: Frame) -> np.ndarray:
    """The inverse of :func:`to_original` (original pixels → the convention's numbers)."""
    v = np.asarray(values, float) * np.array(frame.scale) + np.array(frame.offset)
    sw, sh = frame.sent_size
    per_unit = {"grid1000": 1000.0, "grid100": 100.0, "unit": 1.0, "pixels": None}
    unit = per_unit[convention]
    return v if unit is None else v / np.array([sw, sh], float) * unit


#: how far past its frame's edge (a share of the frame) an answer may reach and still be read in it:
#: models round to the edge or just past it; anything farther is another frame, not a sloppy box
FRAME_SLACK = 0.05

#: a frame an answer's numbers may fit -> the family that reads it (the fix a mismatch names)
_READERS: dict[str, str] = {"pixels": "qwen2.5-vl", "grid1000": "qwen3-vl"}


def frame_extent(convention: str, frame: Frame) -> tuple[float, float]:
    """The largest ``(x, y)`` an answer in ``convention`` can hold for an image sent as ``frame``."""
    if convention == "pixels":
        return float(frame.sent_size[0]), float(frame.sent_size[1])
    unit = {"grid1000": 1000.0, "grid100": 100.0, "unit": 1.0}.get(convention)
    if unit is None:
        raise GeosegError(f"unknown coordinate convention {convention!r}", f"use one of {', '.join(CONVENTIONS)}")
    return unit, unit


def fits_frame(values: np.ndarray | list, convention: str, frame: Frame, slack: float = FRAME_SLACK) -> bool:
    """Whether every ``(x, y)`` of ``values`` lies in ``convention``'s frame (give or take ``slack``)."""
    v = np.asarray(values, float).reshape(-1, 2)
    ext = np.array(frame_extent(convention, frame))
    return bool(np.all(v >= -slack * ext) and np.all(v <= (1 + slack) * ext))


#: a box read in another frame must be at least this share of that frame on each side to make it a
#: plausible reading (``[0.1, 0.2, 1.3, 0.5]`` fits pixels, but as a 1-pixel box it is a sloppy fraction)
MIN_PLAUSIBLE_SIDE = 0.005


def _plausible_in(coords: tuple[float, ...] | list[float], convention: str, frame: Frame) -> bool:
    ext = np.array(frame_extent(convention, frame))
    side = np.array([coords[2] - coords[0], coords[3] - coords[1]], float)
    return fits_frame([coords[:2], coords[2:4]], convention, frame) and bool(np.all(side >= MIN_PLAUSIBLE_SIDE * ext))


def _frame_words(convention: str, frame: Frame) -> str:
    w, h = frame.sent_size
    return {"unit": "fractions of the image (0-1)", "grid1000": "a 0-1000 grid", "grid100": "a 0-100 grid",
            "pixels": f"pixels of the {w}x{h} image sent"}[convention]


def _numbers_text(values: tuple[float, ...] | list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def frame_mismatch(coords: tuple[float, ...] | list[float], convention: str, family: Family,
                   frame: Frame) -> tuple[str, str] | None:
    """``(problem, fix)`` when a box ``(x0, y0, x1, y1)`` does not fit the frame it is read in, else ``None``.

    A model that answers in another frame than its family's (a ``generic`` model writing
    pixels, say) gives numbers far outside that frame; read anyway, the box lands off the
    image or, clamped, covers all of it. The numbers cannot say for sure which frame they are
    in, so nothing is guessed: the problem names every known frame they fit (pixels of the
    image sent, a 0–1000 grid) and the fix the family that reads it.
    """
    pairs = [coords[:2], coords[2:4]]
    if fits_frame(pairs, convention, frame):
        return None
    fits = [c for c in _READERS if c != convention and _plausible_in(coords, c, frame)]
    expected = f"{_frame_words(convention, frame)}, which family {family.name} reads"
    problem = f"the model's box {_numbers_text(coords)} is not in {expected}"
    if not fits:
        return (f"{problem}, nor in any frame geoseg knows for the {frame.sent_size[0]}x{frame.sent_size[1]} "
                "image sent", "check --vlm-family against the model's documented box format, see docs/trainfree.md")
    problem += ": its numbers fit " + " or ".join(_frame_words(c, frame) for c in fits)
    answers = {"pixels": "in pixels", "grid1000": "on a 0-1000 grid"}
    if len(fits) == 1:
        return problem, f"pass --vlm-family {_READERS[fits[0]]}, which reads boxes {answers[fits[0]]}"
    return problem, "pass --vlm-family " + ", or ".join(
        f"{_READERS[c]} if the model answers {answers[c]}" for c in fits)
