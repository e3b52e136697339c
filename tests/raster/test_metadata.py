"""Provenance JSON in outputs stays parseable when a prompt file brings hundreds of prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.metadata import bounded_json
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.raster.writer import SceneWriter, WindowResult


def test_bounded_json_shortens_lists_and_counts_what_it_left_out() -> None:
    items = [{"point": [i, i + 0.5], "feature": i} for i in range(500)]
    assert bounded_json(items[:3], 1000) == json.dumps(items[:3])  # what fits is unchanged
    cut = json.loads(bounded_json(items, 2000))
    assert len(json.dumps(cut)) <= 2000 and cut[:-1] == items[:len(cut) - 1]
    assert cut[-1] == {"omitted": 500 - (len(cut) - 1)} and len(cut) > 20
    prov = {"model": "unified", "thresholds": {"a": 0.3}, "prompts": items, "few": [1, 2]}
    out = json.loads(bounded_json(prov, 3000))
    assert out["model"] == "unified" and out["thresholds"] == {"a": 0.3} and out["few"] == [1, 2]
    assert out["prompts"][-1]["omitted"] == 500 - (len(out["prompts"]) - 1)
    blob = {"blob": "x" * 5000}  # nothing to shorten: says so, still JSON
    assert json.loads(bounded_json(blob, 100)) == {"truncated": True, "chars": len(json.dumps(blob))}


@pytest.mark.parametrize("ext", ["gpkg", "fgb"])
def test_outputs_of_600_prompts_carry_parseable_provenance(utm_scene: Path, tmp_path: Path, ext: str) -> None:
    src = open_source(utm_scene)
    rng = np.random.default_rng(0)
    prompts = [Prompt(points=[(float(x), float(y))], labels=[1], extra={"feature": i})
               for i, (x, y) in enumerate(rng.uniform(10, 270, (600, 2)))]
    provenance = {"model": "test", "geoseg_version": "0", "prompts": [p.to_dict() for p in prompts],
                  "prompt_file": {"path": "clicks.gpkg", "digest": "0123456789abcdef"}}
    mask = np.zeros((280, 320), bool)
    mask[10:40, 10:40] = True
    vector = tmp_path / f"v.{ext}"
    with SceneWriter(src, str(tmp_path / "m.tif"), prompts, provenance, vector=str(vector)) as w:
        w.add(WindowResult(0, Window(0, 0, 320, 280), mask, 0.9))
        w.finish()
    with rasterio.open(tmp_path / "m.tif") as ds:
        tags = ds.tags()
    listed = json.loads(tags["prompts_json"])
    assert len(tags["prompts_json"]) <= 30000 and listed[0] == prompts[0].to_dict()
    assert listed[-1] == {"omitted": 600 - (len(listed) - 1)}
    prov = json.loads(tags["provenance_json"])
    assert prov["prompt_file"]["digest"] == "0123456789abcdef" and prov["prompts"][-1]["omitted"] > 0
    meta = pyogrio.read_info(vector)["layer_metadata"]
    described = json.loads(meta["provenance"]) if ext == "gpkg" else json.loads(meta["DESCRIPTION"])["provenance"]
    assert described["prompt_file"]["path"] == "clicks.gpkg" and described["prompts"][-1]["omitted"] > 0
    assert len(json.dumps(described)) <= 8000


def test_outputs_record_how_the_pixels_were_read_and_the_prompts_as_given(tmp_path: Path) -> None:
    """--bands, the scene stretch and map-coordinate prompts change the answer: the mask says which were used."""
    import geoseg

    from .conftest import roof_box, scene_array, write_geotiff

    path = write_geotiff(tmp_path / "s.tif", scene_array(count=4, dtype="uint16"))
    src = open_source(path, "3,2,1")
    x0, y0, x1, y1 = roof_box()
    (mx0, my0), (mx1, my1) = src.transform @ (x0, y1), src.transform @ (x1, y0)
    geoseg.segment(path, output=tmp_path / "m.tif", boxes=[(mx0, my0, mx1, my1)], prompt_crs="EPSG:32632",
                   bands="3,2,1", backend="classical")
    with rasterio.open(tmp_path / "m.tif") as m:
        prov = json.loads(m.tags()["provenance_json"])
    assert prov["input"] == {"bands": [3, 2, 1], "stretch": src.stretch, "palette": False, "dtype": "uint16"}
    assert prov["prompt_crs"] == "EPSG:32632"
    assert prov["prompts_given"][0]["box"] == pytest.approx([mx0, my0, mx1, my1])
    assert prov["prompts"][0]["box"] == pytest.approx([x0, y0, x1, y1], abs=1e-6)
