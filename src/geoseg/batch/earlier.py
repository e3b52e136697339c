"""Outputs an earlier batch made in the output folder with other options: found, described, set aside by
--overwrite, and removed or put back when the run ends."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.batch.markers import MARKER_DIR, _job_hash, _marker_outputs, _output_files
from geoseg.errors import GeosegError, reason

log = logging.getLogger(__name__)

#: where --overwrite keeps the earlier outputs while the run has done no scene: in the output folder (one
#: filesystem, so each move is an atomic rename, no copy), under the markers' folder, which no marker glob
#: and no scene search looks into; ``files/`` holds them at their paths relative to the output folder
ASIDE_DIR = f"{MARKER_DIR}/overwritten"
_MOVES = "moves.json"  # the list of moves, in place before the first file moves
_DISK_FIX = "free some space or make the output folder writable, then run again"


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

    def set_aside(self, out_dir: Path, scenes: Sequence[Path]) -> SetAside:
        """Move those outputs and their markers into ``ASIDE_DIR`` (never a file outside ``out_dir`` or a scene).

        Until the run has done a scene they are only out of the way; :meth:`SetAside.end` then
        removes them or puts them back.
        """
        keep = {os.path.abspath(s) for s in scenes}
        folder = os.path.abspath(out_dir) + os.sep
        files = _output_files(self.outputs)
        paths = dict.fromkeys(os.path.abspath(f) for f in [*files, *map(str, self.markers)])
        aside = SetAside(out_dir, self.describe(), [os.path.relpath(f, out_dir) for f in paths
                                                    if f.startswith(folder) and f not in keep and os.path.isfile(f)],
                         _marker_ids(out_dir))
        aside.move()
        log.info("--overwrite: set aside the outputs of %s in %s until a scene is done", aside.description,
                 aside.folder)
        return aside


def _marker_ids(out_dir: Path) -> list[list[int]]:
    """Each done marker's identity (inode, modification time): a rename keeps it, a marker written anew has another."""
    ids = []
    for marker in (out_dir / MARKER_DIR).glob("*.json"):
        try:
            st = marker.stat()
        except OSError:
            continue
        ids.append([st.st_ino, st.st_mtime_ns])
    return sorted(ids)


