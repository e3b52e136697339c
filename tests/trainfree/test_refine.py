"""Bias-aware refinement: GeoSeg's fixed rule (hand-computed) and calibration profiles on disk."""

from __future__ import annotations

import json

import pytest

from geoseg.errors import GeosegError
from geoseg.trainfree.refine import (
    CalibrationProfile,
    load_profile,
    profile_dir,
    profile_key,
    profile_path,
    refine_box,
)


@pytest.mark.parametrize(("box", "size", "expected"), [
    # w=50, h=60: top-left out by 10/12 px, bottom-right by 5/6 px
    ((100, 200, 150, 260), (1000, 1000), (90, 188, 155, 266)),
    # clamped first to (0, 5, 40, 30): w=40, h=25 -> (0-8, 5-5, 40+4, 30+2.5), clamped again
    ((-20, 5, 40, 30), (100, 80), (0, 0, 44, 32.5)),
    # bottom-right corner runs off the image: clamped to the border
    ((60, 60, 100, 100), (100, 100), (52, 52, 100, 100)),
    # 4x2 box -> (49.2, 49.6, 54.4, 52.2), then grown about its centre (51.8, 50.9) to 16 px
    ((50, 50, 54, 52), (200, 200), (43.8, 42.9, 59.8, 58.9)),
    # tiny box in the corner: grown to 16 px and slid inside the image
    ((0, 0, 4, 4), (200, 200), (0, 0, 16, 16)),
    ((196, 196, 200, 200), (200, 200), (184, 184, 200, 200)),
    # an image smaller than 16 px: the whole side
    ((2, 2, 4, 4), (10, 12), (0, 0, 10, 12)),
])
def test_fixed_rule(box, size, expected):
    assert refine_box(box, *size) == pytest.approx(expected)


def test_fixed_rule_rejects_bad_boxes():
    with pytest.raises(GeosegError, match="inverted"):
        refine_box((10, 10, 5, 20), 100, 100)
    with pytest.raises(GeosegError, match="finite"):
        refine_box((float("nan"), 0, 5, 5), 100, 100)


def test_profile_replaces_the_fixed_rule():
    prof = CalibrationProfile("m", scale=(1.0, 1.0, 1.1, 1.0), offset=(0.01, -0.02, 0.0, 0.05))
    # normalised: x0 = 100/1000 + 0.01 -> 110; y0 = 200/500 - 0.02 -> 190; x1 = 1.1 * 300 = 330; y1 = 400/500 + .05 -> 425
    assert refine_box((100, 200, 300, 400), 1000, 500, prof) == pytest.approx((110, 190, 330, 425))
    # still clamped and at least 16 px: x0 -> 1000, x1 -> 1094.5, both clamped to 1000 then grown to 16 px;
    # y0 = 0.96 - 0.02 -> 470, y1 = 0.98 + 0.05 -> 515, clamped to 500
    assert refine_box((990, 480, 995, 490), 1000, 500, prof) == pytest.approx((984, 470, 1000, 500))
    pix = CalibrationProfile("m", scale=(1, 1, 1, 1), offset=(-5, -5, 5, 5), space="pixels")
    assert refine_box((100, 200, 300, 400), 1000, 500, pix) == pytest.approx((95, 195, 305, 405))


def test_profile_save_load_round_trip(tmp_path):
    prof = CalibrationProfile("Qwen_Qwen2.5-VL-7B-Instruct", scale=(1.01, 0.99, 1.02, 0.98),
                              offset=(0.001, -0.002, 0.003, -0.004), n=7, residuals={"mean_abs_after": 0.8},
                              meta={"data": "x"})
    path = prof.save(tmp_path / "sub" / "p.json")
    assert json.loads(path.read_text())["scale"] == [1.01, 0.99, 1.02, 0.98]
    assert CalibrationProfile.load(path) == prof
    assert [p.name for p in path.parent.iterdir()] == ["p.json"]  # no temp file left behind


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": "m", "scale": [1, 1], "offset": [0, 0, 0, 0]}',
                                     '{"key": "m", "scale": [1, 1, 1, "x"], "offset": [0, 0, 0, 0]}',
                                     '{"key": "m", "scale": [1, 1, 1, 1], "offset": [0, 0, 0, 0], "version": 99}'])
def test_bad_profile_files_are_clear_errors(tmp_path, content):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(GeosegError, match="profile"):
        CalibrationProfile.load(tmp_path / "p.json")


def test_profile_location_and_automatic_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("GEOSEG_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert profile_dir() == tmp_path / "xdg" / "geoseg" / "trainfree"
    monkeypatch.setenv("GEOSEG_HOME", str(tmp_path / "home"))
    assert profile_key("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen_Qwen2.5-VL-7B-Instruct"
    assert profile_key("qwen2.5vl:7b") == "qwen2.5vl_7b"
    assert profile_path("qwen2.5vl:7b") == tmp_path / "home" / "trainfree" / "qwen2.5vl_7b.json"
    assert load_profile("qwen2.5vl:7b") is None  # never calibrated: the fixed rule applies
    CalibrationProfile("qwen2.5vl:7b", offset=(0.0, 0.0, 0.1, 0.0)).save(profile_path("qwen2.5vl:7b"))
    prof = load_profile("qwen2.5vl:7b")
    assert prof is not None and prof.offset == (0.0, 0.0, 0.1, 0.0)
    assert refine_box((10, 10, 50, 50), 100, 100, load_profile("qwen2.5vl:7b")) == pytest.approx((10, 10, 60, 50))
    with pytest.raises(GeosegError):
        profile_key("///")
