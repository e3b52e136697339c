"""Bias-aware coordinate refinement of grounding boxes: GeoSeg's fixed rule or a calibrated correction.

Multimodal LLMs place boxes with a systematic drift (coordinate-convention mix-ups, a
tendency to cut objects short on one side). GeoSeg corrects it with one fixed asymmetric
rule (GUIDE §1): clamp the box to the image, move the top-left corner out by 20 % of the
box size and the bottom-right corner by 10 %, and grow the box to at least 16 px.

A :class:`CalibrationProfile` generalises the rule: per coordinate ``(x0, y0, x1, y1)`` a
scale and an offset, fitted with robust least squares from a few labelled samples of one
backend (:mod:`geoseg.trainfree.calibrate`). Profiles live in small JSON files under the
user's configuration folder, one per backend key (the served model name), so
:func:`load_profile` finds and applies them automatically.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geoseg.errors import GeosegError

Box = tuple[float, float, float, float]

#: GeoSeg's published rule
EXPAND_TOP_LEFT = 0.20
EXPAND_BOTTOM_RIGHT = 0.10
MIN_SIZE = 16.0

PROFILE_VERSION = 1


def _check(box: Box) -> Box:
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise GeosegError(f"box {box} is not four finite numbers", "give the box as x0, y0, x1, y1")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise GeosegError(f"box {box} is inverted", "give the box as x0, y0, x1, y1 with x0 <= x1 and y0 <= y1")
    return x0, y0, x1, y1


def clamp_box(box: Box, width: int, height: int) -> Box:
    """``box`` cut to the ``width`` x ``height`` image."""
    x0, y0, x1, y1 = box
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return x0, y0, x1, y1


def _grow_axis(a: float, b: float, limit: float, size: float) -> tuple[float, float]:
    """Grow ``[a, b]`` about its centre to at least ``size``, then slide it inside ``[0, limit]``."""
    if b - a >= size:
        return a, b
    if limit <= size:
        return 0.0, float(limit)
    c = (a + b) / 2
    a, b = c - size / 2, c + size / 2
    if a < 0:
        a, b = 0.0, size
    elif b > limit:
        a, b = limit - size, float(limit)
    return a, b


def min_size_box(box: Box, width: int, height: int, min_size: float = MIN_SIZE) -> Box:
    """Grow a box smaller than ``min_size`` about its centre, kept inside the image."""
    x0, y0, x1, y1 = box
    x0, x1 = _grow_axis(x0, x1, width, min_size)
    y0, y1 = _grow_axis(y0, y1, height, min_size)
    return x0, y0, x1, y1


def fixed_rule(box: Box, width: int, height: int) -> Box:
    """GeoSeg's published rule: clamp, top-left out by 20 %, bottom-right out by 10 %, clamp, ≥ 16 px."""
    x0, y0, x1, y1 = clamp_box(_check(box), width, height)
    bw, bh = x1 - x0, y1 - y0
    expanded = (x0 - EXPAND_TOP_LEFT * bw, y0 - EXPAND_TOP_LEFT * bh,
                x1 + EXPAND_BOTTOM_RIGHT * bw, y1 + EXPAND_BOTTOM_RIGHT * bh)
    return min_size_box(clamp_box(expanded, width, height), width, height)


