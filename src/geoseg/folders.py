"""Folders a command makes for its outputs, and their removal when it fails before writing any.

A failed start must leave nothing behind: a command notes the folders that do not exist yet
(:func:`missing_folders`) and, when it stops early, removes those still empty
(:func:`remove_empty_folders`); one that received anything stays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; one with anything in it stays."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:  # not empty, or never made
            pass
