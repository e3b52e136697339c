"""The output folder's safety: no scene overwritten, no earlier output taken for a scene, no leftovers."""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from geoseg.batch.jobs import BatchOptions
from geoseg.batch.markers import MARKER_DIR, _marker_outputs, _scene_outputs
from geoseg.errors import InputError

log = logging.getLogger(__name__)


def _drop_previous_outputs(scenes: list[Path], out_dir: Path) -> list[Path]:
    """``scenes`` without the files an earlier batch wrote into ``out_dir`` (its done markers list them).

    An output folder inside (or equal to) the input folder must not make the next run
    segment the previous run's masks and score rasters as if they were scenes.
    """
    previous: set[str] = set()
    for marker in (out_dir / MARKER_DIR).glob("*.json"):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        previous.update(os.path.abspath(p) for p in _marker_outputs(data, out_dir).values())
    kept = [s for s in scenes if os.path.abspath(s) not in previous]
    if len(kept) < len(scenes):
        log.info("left out %d file(s) a previous batch wrote into %s", len(scenes) - len(kept), out_dir)
    if not kept:
        raise InputError(f"no scenes left: every file found is an output of a previous batch in {out_dir}",
                         "give the folder of the scenes, not the output folder")
    return kept


def _check_no_overwrite(scenes: Sequence[Path], out_dir: Path, opts: BatchOptions,
                        merged_vector: str | os.PathLike | None = None) -> None:
    """Refuse a batch whose outputs would replace one of its scenes or one another.

    ``-o`` = the scenes' folder would replace scenes by masks; ``x.tif`` and ``x_score.tif``
    with ``--score-raster`` would write the same ``x_score.tif``; a ``--merged-vector`` named
    like a scene's vector layer would replace it.
    """
    inputs = {os.path.abspath(s): s for s in scenes}
    written: dict[str, Path] = {}
    for s in scenes:
        for path in _scene_outputs(s, out_dir, opts).values():
            key = os.path.abspath(path)
            hit = inputs.get(key)
            if hit is not None:
                raise InputError(f"the outputs of {s.name} would overwrite the scene {hit}",
                                 "give an output folder (-o) other than the scenes' folder")
            if key in written:
                raise InputError(f"two scenes would write the same output {Path(path).name} ({written[key]} and {s})",
                                 "rename one of them or run them as separate batches")
            written[key] = s
    if merged_vector is not None and os.path.abspath(merged_vector) in written:
        raise InputError(f"--merged-vector {merged_vector} is the vector output of {written[os.path.abspath(merged_vector)]}",
                         "give the merged layer another name")


def _remove_stale_temps(outputs: Sequence[str]) -> None:
    """Remove the temporary files a killed run left next to ``outputs`` (``.<name>.XXXX.tmp<ext>``).

    A scene's outputs are written to such files and moved into place at the end; a run
    killed with SIGKILL never removes them. Only the outputs about to be (re)written are
    looked at, so nothing else in the folder is touched.
    """
    for out in outputs:
        folder, name = os.path.split(os.path.abspath(out))
        # ".<name>.XXXX.tmp.<ext>", and a shapefile's companions (.dbf, .shx, .prj, ...) or GDAL's .aux.xml
        for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp.*")):
            try:
                os.unlink(tmp)
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError:
                pass
