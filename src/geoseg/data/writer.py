"""Streaming Parquet shard writer and the build manifest.

Rows arrive scene by scene (already in a deterministic order); each split gets its own
sequence of shards ``{split}/part-NNNNN.parquet`` rotated every ``shard_rows`` rows, so
memory holds one row group at most. Shards are written under a temporary name in the
destination folder and renamed when complete: an interrupted build leaves no half shard.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geoseg.data.schema import SHARD_SCHEMA
from geoseg.digest import sha256_file

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


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; on success it replaces ``out``, on any error it is removed.

    A folder output (an export, a materialised split) is thus either complete or absent: a
    failed or interrupted run never leaves a half-written folder under the user's name.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary output folder
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
