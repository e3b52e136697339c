"""Boxes and points out of whatever a multimodal LLM writes.

Answers arrive in many shapes, often wrapped in prose or Markdown. The formats read here,
in the order they are tried (the first that yields a box wins, so a model's native
markup keeps its label):

* Qwen2-VL tokens ``<|object_ref_start|>roof<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>``
* InternVL ``<ref>roof</ref><box>[[x0, y0, x1, y1]]</box>`` (several boxes allowed)
* GeoPix ``{<x1><y1><x2><y2>}``
* JSON anywhere in the text or in a fenced ```json block: ``{"bbox_2d": [...], "label": ...}``
  (Qwen2.5/3-VL), ``{"bbox": [...], "prompt": ...}`` (GeoSeg), lists of such objects,
  ``"point_2d"``/``"points"`` for points, Python-style single quotes
* a bare corner pair ``(x0,y0),(x1,y1)`` (Qwen tokens stripped by the server) or ``<box>(x0,y0),(x1,y1)</box>``
* a plain list ``[x0, y0, x1, y1]``

Numbers are returned exactly as written (no unit conversion or axis order: see
:mod:`geoseg.trainfree.conventions`; Gemini's ``box_2d`` is y-first); a corner pair given
in the wrong order is swapped.
``<think>…</think>`` reasoning blocks are ignored.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_QWEN2 = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*)?<\|box_start\|>\s*"
    rf"\(\s*(?P<a>{_NUM})\s*,\s*(?P<b>{_NUM})\s*\)\s*,?\s*\(\s*(?P<c>{_NUM})\s*,\s*(?P<d>{_NUM})\s*\)\s*<\|box_end\|>",
    re.S)
_INTERNVL = re.compile(r"(?:<ref>(?P<label>.*?)</ref>\s*)?<box>(?P<body>.*?)</box>", re.S)
_QUAD = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_GEOPIX = re.compile(rf"\{{\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*\}}")
_PAIR = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*(?:to\s*)?\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.S)

#: answers are cut to this many characters (a grounding answer is a few hundred)
MAX_CHARS = 20000
#: failed JSON starts tried per answer
MAX_ATTEMPTS = 200

_BOX_KEYS = ("bbox_2d", "box_2d", "bbox", "box", "bounding_box", "bndbox", "coordinates")
_POINT_KEYS = ("point_2d", "point", "points", "point_coords")
_LABEL_KEYS = ("label", "prompt", "noun", "name", "object", "category", "class")


@dataclass(frozen=True)
class ParsedBox:
    """A box as written in the answer: ``(x0, y0, x1, y1)`` in the answer's own units."""

    coords: tuple[float, float, float, float]
    label: str | None
    source: str


@dataclass(frozen=True)
class ParsedPoint:
    """A point as written in the answer: ``(x, y)`` in the answer's own units."""

    xy: tuple[float, float]
    label: str | None
    source: str


@dataclass(frozen=True)
class ParsedAnswer:
    """Everything found in one answer, in the order written."""

    boxes: tuple[ParsedBox, ...] = ()
    points: tuple[ParsedPoint, ...] = ()

    @property
    def label(self) -> str | None:
        """The first label given with a box or point."""
        for item in (*self.boxes, *self.points):
            if item.label:
                return item.label
        return None

    @property
    def empty(self) -> bool:
        return not self.boxes and not self.points


def _box(values: list[float] | tuple[float, ...], label: str | None, source: str) -> ParsedBox | None:
    if len(values) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    return ParsedBox((x0, y0, x1, y1), _clean_label(label), source)


def _clean_label(label: object) -> str | None:
    if not isinstance(label, str):
        return None
    text = re.sub(r"<[^>]*>", "", label).strip().strip("\"'.:").strip()
    return text or None


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: object, n: int) -> list[float] | None:
    """``v`` as ``n`` numbers (a flat list, a list holding one such list, or numeric strings)."""
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], (list, tuple)):
        v = v[0]
    if isinstance(v, str):
        found = re.findall(_NUM, v)
        v = [float(x) for x in found]
    if isinstance(v, dict):
        keys = (("x0", "y0", "x1", "y1"), ("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"), ("x", "y"))
        for names in keys:
            if len(names) == n and all(k in v for k in names):
                v = [v[k] for k in names]
                break
        else:
            return None
    if isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) for x in v):
        return [float(x) for x in v]
    return None


