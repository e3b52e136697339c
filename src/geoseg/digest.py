"""SHA-256 of a file's bytes, read in 1 MiB blocks (shard manifests, the benchmark split's
source images, the identity of a checkpoint in a benchmark run)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
