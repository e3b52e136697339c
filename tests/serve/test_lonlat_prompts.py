"""Lon/lat prompts that miss the image: the answer names the numbers the client sent, never a 500."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")


def _open(client, path) -> dict:
    with open(path, "rb") as fh:
        r = client.post("/api/images", files={"file": (path.name, fh, "image/tiff")})
    assert r.status_code == 201, r.text
    return r.json()


def _predict(client, iid: str, **body):
    return client.post(f"/api/images/{iid}/predict", json={**body, "coords": "lonlat"})


def test_lonlat_that_misses_a_real_sentinel2_scene(client, dk_fields_dir):
    info = _open(client, dk_fields_dir / "RGB_small.tif")
    iid, corners = info["image_id"], info["geo"]["corners_lonlat"]
    lon = sum(c[0] for c in corners) / 4
    lat = sum(c[1] for c in corners) / 4
    assert _predict(client, iid, points=[[lon, lat]]).status_code == 200  # the scene's centre, lon first

    r = _predict(client, iid, points=[[lat, lon]])  # the usual slip: latitude first
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert f"point (lon {lat:g}, lat {lon:g}) lies outside the image" in detail
    assert "the image spans lon 9.2" in detail and "lat 56.3" in detail
    assert "latitude first: send each point as [lon, lat]" in r.json()["fix"]

    r = _predict(client, iid, box=[lat - 0.005, lon - 0.01, lat + 0.005, lon + 0.01])
    assert r.status_code == 422 and "does not overlap the image" in r.json()["detail"]
    assert "send the box as [lon0, lat0, lon1, lat1]" in r.json()["fix"]

    r = _predict(client, iid, points=[[10, 60]])  # simply elsewhere: not swapped either
    assert r.status_code == 422
    assert r.json()["problem"].startswith("point (lon 10, lat 60) lies outside the image: the image spans")
    assert "latitude first" not in r.json()["fix"]

    r = _predict(client, iid, points=[[200, 95]])  # no lon/lat at all (was a 500 from PROJ)
    assert r.status_code == 422 and "is not a longitude, latitude" in r.json()["detail"]
    assert all("\n" not in _predict(client, iid, points=p).json()["detail"] for p in ([[200, 95]], [[lat, lon]]))


def test_lonlat_outside_the_projections_domain_is_a_422(client, make_geotiff):
    """Europe's equal-area grid (EPSG:3035) cannot hold the antipode of its centre: PROJ refuses it."""
    info = _open(client, make_geotiff("laea.tif", crs="EPSG:3035", origin=(4321000.0, 3210000.0), res=10.0))
    r = _predict(client, info["image_id"], points=[[-170, -52]])
    assert r.status_code == 422, r.text  # was a 500 (PROJ: point outside of projection domain)
    assert "cannot be placed in the image's CRS EPSG:3035" in r.json()["detail"]
    assert client.get("/api/health").json()["status"] == "ok"