@dataclass
class SetAside:
    """Earlier outputs --overwrite moved into ``out_dir/ASIDE_DIR``: removed once the run has done a scene, else put back.

    So a run that produces nothing (every scene failed, Ctrl-C or an error before the first scene
    was done) leaves the folder as it found it, as ``ogr2ogr -overwrite`` keeps the old file when
    the new one fails. "Done" is read from the markers (a scene is done when its marker is
    written), so a run killed with SIGKILL is settled by the same rule by the next run into the
    folder (:func:`settle_leftover`).
    """

    out_dir: Path
    description: str  # EarlierOutputs.describe()
    moved: list[str]  # relative to out_dir, in ASIDE_DIR/files under the same relative path
    markers: list[list[int]]  # _marker_ids(out_dir) just before the move

    @property
    def folder(self) -> Path:
        return self.out_dir / ASIDE_DIR

    def move(self) -> None:
        """Move the files aside; on a failure (a full or read-only disk) put back those moved and raise.

        The folders and the list of moves are made first, so such a disk stops it before a file moves.
        """
        files, done = self.folder / "files", []
        if os.path.lexists(self.folder):  # settle_leftover() ran before: only another run at the same time
            raise GeosegError(f"{self.folder} is in use", "run one --overwrite batch into a folder at a time")
        try:
            for d in sorted({(files / rel).parent for rel in self.moved}):
                d.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{_MOVES}.tmp"
            tmp.write_text(json.dumps({"description": self.description, "moved": self.moved,
                                       "markers": self.markers}))
            os.replace(tmp, self.folder / _MOVES)
            for rel in self.moved:
                os.replace(self.out_dir / rel, files / rel)
                done.append(rel)
        except BaseException as exc:  # Ctrl-C too: the files go back where they were
            for rel in reversed(done):
                os.replace(files / rel, self.out_dir / rel)
            shutil.rmtree(self.folder, ignore_errors=True)
            if not isinstance(exc, OSError):
                raise
            raise GeosegError(f"--overwrite could not set the earlier outputs aside in {self.folder} ({reason(exc)}); "
                              "nothing was changed", _DISK_FIX) from exc

    def a_scene_was_done(self) -> bool:
        """Whether a marker was written since the move, i.e. the run that set them aside has done a scene."""
        before = {tuple(i) for i in self.markers}
        return any(tuple(i) not in before for i in _marker_ids(self.out_dir))

    def settle(self) -> bool:
        """Remove the set-aside files if a scene was done, else put each back where it was; True when put back.

        Put back only when no scene was done, so no marker, and no output of a done scene, is
        replaced; a failed scene leaves no output. The list of moves goes last: a settle cut
        short is finished by the next one.
        """
        kept = not self.a_scene_was_done()
        files = self.folder / "files"
        if kept:
            for rel in self.moved:
                if os.path.lexists(files / rel):
                    os.replace(files / rel, self.out_dir / rel)
        if os.path.lexists(files):
            shutil.rmtree(files)
        (self.folder / _MOVES).unlink(missing_ok=True)
        self.folder.rmdir()
        return kept

    def end(self, exc: BaseException | None = None) -> str:
        """Settle when the run ends; the note says what became of the earlier outputs (the summary's ``earlier``).

        After an exception ``exc`` the summary never comes: the note is logged as a warning and
        added to ``exc``, and a failure to settle leaves the folder to the next run, not hiding ``exc``.
        """
        try:
            kept = self.settle()
        except OSError as err:
            note = (f"--overwrite: could not settle the earlier outputs set aside in {self.folder} ({reason(err)}); "
                    "the next run into the folder does it")
            if exc is None:
                raise GeosegError(note, _DISK_FIX) from err
            log.warning(note)
            return note
        note = (f"--overwrite: kept the outputs of {self.description}, as no scene of this run was done" if kept
                else f"--overwrite: removed the outputs of {self.description}")
        if exc is None:
            log.info(note)
        else:
            log.warning(note)
            if hasattr(exc, "add_note"):  # Python 3.11+: shown with the traceback; the CLI's one-line error stays
                exc.add_note(note)
        return note

    @classmethod
    def load(cls, out_dir: Path) -> SetAside | None:
        """What a run killed before its end (SIGKILL, a power cut) left in ``ASIDE_DIR``, or None."""
        folder = out_dir / ASIDE_DIR
        if not os.path.lexists(folder):
            return None
        try:
            data = json.loads((folder / _MOVES).read_text())
            return cls(out_dir, str(data["description"]), [str(p) for p in data["moved"]],
                       [list(i) for i in data["markers"]])
        except (OSError, ValueError, KeyError, TypeError):  # killed before the list was in place: nothing moved
            if any(p.is_file() for p in (folder / "files").rglob("*")):
                raise GeosegError(f"{folder} holds files set aside by --overwrite, but not their list",
                                  f"move the files in {folder / 'files'} back into {out_dir}, "
                                  f"then delete {folder}") from None
            shutil.rmtree(folder)
            return None


def settle_leftover(out_dir: Path) -> str | None:
    """Settle what an --overwrite run killed before its end left set aside in ``out_dir``, as that run would have.

    Its earlier outputs are put back when it had done no scene, else removed (the folder is
    then that run's option set, and a rerun resumes its done scenes). Run before the folder's
    option sets are looked at, so the run that finds the leftover sees the folder as settled.
    """
    aside = SetAside.load(out_dir)
    if aside is None:
        return None
    try:
        kept = aside.settle()
    except OSError as err:
        raise GeosegError(f"cannot settle the earlier outputs an --overwrite run left set aside in {aside.folder} "
                          f"({reason(err)})", _DISK_FIX) from err
    note = (f"--overwrite: an earlier run into {out_dir} did not end (killed?) and left the outputs of "
            f"{aside.description} set aside; " + ("put them back, as it had done no scene" if kept
                                                  else "removed them, as it had done a scene"))
    log.warning(note)
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