@dataclass
class CalibrationProfile:
    """A fitted per-backend correction ``corrected = scale * predicted + offset`` per coordinate.

    Attributes:
        key: the backend (model) the profile belongs to.
        scale: per coordinate ``(x0, y0, x1, y1)``.
        offset: per coordinate; in fractions of the image side when ``space`` is
            ``normalized`` (the default: a model's drift scales with the image), in pixels
            when ``pixels``.
        n: samples the fit used.
        residuals: summary of the fit in pixels (``mean_abs_before``, ``mean_abs_after``,
            ``median_abs_after``, ``max_abs_after``, per-coordinate ``rms_after``).
        space: ``normalized`` or ``pixels``.
        loss: the robust loss of the fit.
        meta: anything else worth keeping (data, skipped samples, date).
    """

    key: str
    scale: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    n: int = 0
    residuals: dict = field(default_factory=dict)
    space: str = "normalized"
    loss: str = "soft_l1"
    meta: dict = field(default_factory=dict)
    version: int = PROFILE_VERSION

    def apply(self, box: Box, width: int, height: int) -> Box:
        """The corrected box (not clamped)."""
        x0, y0, x1, y1 = _check(box)
        norm = (width, height, width, height) if self.space == "normalized" else (1.0, 1.0, 1.0, 1.0)
        out = [(s * v / d + o) * d for v, s, o, d in zip((x0, y0, x1, y1), self.scale, self.offset, norm)]
        return out[0], out[1], max(out[0], out[2]), max(out[1], out[3])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"], d["offset"] = list(self.scale), list(self.offset)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> CalibrationProfile:
        try:
            if int(d.get("version", 0)) > PROFILE_VERSION:
                raise GeosegError(f"calibration profile {source} is of a newer geoseg (version {d['version']})",
                                  "upgrade geoseg or re-run 'geoseg trainfree calibrate'")
            prof = cls(key=str(d["key"]), scale=tuple(float(v) for v in d["scale"]),  # type: ignore[arg-type]
                       offset=tuple(float(v) for v in d["offset"]),  # type: ignore[arg-type]
                       n=int(d.get("n", 0)), residuals=dict(d.get("residuals", {})),
                       space=str(d.get("space", "normalized")), loss=str(d.get("loss", "soft_l1")),
                       meta=dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GeosegError(f"calibration profile {source} is malformed ({exc})",
                              "delete it or re-run 'geoseg trainfree calibrate'") from exc
        if len(prof.scale) != 4 or len(prof.offset) != 4 or prof.space not in ("normalized", "pixels") or not all(
                math.isfinite(v) for v in (*prof.scale, *prof.offset)):
            raise GeosegError(f"calibration profile {source} is malformed (needs 4 finite scales and offsets)",
                              "delete it or re-run 'geoseg trainfree calibrate'")
        return prof

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON (atomically: no half-written file is ever left)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GeosegError(f"calibration profile {path} does not exist",
                              "run 'geoseg trainfree calibrate' first or check the path") from None
        except (OSError, ValueError) as exc:
            raise GeosegError(f"cannot read calibration profile {path} ({exc})",
                              "delete it or re-run 'geoseg trainfree calibrate'") from exc
        if not isinstance(data, dict):
            raise GeosegError(f"calibration profile {path} is malformed", "re-run 'geoseg trainfree calibrate'")
        return cls.from_dict(data, str(path))


def profile_key(model: str) -> str:
    """A file-name-safe key for a backend, e.g. ``Qwen/Qwen2.5-VL-7B-Instruct`` -> ``Qwen_Qwen2.5-VL-7B-Instruct``."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model)).strip("._")
    if not key:
        raise GeosegError(f"cannot make a profile key of {model!r}", "name the backend with letters or digits")
    return key


def profile_dir() -> Path:
    """Where profiles live: ``$GEOSEG_HOME/trainfree``, else ``$XDG_CONFIG_HOME/geoseg/trainfree`` (``~/.config``)."""
    home = os.environ.get("GEOSEG_HOME")
    if home:
        return Path(home).expanduser() / "trainfree"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "geoseg" / "trainfree"


def profile_path(backend_key: str) -> Path:
    """The profile file of ``backend_key`` (which may not exist yet)."""
    return profile_dir() / f"{profile_key(backend_key)}.json"


def load_profile(backend_key: str) -> CalibrationProfile | None:
    """The saved profile of ``backend_key``, or ``None`` when it was never calibrated."""
    path = profile_path(backend_key)
    return CalibrationProfile.load(path) if path.exists() else None


def refine_box(box: Box, width: int, height: int, profile: CalibrationProfile | None = None) -> Box:
    """The box handed to the segmenter: the calibrated correction when a profile is given, else the fixed rule.

    Either way the result lies inside the ``width`` x ``height`` image and is at least
    16 px on each side (or the whole side of an image smaller than that).
    """
    if profile is None:
        return fixed_rule(box, width, height)
    return min_size_box(clamp_box(profile.apply(box, width, height), width, height), width, height)
