"""Rasters in: GeoTIFFs of several CRSs, dtypes and band counts (with/without nodata), JPG/PNG, --bands, stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

import geoseg
from geoseg.errors import GeosegError
from geoseg.raster.io import open_source
from geoseg.raster.stretch import scene_stretch

from .conftest import iou, roof_box, roof_mask, scene_array, write_geotiff, write_plain

CASES = [
    # (id, count, dtype, crs, nodata)
    ("uint8-1band-4326", 1, "uint8", "EPSG:4326", None),
    ("uint8-3band-utm", 3, "uint8", "EPSG:32632", None),
    ("uint16-4band-utm-nodata", 4, "uint16", "EPSG:32632", 0),
    ("uint16-3band-3857", 3, "uint16", "EPSG:3857", None),
    ("float32-3band-nocrs-nan", 3, "float32", None, float("nan")),
    ("float32-1band-utm-nodata", 1, "float32", "EPSG:32632", -9999.0),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_geotiff_kinds_segment_and_keep_georeference(tmp_path: Path, case) -> None:
    _, count, dtype, crs, nodata = case
    data = scene_array(count=count, dtype=dtype)
    if nodata is not None:
        data[:, 200:, :50] = nodata  # a nodata corner
    src = write_geotiff(tmp_path / "in.tif", data, crs=crs, nodata=nodata)
    out = tmp_path / "mask.tif"
    res = geoseg.segment(src, output=out, boxes=[roof_box(0), roof_box(1)], backend="classical",
                         score_raster=tmp_path / "score.tif")
    with rasterio.open(src) as a, rasterio.open(out) as m, rasterio.open(tmp_path / "score.tif") as s:
        assert m.crs == a.crs and m.transform == a.transform and (m.width, m.height) == (a.width, a.height)
        assert m.dtypes == ("uint8",) and m.nodata == 255 and m.count == 1
        assert m.profile["tiled"] and m.compression.name.lower() == "deflate"
        tags = m.tags()
        assert tags["model"] == "classical" and tags["geoseg_version"] == geoseg.__version__
        assert "box (48.0,28.0,182.0,132.0)" in tags["prompt"]
        mask = m.read(1)
        score = s.read(1)
        assert s.dtypes == ("float32",) and s.nodata == -1
    target = mask == 1
    assert iou(target, roof_mask(index=0) | roof_mask(index=1)) > 0.85
    if nodata is not None:
        assert (mask[200:, :50] == 255).all() and (score[200:, :50] == -1).all()
        assert (mask[:200] != 255).all()
    else:
        assert (mask != 255).all()
    assert score[target].min() > 0 and (score[mask == 0] == 0).all()
    assert res.crs == (rasterio.crs.CRS.from_user_input(crs).to_string() if crs else None)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_plain_jpg_png(tmp_path: Path, ext: str) -> None:
    src = write_plain(tmp_path / f"in.{ext}", scene_array())
    out = tmp_path / "mask.tif"
    res = geoseg.segment(src, output=out, boxes=[roof_box(1)], backend="classical", vector=tmp_path / "v.gpkg")
    with rasterio.open(out) as m:
        assert m.crs is None and m.transform.is_identity
        assert iou(m.read(1) == 1, roof_mask(index=1)) > 0.85
    assert res.area_unit == "px" and res.mask_area == res.mask_pixels and res.n_objects == 1


def test_bands_are_one_based_and_checked(tmp_path: Path) -> None:
    # bands 1-3 are flat ground; only band 4 shows roof 0
    data = scene_array(count=4, dtype="uint16")
    data[:3] = 900
    path = write_geotiff(tmp_path / "in.tif", data)
    src = open_source(path, "4")
    assert src.bands == (4,)
    rgb, _ = src.read_rgb()
    assert rgb[80, 100, 0] > 200 and rgb[200, 20, 0] < 60  # roof bright, ground dark: band 4 was read
    res = geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box(0)], backend="classical", bands="4")
    with rasterio.open(tmp_path / "m.tif") as m:
        assert iou(m.read(1) == 1, roof_mask(index=0)) > 0.85
    assert res.mask_pixels > 0
    assert open_source(path, [4, 3, 2]).bands == (4, 3, 2)
    for bad, msg in (("5", "band 5 is out of range.*has 4 band"), ("0,1,2", "start at 1"), ("1,2", "1 or 3 bands"),
                     ("a,b,c", "cannot read --bands")):
        with pytest.raises(GeosegError, match=msg):
            open_source(path, bad)
    assert not (tmp_path / "m2.tif").exists()


def test_stretch_is_scene_level_not_per_tile(tmp_path: Path) -> None:
    """Two tiles of one scene render the same raw value identically, whatever their own statistics."""
    rng = np.random.default_rng(1)
    data = np.empty((3, 256, 512), np.uint16)
    data[:, :, :256] = 1000 + rng.integers(0, 200, (3, 256, 256))   # a dark half
    data[:, :, 256:] = 3000 + rng.integers(0, 2000, (3, 256, 256))  # a bright, varied half
    data[:, 100, 100] = data[:, 100, 400] = 1150                     # the same value in both tiles
    src = open_source(write_geotiff(tmp_path / "s.tif", data))
    assert src.stretch == scene_stretch(src)
    left, _ = src.read_rgb(Window(0, 0, 256, 256))
    right, _ = src.read_rgb(Window(256, 0, 256, 256))
    assert np.array_equal(left[100, 100], right[100, 144])
    whole, _ = src.read_rgb()
    assert np.array_equal(whole[:, :256], left) and np.array_equal(whole[:, 256:], right)
    # a per-tile stretch would have rendered them differently (so the check above can fail)
    from geoseg.data.imagery import apply_stretch

    def own(tile: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(tile, [2, 98], axis=(1, 2))
        return apply_stretch(np.transpose(tile, (1, 2, 0)), [[a, b] for a, b in zip(lo, hi)])

    assert not np.array_equal(own(data[:, :, :256])[100, 100], own(data[:, :, 256:])[100, 144])


def test_big_flat_scene_stretch_from_sample_windows(tmp_path: Path, monkeypatch) -> None:
    """Without overviews, a scene above the decimation limit is sampled by windows; nodata is excluded."""
    from geoseg.raster import stretch as stretch_mod

    monkeypatch.setattr(stretch_mod, "DECIMATE_LIMIT", 200)
    data = scene_array(480, 400, dtype="uint16")
    data[:, :, :100] = 0
    src = open_source(write_geotiff(tmp_path / "big.tif", data, nodata=0))
    valid = data[:, data[0] > 0]
    for band, (lo, hi) in enumerate(src.stretch):
        assert lo >= valid[band].min() and hi <= valid[band].max() and hi > lo


def test_empty_and_all_nodata_scenes(tmp_path: Path) -> None:
    data = np.zeros((3, 40, 50), np.uint16)
    path = write_geotiff(tmp_path / "nodata.tif", data, nodata=0)
    with pytest.raises(GeosegError, match="no valid pixels"):
        geoseg.segment(path, output=tmp_path / "m.tif", boxes=[(1, 1, 20, 20)], backend="classical")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodata.tif"]


def test_nodata_reaches_the_segmenter_as_its_nearest_valid_colour(tmp_path: Path) -> None:
    """A nodata collar is not shown to the model as a black object (it drew text and box answers to its edge)."""
    from geoseg.raster.io import fill_invalid

    data = scene_array(dtype="uint16") + 500
    data[:, :, :40] = 0  # a collar down the left side
    data[:, :30, 40:60] = 0  # and a notch
    src = open_source(write_geotiff(tmp_path / "collar.tif", data, nodata=0))
    rgb, valid = src.read_rgb()
    assert not valid[:, :40].any() and valid[:, 60:].all()
    # every filled pixel takes the colour of a valid pixel in its row band; none is the black of the collar
    assert (rgb[~valid].max(axis=1) > 0).all()
    assert np.array_equal(rgb[50:, 0], rgb[50:, 40])  # left of the scene: its first column, extended
    assert np.array_equal(rgb[25, 45], rgb[30, 45])  # in the notch: the first valid row below it
    # valid pixels are rendered as before
    from geoseg.raster.io import to_display_rgb

    assert np.array_equal(rgb[valid], to_display_rgb(src.read_raw(Window(0, 0, 320, 280)), src.stretch)[valid])

    tiny = np.full((4, 5, 3), 9, np.uint8)
    none_valid = np.zeros((4, 5), bool)
    assert not fill_invalid(tiny.copy(), none_valid).any()  # nothing to extend: black
    assert np.array_equal(fill_invalid(tiny.copy(), ~none_valid), tiny)


def test_a_palette_image_is_read_through_its_colour_table(tmp_path: Path) -> None:
    """Indexed colour (a paletted GeoTIFF or PNG): the model sees the colours, not the indices as grey."""
    colours = {0: (20, 60, 120, 255), 1: (200, 180, 140, 255), 2: (40, 140, 50, 255)}
    idx = np.zeros((64, 80), np.uint8)
    idx[:, 30:] = 1
    idx[40:, 60:] = 2
    for name, driver in (("pal.tif", "GTiff"), ("pal.png", "PNG")):
        path = tmp_path / name
        with rasterio.open(path, "w", driver=driver, width=80, height=64, count=1, dtype="uint8") as ds:
            ds.write(idx, 1)
            ds.write_colormap(1, colours)
        src = open_source(path)
        rgb, _ = src.read_rgb()
        assert src.palette is not None and src.stretch is None
        assert tuple(rgb[10, 10]) == (20, 60, 120) and tuple(rgb[10, 40]) == (200, 180, 140)
        assert tuple(rgb[50, 70]) == (40, 140, 50)
        small, _ = src.read_rgb(Window(0, 0, 80, 64), (16, 20))  # decimated: still table colours only
        assert {tuple(c) for c in small.reshape(-1, 3)} <= {c[:3] for c in colours.values()}


def test_ground_control_points_are_carried_to_the_outputs(tmp_path: Path, caplog) -> None:
    """A GeoTIFF georeferenced by GCPs only (raw L1 / SAR geometry): the mask keeps them, and the user is told."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    data = scene_array()
    path = tmp_path / "gcp.tif"
    corners = [(0, 0, 9.50, 55.72), (0, 320, 9.55, 55.72), (280, 0, 9.50, 55.70), (280, 320, 9.55, 55.70)]
    gcps = [GroundControlPoint(row=r, col=c, x=x, y=y) for r, c, x, y in corners]
    with rasterio.open(path, "w", driver="GTiff", width=320, height=280, count=3, dtype="uint8") as ds:
        ds.write(data)
        ds.gcps = (gcps, CRS.from_epsg(4326))
    with caplog.at_level("WARNING"):
        geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box()], backend="classical")
    assert "ground control points only" in caplog.text
    with rasterio.open(tmp_path / "m.tif") as m:
        out, crs = m.gcps
        assert m.crs is None and crs == CRS.from_epsg(4326)
        assert sorted((p.row, p.col, p.x, p.y) for p in out) == sorted(corners)


def test_complex_data_is_read_as_amplitude(tmp_path: Path) -> None:
    """SAR single-look complex: the picture is the amplitude, not the real part (which is signed noise)."""
    import warnings

    rng = np.random.default_rng(2)
    amp = np.full((1, 60, 80), 10.0, np.float32)
    amp[:, 20:40, 30:60] = 100.0  # a bright target
    phase = rng.uniform(-np.pi, np.pi, amp.shape)
    path = write_geotiff(tmp_path / "slc.tif", (amp * np.exp(1j * phase)).astype(np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning when the imaginary part is dropped
        src = open_source(path)
        rgb, valid = src.read_rgb()
    assert valid.all() and rgb.shape == (60, 80, 3)
    assert rgb[30, 45, 0] > 200 and rgb[5, 5, 0] < 50  # the target is bright whatever its phase
