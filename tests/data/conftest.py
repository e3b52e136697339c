"""Small real-data builds shared by the data-engine tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.data.engine import BuildConfig, build

SPLITS = {"train": ["tile_1"], "val": ["tile_6"], "test": ["tile_7"]}


def dubai_config(dubai_dir: Path, seed: int = 0, **extra) -> BuildConfig:
    """One image from each of three regions, cut into 256-pixel tiles (fast, still real)."""
    return BuildConfig.from_dict({
        "seed": seed, "tile_size": 256, "stride": 256,
        "sources": [{"type": "dubai", "path": str(dubai_dir), "splits": SPLITS,
                     "options": {"regions": ["tile_1", "tile_6", "tile_7"], "max_scenes_per_region": 1}}],
        **extra,
    })


@pytest.fixture(scope="session")
def dubai_build(dubai_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dubai_build")
    build(dubai_config(dubai_dir), out, workers=0)
    return out
