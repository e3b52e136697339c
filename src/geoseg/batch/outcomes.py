"""What happened to each scene, the batch summary, and the progress bars that follow it."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from geoseg.batch.jobs import OnError
from geoseg.errors import GeosegError
from geoseg.progress import progress_enabled

log = logging.getLogger(__name__)


@dataclass
class SceneOutcome:
    """What happened to one scene."""

    scene: str
    status: Literal["done", "skipped", "failed"]
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    n_windows: int = 0
    mask_pixels: int = 0
    mask_area: float = 0.0
    area_unit: str = "px"
    scene_km2: float | None = None
    seconds: float = 0.0


@dataclass
class BatchSummary:
    """The batch's result; ``to_dict()`` is the ``--json`` output."""

    scenes: list[SceneOutcome]
    seconds: float
    backend: str
    workers: int | str
    merged_vector: str | None = None
    notes: list[str] = field(default_factory=list)
    earlier: str | None = None  # what --overwrite did with an earlier run's outputs of other options

    def count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    @property
    def failed(self) -> list[SceneOutcome]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def km2_per_min(self) -> float | None:
        km2 = sum(s.scene_km2 or 0.0 for s in self.scenes if s.status == "done")
        return km2 / (self.seconds / 60) if km2 and self.seconds > 0 else None

    def to_dict(self) -> dict:
        return {
            "done": self.count("done"), "skipped": self.count("skipped"), "failed": self.count("failed"),
            "seconds": round(self.seconds, 3), "backend": self.backend, "workers": self.workers,
            "km2_per_min": self.km2_per_min, "merged_vector": self.merged_vector, "notes": self.notes,
            "earlier": self.earlier,
            "scenes": [asdict(s) for s in self.scenes],
        }

    def report(self) -> str:
        """A few human-readable lines for the CLI."""
        lines = [f"{len(self.scenes)} scene(s): {self.count('done')} done, {self.count('skipped')} skipped "
                 f"(already complete), {self.count('failed')} failed in {self.seconds:.1f}s "
                 f"[backend {self.backend}, workers {self.workers}]"]
        if self.earlier:
            lines.append(self.earlier)
        lines += [f"note: {n}" for n in dict.fromkeys(self.notes)]  # a backend fallback: once per batch
        if self.km2_per_min:
            lines.append(f"throughput: {self.km2_per_min:.2f} km²/min")
        empty = [Path(s.scene).name for s in self.scenes if s.status == "done" and s.mask_pixels == 0]
        if empty:
            shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            lines.append(f"nothing found in {len(empty)} of {self.count('done')} scene(s) done: {shown}")
        for s in self.failed:
            lines.append(f"failed: {s.scene}: {s.error}")
        if self.merged_vector:
            lines.append(f"merged vector layer: {self.merged_vector}")
        return "\n".join(lines)


def _bars(n_scenes: int):
    from tqdm.auto import tqdm

    off = not progress_enabled()
    return (tqdm(total=n_scenes, desc="scenes", unit="scene", disable=off, position=0),
            tqdm(total=0, desc="tiles", unit="tile", disable=off, position=1, leave=False))


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, GeosegError) else f"{type(exc).__name__}: {text}"


def _failed(scene: Path, exc: BaseException, on_error: OnError, t0: float) -> SceneOutcome:
    from geoseg.raster.read_errors import unreadable

    if not isinstance(exc, GeosegError):  # a read the client made itself: GDAL's reason is in the chain
        exc = unreadable(scene.name, exc) or exc
    msg = _error_text(exc)
    if on_error == "fail":
        if isinstance(exc, GeosegError):
            raise GeosegError(f"scene {scene.name} failed: {exc.problem}", exc.fix) from exc
        raise GeosegError(f"scene {scene.name} failed: {msg}", "fix the scene or run with --on-error skip") from exc
    log.info("scene %s failed: %s", scene, msg)  # listed in the summary (the CLI prints it once)
    return SceneOutcome(scene=str(scene), status="failed", error=msg, seconds=round(time.perf_counter() - t0, 3))
