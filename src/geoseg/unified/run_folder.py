"""The run folder: checks before a run writes it, and its ``history.jsonl``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from geoseg.errors import GeosegError, InputError, reason

#: files that make a folder a run: a fresh start there would overwrite them (``--resume`` continues them)
RUN_ARTEFACTS = ("last.pt", "best.pt", "history.jsonl")


def check_writable(path: str | Path, what: str) -> None:
    """One line, before any work, when the file ``path`` (``what``: "--export", "train.out_dir") could not be written.

    :func:`geoseg.raster.writer.check_writable_folder` (an ancestor that is a file, a folder without
    write permission), then a real test: a nameless temporary file in the nearest existing folder,
    which catches what permission bits do not show (root in /proc, a read-only mount) and leaves nothing.
    """
    from geoseg.raster.writer import check_writable_folder

    check_writable_folder(str(path))
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise GeosegError(f"cannot write {what} {path}: {folder} takes no new files ({reason(exc)})",
                          "give a path in a folder you can write to") from exc


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse, in one line and before any work, a run folder this run cannot or must not write.

    It must be a folder this process can create or write in; a fresh start must not land in a
    folder that already holds a run (its checkpoints would be overwritten and ``history.jsonl``
    would mix two runs), and ``--resume`` needs the run's ``last.pt``. A folder with no run
    artefacts (say ``train.log`` of a start stopped before its first epoch) may be started in.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"train.out_dir {out_dir} is a file, not a folder", "set train.out_dir (or --out) to a folder")
    check_writable(out_dir / "last.pt", "train.out_dir")
    last = out_dir / "last.pt"
    if resume and not last.is_file():
        raise InputError(f"--resume given but {last} does not exist", "drop --resume to start afresh")
    found = [n for n in RUN_ARTEFACTS if (out_dir / n).exists()]
    if not resume and found:
        raise InputError(f"{out_dir} already holds a run ({' / '.join(found)})",
                         "use --resume to continue it, or another train.out_dir (--out)")


def write_history(out_dir: Path, history: list[dict]) -> None:
    """``history.jsonl`` rewritten (atomically) to hold exactly ``history``."""
    tmp = out_dir / "history.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in history))
    os.replace(tmp, out_dir / "history.jsonl")


__all__ = ["RUN_ARTEFACTS", "check_out_dir", "check_writable", "write_history"]
