"""Export a build to UniGeoSeg's GeoSeg-Bench layout, so tools written for that benchmark read it.

Layout written (paths in the split files are relative to the export folder)::

    {split}.json                  list of {"img": ..., "mask": ..., "json": ...}
    {intera,ref,reason}/images/   the tile as display RGB (PNG)
    {intera,ref,reason}/masks/    the target, PNG 0/255 (all 0 for no-target rows)
    {intera,ref,reason}/json/     QA json {"question": [...], "reason": [...], ...}

The task is given by the folder, as in GeoSeg-Bench. Rows of one tile, task and target
share one image/mask/QA triple whose ``question`` list holds every instruction (and
``reason`` the matching answers); ``category``, ``level``, ``empty_target``, ``sample_id``
and ``provenance`` are extra keys that GeoSeg-Bench readers ignore. The export is written to
a temporary folder next to the destination and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg._version import __version__
from geoseg.data.dataset import read_rows
from geoseg.data.imagery import read_rgb
from geoseg.data.writer import staged_dir
from geoseg.errors import InputError
from geoseg.progress import progress
from geoseg.rle import rle_decode

log = logging.getLogger(__name__)

TASK_DIRS = {"interactive": "intera", "referring": "ref", "reasoning": "reason"}
MARKER = ".geoseg-export"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _safe(s: str) -> str:
    return _SAFE.sub("_", s).strip("_")


class _Names:
    """File-name-safe names that stay distinct: two originals that sanitise to the same name (non-ASCII
    scene or category names, ``a b`` and ``a_b``) would overwrite each other's files, so a later one
    gets a short hash of its original appended. Names without a clash are plain ``_safe`` names."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def __call__(self, original: str) -> str:
        name = _safe(original)
        owner = self._owner.setdefault(name, original)
        if owner != original:
            name = f"{name}-{hashlib.sha1(original.encode('utf-8')).hexdigest()[:10]}"
            self._owner.setdefault(name, original)
        return name


def _group_key(row: dict) -> str:
    """Sample id without its ``-n`` counter (tile/target/task), plus the category for no-target rows."""
    base = row["sample_id"].rsplit("-", 1)[0]
    return f"{base}/{row['category']}" if row["empty_target"] else base


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", compress_level=1)  # 0/255 masks compress well even so


def export_geoseg_bench(build_dir: str | Path, out_dir: str | Path, splits: Sequence[str] | None = None,
                        tasks: Sequence[str] | None = None, overwrite: bool = False) -> dict:
    """Write the rows of ``build_dir`` (optionally some splits/tasks) in the GeoSeg-Bench layout.

    Returns:
        ``{split: {"entries": n, "questions": m}}``.
    """
    out = Path(out_dir)
    build_abs, out_abs = Path(build_dir).resolve(), out.resolve()
    if out_abs == build_abs or build_abs in out_abs.parents:
        # files in a build folder that a build does not write make the next build into it refuse
        raise InputError(f"export folder {out} is inside the build {build_dir}", "export to a folder outside the build")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError(f"{out} exists and is not a geoseg export", "choose a new folder for the export")
    if out.exists() and (out / MARKER).exists() and not overwrite:
        raise InputError(f"{out} already holds an export", "pass --overwrite to replace it")
    bad = set(tasks or ()) - set(TASK_DIRS)
    if bad:
        raise InputError(f"unknown tasks {sorted(bad)}", f"use {', '.join(TASK_DIRS)}")
    manifest = json.loads((Path(build_dir) / "manifest.json").read_text()) if (Path(build_dir) / "manifest.json").exists() else {}
    rows = read_rows(build_dir, tasks=tasks)
    if splits:
        rows = [r for r in rows if r["split"] in set(splits)]
    if not rows:
        raise InputError(f"no rows to export from {build_dir}", "check --split/--task against 'geoseg data info'")
    with staged_dir(out) as tmp:
        summary = _write(rows, tmp, manifest)
        (tmp / MARKER).write_text(json.dumps({"geoseg_version": __version__, "source": str(Path(build_dir).resolve())}) + "\n")
    return summary


def _write(rows: list[dict], root: Path, manifest: dict) -> dict:
    for d in TASK_DIRS.values():
        for sub in ("images", "masks", "json"):
            (root / d / sub).mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    split_entries: dict[str, list[dict]] = {}
    written_images: set[str] = set()
    tile_names, target_names = _Names(), _Names()
    last_tile: tuple[str, np.ndarray] | None = None
    summary: dict[str, dict[str, int]] = {}
    provenance = {"generator": f"geoseg {__version__} data engine", "schema_version": manifest.get("schema_version"),
                  "seed": (manifest.get("config") or {}).get("seed")}
    for key, members in progress(groups.items(), desc="export", total=len(groups), unit="target"):
        r0 = members[0]
        tdir = TASK_DIRS[r0["task"]]
        w = r0["window"]
        tile_name = tile_names(f"{r0['source']}_{r0['scene']}_{w['col_off']}_{w['row_off']}")
        img_rel = f"{tdir}/images/{tile_name}.png"
        if img_rel not in written_images:
            tile_id = f"{r0['image_path']}|{r0['image_key']}|{w}|{r0['bands']}|{r0['stretch']}"
            if last_tile is None or last_tile[0] != tile_id:
                last_tile = (tile_id, read_rgb(r0))
            _save_png(last_tile[1], root / img_rel)
            written_images.add(img_rel)
        name = target_names(key.replace("/", "__"))
        mask_rel, json_rel = f"{tdir}/masks/{name}.png", f"{tdir}/json/{name}.json"
        _save_png(rle_decode(r0["mask"]).astype(np.uint8) * 255, root / mask_rel)
        qa = {
            "question": [m["instruction"] for m in members],
            "reason": [m["answer"] for m in members],
            "category": r0["category"],
            "level": [int(m["level"]) for m in members],
            "empty_target": bool(r0["empty_target"]),
            "sample_id": [m["sample_id"] for m in members],
            "provenance": provenance,
        }
        (root / json_rel).write_text(json.dumps(qa, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        split_entries.setdefault(r0["split"], []).append({"img": img_rel, "mask": mask_rel, "json": json_rel})
        s = summary.setdefault(r0["split"], {"entries": 0, "questions": 0})
        s["entries"] += 1
        s["questions"] += len(members)
    for split, entries in split_entries.items():
        (root / f"{split}.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    log.info("exported %s", summary)
    return summary
