"""Scenes placed on the ground other than by a CRS and a geotransform: RPCs only, a CRS without a transform."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyogrio
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

import geoseg
from geoseg.errors import GeosegError

from .conftest import roof_box, roof_mask, scene_array


def _open(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _rpc() -> RPC:
    """Affine-like RPCs of a 320 x 280 scene near Dubai (sample = longitude, line = -latitude)."""
    zeros = [0.0] * 20
    return RPC(height_off=0, height_scale=500, lat_off=25.086, lat_scale=0.014, long_off=55.216, long_scale=0.016,
               line_off=140, line_scale=140, samp_off=160, samp_scale=160,
               line_num_coeff=[0, 0, -1] + zeros[3:], line_den_coeff=[1] + zeros[1:],
               samp_num_coeff=[0, 1] + zeros[2:], samp_den_coeff=[1] + zeros[1:])


def test_rpcs_are_carried_to_the_rasters_written(tmp_path: Path, caplog) -> None:
    """A raw optical L1 scene georeferenced by RPCs only: the mask and score raster lost them, silently."""
    path = tmp_path / "l1.tif"
    with rasterio.open(path, "w", driver="GTiff", width=320, height=280, count=3, dtype="uint8", rpcs=_rpc()) as ds:
        ds.write(scene_array())
    with caplog.at_level("WARNING"):
        res = geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box()], backend="classical",
                             score_raster=tmp_path / "s.tif", vector=tmp_path / "v.gpkg")
    assert "RPCs only" in caplog.text and "gdalwarp -rpc" in caplog.text
    for out in ("m.tif", "s.tif"):
        with _open(tmp_path / out) as m:
            assert m.crs is None and m.rpcs is not None
            got, want = m.rpcs.to_dict(), _rpc().to_dict()
            assert all(got[k] == pytest.approx(v) for k, v in want.items() if v is not None)
    assert res.area_unit == "px" and pyogrio.read_info(tmp_path / "v.gpkg")["crs"] is None


def test_rpcs_beside_a_geotransform_are_kept_too(tmp_path: Path, utm_scene: Path) -> None:
    """A scene with both (an L1 product with a rough geotransform): the outputs keep the same pixel grid's RPCs."""
    with rasterio.open(utm_scene, "r+") as ds:
        ds.rpcs = _rpc()
    geoseg.segment(utm_scene, output=tmp_path / "m.tif", boxes=[roof_box()], backend="classical")
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.crs == "EPSG:32632" and m.rpcs is not None and m.rpcs.lat_off == pytest.approx(25.086)


def _crs_only(path: Path) -> Path:
    """A GeoTIFF with GeoKeys (EPSG:32632) but no tie point or pixel scale: GDAL reports no geotransform."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=320, height=280, count=3, dtype="uint8",
                           crs="EPSG:32632") as ds:
            ds.write(scene_array())
    with _open(path) as ds:
        assert ds.crs == "EPSG:32632" and ds.transform.is_identity
    return path


def test_crs_without_geotransform_is_segmented_in_pixel_space(tmp_path: Path, caplog) -> None:
    """It was taken as 1 m pixels at the CRS's origin: "m²" areas and polygons off the coast of Africa."""
    path = _crs_only(tmp_path / "crs_only.tif")
    with caplog.at_level("WARNING"):
        res = geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box()], backend="classical",
                             vector=tmp_path / "v.gpkg")
    assert "no geotransform" in caplog.text
    assert res.area_unit == "px" and res.mask_area == res.mask_pixels
    with _open(tmp_path / "m.tif") as m:
        assert m.crs is None and m.transform.is_identity
        assert ((m.read(1) == 1) & roof_mask()).sum() > 0.8 * roof_mask().sum()
    assert pyogrio.read_info(tmp_path / "v.gpkg")["crs"] is None


def test_crs_without_geotransform_refuses_map_outputs_and_prompts(tmp_path: Path) -> None:
    """GeoJSON (lon/lat) and --prompt-crs need a place on the ground: one-line errors, not a polygon at 4.5° E 0° N."""
    path = _crs_only(tmp_path / "crs_only.tif")
    with pytest.raises(GeosegError, match="cannot be written as GeoJSON"):
        geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box()], backend="classical",
                       vector=tmp_path / "v.geojson")
    with pytest.raises(GeosegError, match="no CRS"):
        geoseg.segment(path, output=tmp_path / "m.tif", points=[(4.5125, 0.001)], backend="classical",
                       prompt_crs="EPSG:4326")
    assert not list(tmp_path.glob("m*.tif")) and not list(tmp_path.glob("v*"))
