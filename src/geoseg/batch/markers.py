"""Done markers (the resume record of each finished scene), the scenes' output paths and the run summary."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from geoseg.batch.jobs import BatchOptions
from geoseg.batch.outcomes import BatchSummary, SceneOutcome
from geoseg.errors import GeosegError, reason

log = logging.getLogger(__name__)

MARKER_DIR = ".geoseg-batch"


#: the last run's summary (--json), in a sub-folder: a marker is <scene stem>.json, so "summary.json" could be one
SUMMARY_FILE = f"{MARKER_DIR}/run/summary.json"


def _scene_outputs(scene: Path, out_dir: Path, opts: BatchOptions) -> dict[str, str]:
    stem = scene.stem
    outs = {"mask": str(out_dir / f"{stem}.tif")}
    if opts.vector:
        outs["vector"] = str(out_dir / f"{stem}.{opts.vector}")
    if opts.score_raster:
        outs["score_raster"] = str(out_dir / f"{stem}_score.tif")
    return outs


def _marker_path(scene: Path, out_dir: Path) -> Path:
    return out_dir / MARKER_DIR / f"{scene.stem}.json"


def _scene_fingerprint(scene: Path) -> dict:
    st = scene.stat()
    return {"path": str(scene), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _job_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker_outputs(data: dict, out_dir: Path) -> dict[str, str]:
    """The outputs a done marker lists, as paths in ``out_dir`` (where they always are).

    Taken by file name, so a marker written with a relative ``-o`` from another working
    directory, or an output folder moved as a whole, still finds its outputs.
    """
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict):
        return {}
    return {k: str(out_dir / Path(v).name) for k, v in outputs.items() if isinstance(v, str)}


def is_complete(scene: Path, out_dir: Path, job_key: dict) -> bool:
    """Whether a previous run finished this scene with the same job (and its outputs are there)."""
    marker = _marker_path(scene, out_dir)
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("job") != _job_hash(job_key) \
            or data.get("scene") != _scene_fingerprint(scene):
        return False
    return all(os.path.isfile(p) for p in _marker_outputs(data, out_dir).values())


def _write_marker(scene: Path, out_dir: Path, job_key: dict, outcome: SceneOutcome) -> None:
    _write_json(_marker_path(scene, out_dir),
                {"job": _job_hash(job_key), "scene": _scene_fingerprint(scene), "job_key": job_key,
                 "outputs": outcome.outputs, "mask_pixels": outcome.mask_pixels,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _mark_done(scene: Path, out_dir: Path, job_key: dict, outcome: SceneOutcome) -> None:
    """Write the done marker of a scene whose outputs are in place; when it cannot be written, remove them and raise.

    A scene's outputs count only with their marker: a rerun redoes a scene without one, and
    --overwrite reads "a scene was done" from the markers, so outputs left without a marker would
    sit in the folder as done work (merged by a later run, next to the earlier outputs
    --overwrite puts back). Any failure (Ctrl-C too) removes every file of them; an ``OSError``
    (a full disk, a read-only marker folder) becomes a one-line :class:`GeosegError`, so the scene
    is reported as failed and ``on_error`` decides whether the batch goes on.
    """
    try:
        _write_marker(scene, out_dir, job_key, outcome)
    except BaseException as exc:
        left = _remove_files(_output_files(outcome.outputs.values()))
        if not isinstance(exc, OSError):
            raise
        removed = "its outputs were removed" if not left else \
            f"its outputs could not all be removed ({left[0][1]}): delete {', '.join(p for p, _ in left)}"
        raise GeosegError(f"cannot write the done marker of {scene.name} ({reason(exc)}); {removed}",
                          f"free some space or make {out_dir / MARKER_DIR} writable, then run again: "
                          "the scene is redone") from exc


def _output_files(outputs: Iterable[str]) -> list[str]:
    """Every file the outputs consist of: a Shapefile's companions and a raster's ``.aux.xml`` included."""
    from geoseg.vector import vector_files

    return [f for out in outputs for f in [*vector_files(out), out + ".aux.xml"]]


def _remove_files(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Delete ``paths`` (those missing are fine); the ones that could not be deleted, each with the reason."""
    left = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            left.append((path, reason(exc)))
    return left


def _write_json(path: Path, data: dict, indent: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` atomically: into a temp file beside it, moved over ``path`` once complete.

    So a reader (a resuming run, --overwrite's look at the markers) never finds half a file, and
    a write that fails (a full disk) leaves ``path`` as it was and no temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=indent, default=str))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _write_summary(out_dir: Path, summary: BatchSummary) -> None:
    """The last run's summary (a scene named "summary" has the marker ``summary.json``: not the same file).

    One that cannot be written (a full disk, a read-only marker folder: the scenes then failed
    for the same reason) is a warning, not an error: the run's outcome is printed and returned
    anyway, and a traceback at the end of the run would hide it. An earlier run's summary is then
    removed where it can be, so the file never passes for this run's.
    """
    path = out_dir / SUMMARY_FILE
    try:
        _write_json(path, summary.to_dict(), indent=1)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        log.warning("could not write the run summary %s (%s); free some space or make %s writable",
                    path, reason(exc), path.parent)
