"""Prompt types shared by every segmenter, the CLI, the data engine and the benchmark.

Coordinates are pixel coordinates ``(x, y)`` = (column, row) of the image given to
``Segmenter.set_image``, with the origin at the top-left corner of the top-left pixel.
A prompt may combine points, a box and text; the segmenter's ``capabilities`` say
which parts it uses.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from geoseg.errors import PromptError

Task = Literal["interactive", "referring", "reasoning"]
TASKS: tuple[str, ...] = ("interactive", "referring", "reasoning")


@dataclass(frozen=True)
class Prompt:
    """What the user asks for.

    Attributes:
        points: ``(x, y)`` pixel coordinates.
        labels: one per point, 1 = positive (on the target), 0 = negative (not the target).
        box: ``(x0, y0, x1, y1)`` pixel coordinates, ``x0 < x1`` and ``y0 < y1``.
        text: a referring expression or a reasoning query.
        task: the task the text belongs to; ``None`` lets the segmenter decide
            (points/box alone are always ``interactive``).
        extra: facts that travel with the prompt without changing what is asked; ``feature``
            (the id of the vector-file feature it came from) shows in ``to_dict`` and ``describe``.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    text: str | None = None
    task: Task | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise PromptError(f"the text prompt is a {type(self.text).__name__}, not a string",
                              "give the instruction as a string")
        if len(self.points) != len(self.labels):
            raise PromptError(
                f"{len(self.points)} points but {len(self.labels)} labels",
                "give one label (1 positive, 0 negative) per point",
            )
        if any(lab not in (0, 1) for lab in self.labels):
            raise PromptError("point labels must be 0 or 1", "use 1 for positive and 0 for negative points")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise PromptError(
                    f"box {self.box} is empty or inverted", "give the box as X0,Y0,X1,Y1 with X0<X1 and Y0<Y1"
                )
        if self.text is not None and not self.text.strip():
            raise PromptError("the text prompt is empty", "give an instruction such as 'the largest building'")
        if self.task is not None and self.task not in TASKS:
            raise PromptError(f"unknown task {self.task!r}", f"use one of {', '.join(TASKS)}")

    @property
    def kinds(self) -> frozenset[str]:
        """The prompt kinds present: a subset of ``{"point", "box", "text"}``."""
        out = set()
        if self.points:
            out.add("point")
        if self.box is not None:
            out.add("box")
        if self.text is not None:
            out.add("text")
        return frozenset(out)

    @property
    def is_empty(self) -> bool:
        return not self.kinds

    @property
    def resolved_task(self) -> Task:
        """The task this prompt belongs to (geometry without text is always interactive)."""
        if self.text is None:
            return "interactive"
        if self.task is not None:
            return self.task
        return infer_task(self.text)

    def shifted(self, dx: float, dy: float) -> Prompt:
        """The same prompt in a frame whose origin is at ``(dx, dy)`` of this one (for crops/tiles)."""
        pts = tuple((x - dx, y - dy) for x, y in self.points)
        box = None if self.box is None else (self.box[0] - dx, self.box[1] - dy, self.box[2] - dx, self.box[3] - dy)
        return replace(self, points=pts, box=box)

    def scaled(self, sx: float, sy: float) -> Prompt:
        """The same prompt after resizing the image by ``(sx, sy)``."""
        pts = tuple((x * sx, y * sy) for x, y in self.points)
        box = None if self.box is None else (self.box[0] * sx, self.box[1] * sy, self.box[2] * sx, self.box[3] * sy)
        return replace(self, points=pts, box=box)

    def check_inside(self, width: int, height: int) -> None:
        """Raise :class:`PromptError` when a point or the box lies outside a ``width`` x ``height`` image."""
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(
                    f"point ({x:g}, {y:g}) is outside the {width}x{height} image",
                    "give pixel coordinates inside the image, or map coordinates with --prompt-crs",
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                raise PromptError(
                    f"box {tuple(round(v, 3) for v in self.box)} does not overlap the {width}x{height} image",
                    "give pixel coordinates inside the image, or map coordinates with --prompt-crs",
                )

    def to_dict(self) -> dict:
        """A JSON-friendly description (used in output metadata and caches)."""
        d: dict = {}
        if self.points:
            d["points"] = [[float(x), float(y)] for x, y in self.points]
            d["labels"] = list(self.labels)
        if self.box is not None:
            d["box"] = [float(v) for v in self.box]
        if self.text is not None:
            d["text"] = self.text
        if self.task is not None:
            d["task"] = self.task
        if "feature" in self.extra:
            d["feature"] = self.extra["feature"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Prompt:
        """The inverse of :meth:`to_dict`; unknown keys and malformed coordinates are a :class:`PromptError`."""
        if not isinstance(d, dict):
            raise PromptError(f"a prompt is a {type(d).__name__}, not a dict", "give a dict such as {'box': [x0, y0, x1, y1]}")
        unknown = sorted(set(d) - _DICT_KEYS, key=str)
        if unknown:
            raise PromptError(f"unknown prompt key(s) {', '.join(map(repr, unknown))}",
                              f"use {', '.join(sorted(_DICT_KEYS))}")
        raw_points = d.get("points") or []
        if not isinstance(raw_points, (list, tuple)):
            raise PromptError(f"prompt points {raw_points!r} are not a list", "give points as [[x, y], ...]")
        pts = tuple(as_point(p) for p in raw_points)
        try:
            labels = tuple(int(v) for v in d.get("labels", [1] * len(pts)))
        except (TypeError, ValueError):
            raise PromptError(f"cannot read prompt labels {d.get('labels')!r}",
                              "give one label per point, 1 (positive) or 0 (negative)") from None
        box = as_box(d["box"]) if d.get("box") is not None else None
        try:
            extra = {"feature": int(d["feature"])} if d.get("feature") is not None else {}
        except (TypeError, ValueError):
            raise PromptError(f"prompt feature id {d['feature']!r} is not an integer", "give an integer id") from None
        return cls(points=pts, labels=labels, box=box, text=d.get("text"), task=d.get("task"), extra=extra)

    def describe(self) -> str:
        """A short human-readable form for metadata fields such as the vector ``prompt`` column."""
        parts = []
        if self.text is not None:
            parts.append(self.text)
        if self.points:
            parts.append(
                "points " + "; ".join(f"{'+' if lab else '-'}({x:.1f},{y:.1f})" for (x, y), lab in zip(self.points, self.labels))
            )
        if self.box is not None:
            parts.append("box ({:.1f},{:.1f},{:.1f},{:.1f})".format(*self.box))
        if "feature" in self.extra:
            parts.append(f"feature {self.extra['feature']}")
        return " | ".join(parts)


_REASONING_CUES = (
    "where could", "where can", "where would", "where should", "where might", "which area could",
    "which place", "what could", "what would", "what can", "suitable", "could be used", "would be",
    "find the place", "find somewhere", "find where", "what hides", "what is hiding", "?",
)


def infer_task(text: str) -> Task:
    """Guess whether an instruction is a referring expression or a reasoning query.

    Reasoning queries ask for a purpose or implication ("where could a boat sail?");
    referring expressions name the target ("the large building at the top left").
    A model that knows better may ignore this and use its own classifier.
    """
    t = text.strip().lower()
    if any(cue in t for cue in _REASONING_CUES):
        return "reasoning"
    return "referring"


_DICT_KEYS = frozenset({"points", "labels", "box", "text", "task", "feature"})


def as_point(value: object, what: str = "point") -> tuple[float, float]:
    """``value`` as an ``(x, y)`` pair of floats, or a :class:`PromptError` naming what was given."""
    try:
        x, y = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise PromptError(f"cannot read {what} {value!r}", "give a point as two numbers (x, y)") from None
    return x, y


def as_box(value: object) -> tuple[float, float, float, float]:
    """``value`` as an ``(x0, y0, x1, y1)`` tuple of floats, or a :class:`PromptError` naming what was given."""
    try:
        x0, y0, x1, y1 = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise PromptError(f"cannot read box {value!r}", "give a box as four numbers (x0, y0, x1, y1)") from None
    return x0, y0, x1, y1


def _listed(values: object, name: str, example: str) -> list:
    """``values`` as a list; a bare pair/quadruple of numbers (one point or box where a list belongs) is named."""
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise PromptError(f"{name}={values!r} is not a list", f"give a list, e.g. {name}={example}") from None
    if items and all(isinstance(v, numbers.Real) for v in items):
        raise PromptError(f"{name}={tuple(items)} is a list of numbers, not of {name}",
                          f"wrap it in a list, e.g. {name}=[{tuple(items)}]")
    return items


def as_points(values: Iterable[object], name: str = "points") -> list[tuple[float, float]]:
    """A list of ``(x, y)`` pairs, read with :func:`as_point`; a bare ``(x, y)`` is a :class:`PromptError`."""
    what = "negative point" if name.startswith("negative") else "point"
    return [as_point(v, what) for v in _listed(values, name, "[(x, y)]")]


def as_boxes(values: Iterable[object], name: str = "boxes") -> list[tuple[float, float, float, float]]:
    """A list of boxes, read with :func:`as_box`; a bare ``(x0, y0, x1, y1)`` is a :class:`PromptError`."""
    return [as_box(v) for v in _listed(values, name, "[(x0, y0, x1, y1)]")]


def parse_xy(value: str) -> tuple[float, float]:
    """Parse ``"X,Y"`` from the command line."""
    try:
        x, y = (float(v) for v in value.split(","))
    except ValueError:
        raise PromptError(f"cannot read point {value!r}", "write points as X,Y, e.g. --point 120,45") from None
    return x, y


def parse_box(value: str) -> tuple[float, float, float, float]:
    """Parse ``"X0,Y0,X1,Y1"`` from the command line."""
    try:
        x0, y0, x1, y1 = (float(v) for v in value.split(","))
    except ValueError:
        raise PromptError(f"cannot read box {value!r}", "write the box as X0,Y0,X1,Y1, e.g. --box 10,20,200,180") from None
    return x0, y0, x1, y1
