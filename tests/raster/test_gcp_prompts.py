"""Map-coordinate prompts on a scene placed only by ground control points or RPCs (no geotransform, so no CRS
for geoseg): the error said "the image has no CRS", which a user who sees the scene placed in QGIS cannot act on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

from geoseg.cli import cli

from .conftest import roof_box, scene_array

#: the corners of a 320 x 280 scene near Vejle, Denmark (row, col, lon, lat)
CORNERS = [(0, 0, 9.50, 55.72), (0, 320, 9.55, 55.72), (280, 0, 9.50, 55.70), (280, 320, 9.55, 55.70)]


def gcp_scene(path: Path) -> Path:
    gcps = [GroundControlPoint(row=r, col=c, x=x, y=y) for r, c, x, y in CORNERS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=320, height=280, count=3, dtype="uint8") as ds:
            ds.write(scene_array())
            ds.gcps = (gcps, CRS.from_epsg(4326))
    return path


def rpc_scene(path: Path) -> Path:
    """Affine-like RPCs of a 320 x 280 scene near Dubai (sample = longitude, line = -latitude)."""
    zeros = [0.0] * 20
    rpcs = RPC(height_off=0, height_scale=500, lat_off=25.086, lat_scale=0.014, long_off=55.216, long_scale=0.016,
               line_off=140, line_scale=140, samp_off=160, samp_scale=160,
               line_num_coeff=[0, 0, -1] + zeros[3:], line_den_coeff=[1] + zeros[1:],
               samp_num_coeff=[0, 1] + zeros[2:], samp_den_coeff=[1] + zeros[1:])
    with rasterio.open(path, "w", driver="GTiff", width=320, height=280, count=3, dtype="uint8", rpcs=rpcs) as ds:
        ds.write(scene_array())
    return path


@pytest.mark.parametrize(("make", "why", "fix"), [
    (gcp_scene, "gcp.tif is placed on the ground only by 4 ground control points (no CRS or geotransform)",
     "georeference it first, e.g. gdalwarp -tps -t_srs EPSG:XXXX gcp.tif gcp_warped.tif"),
    (rpc_scene, "rpc.tif is placed on the ground only by RPCs (no CRS or geotransform)",
     "orthorectify it first, e.g. gdalwarp -rpc -to RPC_DEM=dem.tif -t_srs EPSG:XXXX rpc.tif rpc_ortho.tif"),
])
def test_prompt_crs_on_a_gcp_or_rpc_scene_names_them_and_the_fix(tmp_path: Path, run_geoseg, make, why, fix) -> None:
    scene = make(tmp_path / f"{make.__name__[:3]}.tif")
    code, err = run_geoseg(["-q", "segment", str(scene), "--point", "9.52,55.71", "--prompt-crs", "EPSG:4326",
                          "--backend", "classical", "-o", str(tmp_path / "m.tif")])[::2]
    assert code == 2
    assert err.strip() == (f"error: {why}, so --prompt-crs EPSG:4326 coordinates cannot be placed on it "
                           f"({fix}, or give pixel coordinates (drop --prompt-crs))")
    assert not (tmp_path / "m.tif").exists()
    # the way round stays open: pixel prompts segment the scene
    res = CliRunner().invoke(cli, ["-q", "segment", str(scene), "--box", ",".join(map(str, roof_box())),
                                   "--backend", "classical", "-o", str(tmp_path / "m.tif")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "m.tif") as m:
        assert (m.read(1) == 1).sum() > 0


def test_a_map_prompt_file_on_a_gcp_scene_names_them(tmp_path: Path, run_geoseg) -> None:
    scene = gcp_scene(tmp_path / "gcp.tif")
    layer = tmp_path / "points.gpkg"
    pyogrio.raw.write(layer, shapely.to_wkb(np.array([shapely.Point(9.52, 55.71)], dtype=object)), [], [],
                      geometry_type="Point", crs="EPSG:4326")
    code, err = run_geoseg(["-q", "segment", str(scene), "--prompt-file", str(layer), "--backend", "classical",
                          "-o", str(tmp_path / "m.tif")])[::2]
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: gcp.tif is placed on the ground only by 4 ground control points (no CRS or "
                          f"geotransform), so the features of {layer} cannot be placed on it (georeference it first, "
                          f"e.g. gdalwarp -tps")
    assert "or give a prompt file in pixel coordinates without a CRS" in err
    assert not (tmp_path / "m.tif").exists()


def test_why_no_crs_for_the_other_kinds_of_scene(tmp_path: Path) -> None:
    """One helper says why any scene has no CRS (the .geojson output error can reuse it)."""
    from geoseg.georef import why_no_crs
    from geoseg.raster.io import open_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "crs_only.tif", "w", driver="GTiff", width=320, height=280, count=3,
                           dtype="uint8", crs="EPSG:32632") as ds:
            ds.write(scene_array())
        with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=320, height=280, count=3,
                           dtype="uint8") as ds:
            ds.write(scene_array())
    with open_source(tmp_path / "crs_only.tif") as src:
        assert why_no_crs(src) == ("crs_only.tif has no CRS geoseg can use (its EPSG:32632 comes without a "
                                   "geotransform)", "set its corners first, e.g. gdal_edit.py -a_ullr ULX ULY LRX LRY "
                                   "crs_only.tif")
    with open_source(tmp_path / "plain.tif") as src:
        assert why_no_crs(src) == ("plain.tif has no CRS", "georeference it first")


def test_geojson_output_predictor_and_batch_name_the_gcps_too(tmp_path: Path, run_geoseg) -> None:
    """The .geojson output, SegmentPredictor and batch mode give the same reason as geoseg segment's prompts."""
    import geoseg
    from geoseg.batch import run_batch
    from geoseg.errors import InputError

    scene = gcp_scene(tmp_path / "gcp.tif")
    code, err = run_geoseg(["-q", "segment", str(scene), "--box", ",".join(map(str, roof_box())), "--backend",
                          "classical", "-o", str(tmp_path / "m.tif"), "--vector", str(tmp_path / "v.geojson")])[::2]
    assert code == 2 and err.startswith("error: gcp.tif is placed on the ground only by 4 ground control points")
    assert "cannot be written as GeoJSON" in err and "gdalwarp -tps" in err
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "v.geojson").exists()

    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(scene)
    with pytest.raises(InputError, match="only by 4 ground control points.*--prompt-crs EPSG:4326"):
        pred.predict(points=[(9.52, 55.71)], prompt_crs="EPSG:4326")

    out = tmp_path / "batch"
    summary = run_batch([scene], out, [geoseg.Prompt(points=((9.52, 55.71),), labels=(1,))], backend="classical",
                        prompt_crs="EPSG:4326")
    (outcome,) = summary.scenes
    assert outcome.status == "failed" and "only by 4 ground control points" in outcome.error
    summary = run_batch([scene], tmp_path / "batch_geojson", [geoseg.Prompt(box=roof_box())], backend="classical",
                        vector="geojson")
    (outcome,) = summary.scenes
    assert outcome.status == "failed" and "cannot be written as GeoJSON" in outcome.error
    assert "gdalwarp -tps" in outcome.error
