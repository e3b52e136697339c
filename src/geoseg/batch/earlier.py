"""Outputs an earlier batch made in the output folder with other options: found, described, removed."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.batch.markers import MARKER_DIR, _job_hash, _marker_outputs

log = logging.getLogger(__name__)


#: job-key fields shown under their command-line names
_OPTION_NAMES = {"prompt_layer": "prompt-file", "prompt_crs": "prompt-crs", "tile_size": "tile-size",
                 "score_raster": "score-raster"}


def _option_set(key: dict) -> dict:
    """A job key without the prompt layer's content digest: the options the user chose, not the data.

    Editing the prompt layer's features is a change of data (like an edited scene): those
    scenes are redone as on any resume. Pointing at another layer file is an option change.
    """
    layer = key.get("prompt_layer")
    return {**key, "prompt_layer": {"path": layer.get("path")} if isinstance(layer, dict) else layer}


def _differences(old: dict, new: dict) -> list[str]:
    """The options that differ between two job keys, by their command-line names."""
    names = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "backend_options" and isinstance(a, dict) and isinstance(b, dict):
            names += [n.replace("_", "-") for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        else:
            names.append(_OPTION_NAMES.get(k, k.replace("_", "-")))
    return names


@dataclass
class EarlierOutputs:
    """Scenes an earlier batch segmented into the output folder with other options."""

    markers: list[Path]
    outputs: list[str]
    differences: list[str]

    def __bool__(self) -> bool:
        return bool(self.markers)

    def describe(self) -> str:
        return (f"{len(self.markers)} scene(s) segmented with other options "
                f"(differs in: {', '.join(self.differences) or 'unknown'})")

    def remove(self, out_dir: Path, scenes: Sequence[Path]) -> str:
        """Delete those outputs and their markers (never a file outside ``out_dir`` or a scene); say what was done."""
        from geoseg.vector import vector_files

        keep = {os.path.abspath(s) for s in scenes}
        folder = os.path.abspath(out_dir) + os.sep
        for out in self.outputs:
            for f in vector_files(out) + [out + ".aux.xml"]:
                if os.path.abspath(f).startswith(folder) and os.path.abspath(f) not in keep and os.path.isfile(f):
                    os.unlink(f)
        for marker in self.markers:
            marker.unlink(missing_ok=True)
        note = f"--overwrite: removed the outputs of {self.describe()}"
        log.info(note)
        return note


def earlier_option_sets(out_dir: Path, job_key: dict) -> EarlierOutputs:
    """The done markers in ``out_dir`` whose outputs are still there and whose options are not ``job_key``'s."""
    mine = _option_set(json.loads(json.dumps(job_key, default=str)))  # as a marker stores it
    found = EarlierOutputs([], [], [])
    for marker in sorted((out_dir / MARKER_DIR).glob("*.json")):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "job" not in data:  # the summary, or not a marker
            continue
        outputs = [p for p in _marker_outputs(data, out_dir).values() if os.path.exists(p)]
        old = data.get("job_key")
        if not outputs or data["job"] == _job_hash(job_key) or isinstance(old, dict) and _option_set(old) == mine:
            continue
        found.markers.append(marker)
        found.outputs += outputs
        diff = _differences(old, mine) if isinstance(old, dict) else ["options not recorded"]
        found.differences += [d for d in diff if d not in found.differences]
    return found