def _walk_json(obj: object, boxes: list[ParsedBox], points: list[ParsedPoint]) -> None:
    if isinstance(obj, dict):
        label = next((obj[k] for k in _LABEL_KEYS if isinstance(obj.get(k), str)), None)
        for key in _BOX_KEYS:
            if key in obj:
                vals = _numbers(obj[key], 4)
                b = _box(vals, label, "json") if vals else None
                if b:
                    boxes.append(b)
                    break
        for key in _POINT_KEYS:
            if key not in obj:
                continue
            single = _numbers(obj[key], 2)
            many = [single] if single else [_numbers(p, 2) for p in obj[key]] if isinstance(obj[key], list) else []
            for p in many:
                if p and all(math.isfinite(x) for x in p):
                    points.append(ParsedPoint((p[0], p[1]), _clean_label(label), "json"))
            break
        for key, value in obj.items():
            if key not in _BOX_KEYS and key not in _POINT_KEYS and isinstance(value, (dict, list)):
                _walk_json(value, boxes, points)
    elif isinstance(obj, list):
        vals = _numbers(obj, 4)
        if vals and len(obj) == 4:
            b = _box(vals, None, "json")
            if b:
                boxes.append(b)
            return
        for item in obj:
            if isinstance(item, (dict, list)):
                _walk_json(item, boxes, points)


def _json_values(text: str) -> list[object]:
    """Every JSON (or Python-literal) object or array found in ``text``, outermost only.

    At most :data:`MAX_ATTEMPTS` failed starts are tried, so junk full of brackets stays cheap.
    """
    out: list[object] = []
    decoder = json.JSONDecoder()
    i = failures = 0
    while i < len(text) and failures < MAX_ATTEMPTS:
        if text[i] not in "[{":
            i += 1
            continue
        try:
            value, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            value, end = _literal(text, i) if "'" in text or "," in text else (None, i)
        if value is None:
            failures += 1
            i += 1
            continue
        out.append(value)
        i = end
    return out


def _literal(text: str, start: int) -> tuple[object | None, int]:
    """A Python-style literal (single quotes, trailing commas) starting at ``start``."""
    depth = 0
    for j in range(start, min(len(text), start + 4000)):
        c = text[j]
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                try:
                    value = ast.literal_eval(text[start:j + 1])
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    return None, start
                return (value, j + 1) if isinstance(value, (dict, list, tuple)) else (None, start)
    return None, start


def _from_json(text: str) -> ParsedAnswer:
    boxes: list[ParsedBox] = []
    points: list[ParsedPoint] = []
    blocks = [m.group(1) for m in _FENCE.finditer(text)] or [text]
    for block in blocks:
        for value in _json_values(block):
            _walk_json(value, boxes, points)
    return ParsedAnswer(tuple(boxes), tuple(points))


def parse_answer(text: str) -> ParsedAnswer:
    """All boxes and points in a model's answer (empty when there is none)."""
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer()
    text = _THINK.sub("", text)[:MAX_CHARS]

    native = [_box([m["a"], m["b"], m["c"], m["d"]], m["label"], "qwen2-tokens") for m in _QWEN2.finditer(text)]
    boxes = [b for b in native if b]
    if not boxes:
        for m in _INTERNVL.finditer(text):
            quads = _QUAD.findall(m["body"])
            pair = _PAIR.search(m["body"])
            if quads:
                boxes += [b for q in quads if (b := _box(list(q), m["label"], "internvl"))]
            elif pair:
                b = _box(list(pair.groups()), m["label"], "pair")
                boxes += [b] if b else []
    if not boxes:
        boxes = [b for m in _GEOPIX.finditer(text) if (b := _box(list(m.groups()), None, "geopix"))]
    if boxes:
        return ParsedAnswer(tuple(boxes), _from_json(text).points)

    parsed = _from_json(text)
    if parsed.boxes:
        return parsed
    pairs = [b for m in _PAIR.finditer(text) if (b := _box(list(m.groups()), None, "pair"))]
    if pairs:
        return ParsedAnswer(tuple(pairs), parsed.points)
    quads = [b for m in _QUAD.finditer(text) if (b := _box(list(m.groups()), None, "list"))]
    return ParsedAnswer(tuple(quads), parsed.points)
