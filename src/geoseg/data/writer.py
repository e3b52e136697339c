"""Streaming Parquet shard writer and the build manifest.

Rows arrive scene by scene (already in a deterministic order); each split gets its own
sequence of shards ``{split}/part-NNNNN.parquet`` rotated every ``shard_rows`` rows, so
memory holds one row group at most. Shards are written under a temporary name and renamed
when complete; the engine writes the whole build into a :func:`staged_dir` sibling folder that
replaces the output folder only once the build is complete, so an interrupted build leaves
neither a half shard nor a folder of some shards without their manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geoseg.data.schema import SHARD_SCHEMA
from geoseg.digest import sha256_file
from geoseg.errors import InputError, reason

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


class ShardWriter:
    """Writes row tables into per-split rotating shards."""

    def __init__(self, out_dir: str | os.PathLike, shard_rows: int = 50_000, row_group_rows: int = 10_000,
                 compression: str = "zstd") -> None:
        self.out = Path(out_dir)
        self.shard_rows = int(shard_rows)
        self.row_group_rows = int(row_group_rows)
        self.compression = compression
        self._open: dict[str, tuple[pq.ParquetWriter, Path, Path, int]] = {}
        self._index: dict[str, int] = {}
        self.shards: list[dict] = []

    def _start(self, split: str) -> None:
        i = self._index.get(split, 0)
        self._index[split] = i + 1
        final = self.out / split / f"part-{i:05d}.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        w = pq.ParquetWriter(str(tmp), SHARD_SCHEMA, compression=self.compression, use_dictionary=True,
                             write_statistics=True)
        self._open[split] = (w, tmp, final, 0)

    def write(self, table: pa.Table) -> None:
        """Append rows (any splits) in order."""
        if table.num_rows == 0:
            return
        splits = table.column("split").to_pylist()
        for split in dict.fromkeys(splits):
            sub = table.filter(pc.equal(table.column("split"), split)) if len(set(splits)) > 1 else table
            start = 0
            while start < sub.num_rows:
                if split not in self._open:
                    self._start(split)
                w, tmp, final, n = self._open[split]
                take = min(sub.num_rows - start, self.shard_rows - n)
                w.write_table(sub.slice(start, take), row_group_size=self.row_group_rows)
                n += take
                start += take
                self._open[split] = (w, tmp, final, n)
                if n >= self.shard_rows:
                    self._finish(split)

    def _finish(self, split: str) -> None:
        w, tmp, final, n = self._open.pop(split)
        w.close()
        os.replace(tmp, final)
        self.shards.append({"path": str(final.relative_to(self.out)), "split": split, "rows": n,
                            "sha256": sha256_file(final)})

    def close(self) -> list[dict]:
        """Finish every open shard; returns the shard list (path, split, rows, sha256)."""
        for split in list(self._open):
            self._finish(split)
        self.shards.sort(key=lambda s: s["path"])
        return self.shards

    def abort(self) -> None:
        """Drop unfinished shards (called on failure)."""
        for split in list(self._open):
            w, tmp, _, _ = self._open.pop(split)
            try:
                w.close()
            finally:
                tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


#: a staging folder (or the set-aside previous output) of :func:`staged_dir`:
#: ``.{name}.staging.{host}.{pid}.{random}`` (``-old`` appended to the set-aside one)
_STAGING = re.compile(r"^\.(?P<name>.+)\.staging\.(?P<host>.+)\.(?P<pid>\d+)\.(?P<rand>[a-z0-9_]+)(?P<old>-old)?$")


def _host() -> str:
    return socket.gethostname()[:40] or "localhost"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: somebody else's live process
        return True
    try:  # a killed process not yet reaped by its parent (a zombie) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_staging(out: Path) -> list[Path]:
    """Staging folders of ``out`` left by runs of this machine that died (``kill -9``, power loss).

    Only folders named by :func:`staged_dir` for this very output, whose process no longer
    exists, are listed: a concurrent run's folder and anything else are never touched.
    """
    stale = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        m = _STAGING.match(p.name)
        if m and m["name"] == out.name and m["host"] == _host() and not _alive(int(m["pid"])) and p.is_dir():
            stale.append(p)
    return sorted(stale)


def clean_stale_staging(out: Path) -> None:
    """Remove :func:`stale_staging` folders; a set-aside previous output goes back to ``out`` if that is missing.

    (A run killed between setting the old folder aside and moving the new one in leaves ``out``
    absent; the old, complete folder is then restored rather than deleted.)
    """
    for p in stale_staging(out):
        if p.name.endswith("-old") and not out.exists():
            try:
                os.replace(p, out)
                log.warning("restored %s from the interrupted run that had set it aside", out)
                continue
            except OSError:
                pass
        log.info("removing %s, left by an interrupted run", p)
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; on success it replaces ``out``, on any error it is removed.

    A folder output (a build, an export, a materialised split) is thus either complete or
    absent: a failed or interrupted run never leaves a half-written folder under the user's
    name, and an earlier output in ``out`` stays as it was until the new one is complete. The
    staging folder is hidden (``.{name}.staging.{host}.{pid}.{random}``); one left by a run
    that was killed outright (``kill -9``) is removed by the next run for the same ``out``.
    Parent folders created here are removed again on failure.
    """
    out = Path(out)
    missing = []
    p = out.parent
    while not p.exists() and p != p.parent:
        missing.append(p)  # deepest first
        p = p.parent
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging.{_host()}.{os.getpid()}.", dir=out.parent))
    except OSError as exc:
        _remove_empty(missing)
        raise InputError(f"cannot create a folder next to {out} ({reason(exc)})",
                         "choose an output folder in a place you can write to") from exc
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary output folder
        yield tmp
        aside = tmp.with_name(tmp.name + "-old")
        if out.exists() or out.is_symlink():
            os.replace(out, aside)  # a rename: the old output is never seen half-deleted under its name
        try:
            os.replace(tmp, out)
        except BaseException:
            if aside.exists() and not out.exists():
                os.replace(aside, out)
            raise
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        elif aside.exists() or aside.is_symlink():
            aside.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(missing)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders created for an output that failed (deepest first; stop at one that is not empty)."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break
