"""Scene lists: which scenes a folder, a glob pattern, a list file (one path a line, or CSV) names."""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

from geoseg.batch.markers import MARKER_DIR
from geoseg.errors import InputError, reason

RASTER_EXTS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".vrt", ".img")


LIST_EXTS = (".txt", ".lst", ".list", ".csv")


GLOB_CHARS = set("*?[")


def is_batch_input(value: str | os.PathLike | Sequence[str]) -> bool:
    """Whether ``value`` names several scenes: a folder, a glob pattern, a list file or a sequence."""
    if not isinstance(value, (str, os.PathLike)):
        return True
    s = os.fspath(value)
    return os.path.isdir(s) or bool(GLOB_CHARS & set(s)) and not os.path.exists(s) or s.lower().endswith(LIST_EXTS)


#: CSV header names of the scene-path column, in order of preference ("location" is gdaltindex's field)
PATH_COLUMNS = ("path", "filepath", "file_path", "location", "file", "filename", "scene", "image", "raster")


def _read_list_file(path: Path) -> list[Path]:
    """The scenes a list file names, relative paths taken from the list's folder.

    A ``.csv`` is read as CSV (:func:`_csv_paths`); any other list has one path per line,
    ``#`` starting a comment at the start of a line or after a space (``scene#2.tif`` is a name).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV starts with a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the scene list {path} ({reason(exc)})", "check the path") from exc
    if path.suffix.lower() == ".csv":
        entries = _csv_paths(text, path)
    else:
        entries = [e for e in (re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip().strip(",")
                               for line in text.splitlines()) if e]
    return [_listed_path(e, path) for e in entries]


def _listed_path(entry: str, list_file: Path) -> Path:
    p = Path(entry).expanduser()
    return p if p.is_absolute() else list_file.parent / p


def _csv_paths(text: str, path: Path) -> list[str]:
    """The scene paths of a CSV list: its path column when a header names one, else its first column.

    A header is recognised by a column named as in :data:`PATH_COLUMNS` (any case);
    the other columns (dates, cloud cover, ...) are ignored. Rows that are blank or
    start with ``#`` are skipped. A first row that is neither a header naming the path
    column nor a scene is refused rather than guessed at.
    """
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1)
            if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0][1]]
    col = next((header.index(name) for name in PATH_COLUMNS if name in header), None)
    if col is not None:
        rows = rows[1:]
    else:
        col, first = 0, rows[0][1][0].strip()
        if not _listed_path(first, path).is_file() and not first.lower().endswith(RASTER_EXTS):
            raise InputError(f"the first row of {path} ({','.join(rows[0][1])}) is neither a scene nor a header "
                             "naming the path column",
                             f"name the column of scene paths {PATH_COLUMNS[0]!r} (or {', '.join(PATH_COLUMNS[1:])})")
    out = []
    for n, row in rows:
        cell = row[col].strip() if col < len(row) else ""
        if not cell:
            raise InputError(f"row {n} of {path} has no scene path (column {col + 1})",
                             "fill in the path or delete the row")
        out.append(cell)
    return out


def expand_scenes(inputs: str | os.PathLike | Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """The scenes named by ``inputs``, in a stable (sorted) order without duplicates.

    Args:
        inputs: a folder (its rasters: .tif .tiff .jpg .jpeg .png .jp2 .vrt .img), a glob
            pattern (``"scenes/*.tif"``, ``**`` with ``recursive``), a list file (.txt/.lst/.list:
            one path per line, ``#`` comments; .csv: a path column, see :func:`_csv_paths`;
            relative paths taken from the list's folder),
            a single file, or a sequence of any of these.
        recursive: also look into sub-folders of a folder.

    Raises:
        InputError: nothing matched, or a listed scene does not exist.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for item in items:
        s = os.fspath(item)
        p = Path(s).expanduser()
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            # hidden files are left out: an interrupted run's temporary outputs (.<name>.*.tmp.tif)
            found += sorted(f for f in it if f.is_file() and f.suffix.lower() in RASTER_EXTS
                            and not f.name.startswith(".") and not any(part == MARKER_DIR for part in f.parts))
        elif p.is_file() and p.suffix.lower() in LIST_EXTS:
            listed = _read_list_file(p)
            missing = [str(f) for f in listed if not f.is_file()]
            if missing:
                raise InputError(f"{len(missing)} scene(s) in {p} do not exist, e.g. {missing[0]}",
                                 "fix the list file (paths are relative to its folder)")
            found += listed
        elif p.is_file():
            found.append(p)
        elif GLOB_CHARS & set(s):
            found += sorted(Path(f) for f in glob.glob(os.path.expanduser(s), recursive=True)
                            if os.path.isfile(f) and f.lower().endswith(RASTER_EXTS))
        else:
            raise InputError(f"{s} does not exist", "give a folder, a glob pattern, a list file or a scene path")
    seen: set[str] = set()
    out = []
    for f in found:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            out.append(Path(key))
    if not out:
        raise InputError(f"no scenes found in {', '.join(map(os.fspath, items))}",
                         f"give a folder or pattern matching rasters ({', '.join(RASTER_EXTS)})")
    return out
