"""Shared fixtures: the path of the real data in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEOSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _need(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data {path} is not present (set GEOSEG_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need("")


@pytest.fixture(scope="session")
def dubai_dir() -> Path:
    return _need("dubai")


@pytest.fixture(scope="session")
def dk_fields_dir() -> Path:
    return _need("dk_fields")


@pytest.fixture(scope="session")
def ukis_dir() -> Path:
    return _need("ukis_tiles")


@pytest.fixture()
def run_geoseg(capsys):
    """Run the real ``geoseg`` entry point (``main``) on ``args``: ``(exit code, stdout, stderr)``."""
    from geoseg.cli import main

    def run(args: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(args)
            raise SystemExit(0)
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    return run
