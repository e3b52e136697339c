"""``benchmarks/small_boxes.py``: box prompts on class regions of every size, zoom settings side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_boxes.py"


@pytest.fixture(scope="module")
def script():
    return load_module("small_boxes", SCRIPT)


def test_regions_and_buckets(script):
    label = np.zeros((40, 40), np.uint8)
    label[2:6, 2:6] = 1  # 16 px: a region
    label[10:12, 10:12] = 1  # 4 px: too small to ask for
    label[15:40, 0:40] = 2  # its box is more than half the image: left out
    found = {(c, box) for c, _, box in script.regions(label, 3)}
    assert found == {(1, (2, 2, 4, 4)), (0, (0, 0, 40, 15))}
    assert [script.bucket_of(s) for s in (4, 15, 16, 63, 64, 127, 128, 5000)] == [0, 0, 1, 2, 3, 3, 4, 4]
    assert script.parse_zoom("off") is None and script.parse_zoom("48x4").min_box_side == 48.0
    region = np.zeros((20, 30), bool)
    region[4:9, 12:17] = True  # 5 x 5: the innermost pixel is (14, 6), clicked at its centre
    region[16:20, 0:30] = True  # a thinner band along the image's border: the border counts as outside
    assert script.innermost(region) == (14.5, 6.5)


def test_zoom_answers_small_boxes_the_working_scale_leaves_empty(script, dubai_dir, capsys):
    out = script.main(["--data", str(dubai_dir), "--region", "tile_6", "--images", "1", "--per-bucket", "2",
                       "--zoom", "off", "--zoom", "48x4"])
    text = capsys.readouterr().out
    assert "paired vs first" in text and text.count("\n    48x4") == 1
    sides = np.array(out["sides"])
    off, on = (np.array(out["results"][k]) for k in ("off", "48x4"))
    assert out["rows"] == len(sides) == len(off) >= 8
    large = sides >= 96  # not zoomed: the same answer either way
    assert np.allclose(off[large], on[large])
    small = sides < 32
    # measured 2026-12-03 (tile_6, all 9 images, 77 boxes under 32 px): IoU 0.01 without zoom, 0.52 with
    assert small.sum() >= 2 and on[small].mean() > off[small].mean() + 0.1


def test_checkpoints_side_by_side(script, dubai_dir, capsys, tmp_path):
    """Two checkpoints on the same rows: named as given, paired row by row; the same network twice matches."""
    import shutil

    from geoseg.unified.segmenter import default_checkpoint_path

    copy = tmp_path / "copy.pt"
    shutil.copy(default_checkpoint_path(), copy)
    out = script.main(["--data", str(dubai_dir), "--images", "1", "--per-bucket", "1", "--zoom", "48x4",
                       "--prompt", "point", "--checkpoint", "packaged", "--checkpoint", str(copy)])
    text = capsys.readouterr().out
    assert "packaged 48x4" in text and f"{copy} 48x4" in text and "+0.0 [+0.0, +0.0]" in text
    a, b = out["results"]["packaged 48x4"], out["results"][f"{copy} 48x4"]
    assert len(a) == out["rows"] >= 4 and a == b
    with pytest.raises(SystemExit, match="asked for twice"):
        script.main(["--data", str(dubai_dir), "--images", "1", "--per-bucket", "1", "--zoom", "48x4",
                     "--checkpoint", str(copy), "--checkpoint", str(copy)])


def test_shared_windows_encode_each_window_once(script, dubai_dir, capsys):
    """``--windows shared`` plans as ``geoseg segment`` does for a backend that shares windows: a tile_6
    image (859 x 838) fits one 1024-px window, so all its prompts share one embedding; at 512 px they share
    the grid's tiles. ``crops`` (the default) encodes a context crop per prompt."""
    from PIL import Image

    first = sorted((dubai_dir / "tile_6" / "images").glob("*.jpg"))[0]
    assert max(Image.open(first).size) <= 1024  # else the whole image is not one window
    args = ["--data", str(dubai_dir), "--images", "1", "--per-bucket", "1", "--zoom", "48x4", "--prompt", "point"]
    out = script.main([*args, "--windows", "crops", "--windows", "shared"])
    text = capsys.readouterr().out
    assert "48x4 crops" in text and "48x4 shared" in text
    rows, encodes = out["rows"], out["encodes"]
    assert rows >= 4 and all(len(v) == rows for v in out["results"].values())
    assert set(encodes) == {"48x4 crops", "48x4 shared"} and encodes["48x4 shared"] == 1
    assert 1 < encodes["48x4 crops"] <= rows  # one per distinct crop
    tiled = script.main([*args, "--windows", "shared", "--tile-size", "512"])
    assert 1 < tiled["encodes"]["48x4 shared"] <= 4  # the 2 x 2 grid of 512-px tiles over the image
