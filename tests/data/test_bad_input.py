"""Bad input: unknown palette colours, masks a pixel off, empty sources, corrupt images, CLI errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.cli import main
from geoseg.data.engine import BuildConfig, build
from geoseg.data.sources import get_source
from geoseg.data.sources.base import UNLABELED
from geoseg.data.sources.dubai import PALETTE
from geoseg.errors import InputError

LAND, WATER = (132, 41, 246), (226, 169, 41)


def _write_region(root: Path, name: str, mask_rgb: np.ndarray, image_size: tuple[int, int] | None = None,
                  seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    h, w = image_size or mask_rgb.shape[:2]
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name / "images" / "image_part_001.jpg")
    Image.fromarray(mask_rgb).save(root / name / "masks" / "image_part_001.png")


def _mask(h: int = 96, w: int = 96) -> np.ndarray:
    m = np.empty((h, w, 3), np.uint8)
    m[:] = LAND
    m[20:60, 30:70] = WATER
    return m


def test_unknown_palette_colour_is_an_error_or_a_counted_unlabeled(tmp_path: Path) -> None:
    m = _mask()
    m[0:3, 0:3] = (1, 2, 3)
    _write_region(tmp_path, "tile_1", m)
    src = get_source("dubai", str(tmp_path))
    with pytest.raises(InputError, match=r"not in the palette: \(1, 2, 3\)"):
        src.load(src.scenes()[0])
    lenient = get_source("dubai", str(tmp_path), unknown_colour="unlabeled")
    scene = lenient.load(lenient.scenes()[0])
    assert scene.notes["unknown_colour_px"] == 9
    assert np.all(scene.label[0:3, 0:3] == UNLABELED)
    assert scene.label[30, 40] == list(PALETTE.values())[1]


def test_mask_one_pixel_off_is_aligned_top_left(tmp_path: Path) -> None:
    _write_region(tmp_path, "tile_1", _mask(95, 97), image_size=(96, 96))
    src = get_source("dubai", str(tmp_path))
    scene = src.load(src.scenes()[0])
    assert scene.label.shape == (96, 96)
    assert scene.notes["mask_size_adjusted"] == 1
    assert np.all(scene.label[95, :] == UNLABELED)  # missing row filled as unlabeled
    _write_region(tmp_path / "far", "tile_1", _mask(60, 96), image_size=(96, 96))
    far = get_source("dubai", str(tmp_path / "far"))
    with pytest.raises(InputError, match="pair each image with its own mask"):
        far.load(far.scenes()[0])


def test_empty_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no image/mask pairs"):
        get_source("dubai", str(tmp_path)).scenes()
    with pytest.raises(InputError, match="does not exist"):
        get_source("dubai", str(tmp_path / "missing")).scenes()


def test_corrupt_image_is_a_counted_skip_or_strict_error(tmp_path: Path) -> None:
    _write_region(tmp_path, "tile_1", _mask(), seed=1)
    _write_region(tmp_path, "tile_2", _mask(), seed=2)
    (tmp_path / "tile_2" / "images" / "image_part_001.jpg").write_bytes(b"not a jpeg at all")
    cfg = BuildConfig.from_dict({"tile_size": 64, "stride": 32,
                                 "sources": [{"type": "dubai", "path": str(tmp_path)}]})
    manifest = build(cfg, tmp_path / "out", workers=0)
    assert manifest["counts"]["skipped_scenes"] == 1
    assert "tile_2" in manifest["skipped"][0]
    assert manifest["rows"] > 0
    with pytest.raises(InputError, match="cannot read image"):
        build(cfg, tmp_path / "strict", workers=0, strict=True)
    assert not list((tmp_path / "strict").rglob("*.parquet"))


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "--source", "nonsense", "-o", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read --source") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "--source", f"dubai={tmp_path / 'nowhere'}", "-o", str(tmp_path / "o"), "--workers", "0"])
    assert exc.value.code == 2


def test_cli_build_from_a_config(dubai_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "tile_size: 256\nstride: 256\nsources:\n"
        f"  - type: dubai\n    path: {dubai_dir}\n    options: {{regions: [tile_2], max_scenes_per_region: 1}}\n"
    )
    main(["data", "build", "--config", str(cfg), "-o", str(tmp_path / "out"), "--workers", "0", "--seed", "3"])
    out = capsys.readouterr().out
    assert "samples in 1 shards" in out and "train=" in out
    assert (tmp_path / "out" / "train" / "part-00000.parquet").exists()


@pytest.mark.parametrize("kind, expect", [("dubai", "no image/mask pairs"), ("dk_fields", "no GeoTIFF"),
                                          ("ukis", "no .npz tiles"), ("coco", "does not exist")])
def test_every_adapter_names_an_empty_source(kind: str, expect: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=expect):
        get_source(kind, str(tmp_path / "a.json" if kind == "coco" else tmp_path)).scenes()


def test_corrupt_npz_tile_is_a_counted_skip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    msk = np.full((64, 64, 1), 3, np.uint8)
    msk[8:40, 8:40] = 4
    np.savez(tmp_path / "good.npz", img=rng.random((64, 64, 6), dtype=np.float32), msk=msk)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    cfg = BuildConfig.from_dict({"tile_size": 64, "stride": 64, "sources": [{"type": "ukis", "path": str(tmp_path)}]})
    manifest = build(cfg, tmp_path / "out", workers=0, report=False)
    assert manifest["counts"]["skipped_scenes"] == 1 and "ukis/bad" in manifest["skipped"][0]
    assert manifest["rows"] > 0


@pytest.mark.parametrize("setting", [{"no_target_ratio": 1.0}, {"no_target_level2_share": 1.5},
                                     {"no_target_per_absent": -1}])
def test_instruction_settings_out_of_range_are_named(setting: dict) -> None:
    from geoseg.data.instructions import InstructionConfig

    with pytest.raises(InputError, match=next(iter(setting))):
        InstructionConfig.from_dict(setting)
