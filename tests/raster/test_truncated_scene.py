"""A truncated GeoTIFF (an interrupted copy) is one line with GDAL's reason, not a 60-line traceback.

rasterio raises ``RasterioIOError: Read failed. See previous exception for details.`` and keeps
GDAL's own message in the exception chain; ``geoseg segment`` printed the whole chain and exited 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from .test_cli_segment import run_cli


@pytest.fixture()
def truncated(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, 1024, 1024), dtype=np.uint8)  # noise: does not compress
    whole = tmp_path / "whole.tif"
    with rasterio.open(whole, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(0, 1024, 1, 1), tiled=True,
                       blockxsize=256, blockysize=256) as ds:
        ds.write(data)
    cut = tmp_path / "cut.tif"
    raw = whole.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    return cut


def test_truncated_scene_is_one_line_with_gdals_reason(truncated: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "m.tif"
    rc, _, err = run_cli(["-q", "segment", str(truncated), "--backend", "classical", "--box", "700,700,800,800",
                          "-o", str(out)], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot read cut.tif: TIFFReadEncodedTile") and "truncated or corrupt" in lines[0]
    assert not out.exists()
