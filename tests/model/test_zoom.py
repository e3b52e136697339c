"""Where a small box is answered from: the zoomed crop's geometry (pure arithmetic, no network)."""

from __future__ import annotations

import pytest

from geoseg.unified.zoom import ZoomConfig, zoom_window

CFG = ZoomConfig(min_box_side=32.0, context=4.0, max_zoom=8.0)


def test_a_box_large_enough_at_the_working_scale_is_not_zoomed():
    # 64 source px at scale 0.5 = 32 network px: exactly the limit
    assert zoom_window((100, 100, 164, 120), 1000, 800, 0.5, 256, CFG) is None
    assert zoom_window((100, 100, 163, 120), 1000, 800, 0.5, 256, CFG) is not None


def test_the_crop_is_context_times_the_box_and_becomes_the_network_input():
    c0, r0, c1, r1, zoom = zoom_window((490, 390, 510, 410), 1000, 800, 0.5, 256, CFG)
    assert (c1 - c0, r1 - r0) == (80, 80)  # 4 x the 20-px side
    assert (c0 + c1) / 2 == 500 and (r0 + r1) / 2 == 400  # centred on the box
    assert zoom == pytest.approx(256 / (0.5 * 80))  # the crop fills the trained input size
    assert 80 * 0.5 * zoom == pytest.approx(256)


def test_a_tiny_box_gets_a_wider_crop_not_more_magnification():
    c0, r0, c1, r1, zoom = zoom_window((500, 400, 503, 402), 1000, 800, 0.5, 256, CFG)
    assert zoom == pytest.approx(8.0) and (c1 - c0) == 64  # 256 / (0.5 * 8)


def test_the_crop_stays_inside_the_image():
    c0, r0, c1, r1, _ = zoom_window((0, 5, 20, 25), 1000, 800, 0.5, 256, CFG)
    assert (c0, r0) == (0, 0) and (c1, r1) == (80, 80)
    c0, r0, c1, r1, _ = zoom_window((985, 790, 1000, 800), 1000, 800, 0.5, 256, CFG)
    assert (c1, r1) == (1000, 800) and c1 - c0 == 64
    # an image smaller than the crop: the whole image, still magnified
    c0, r0, c1, r1, zoom = zoom_window((10, 10, 30, 30), 60, 50, 0.5, 256, CFG)
    assert (c0, r0, c1, r1) == (0, 0, 60, 50) and zoom > 1
