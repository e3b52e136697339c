"""Source adapters on the real Danish fields and ukis tiles: reprojection, bands, class maps, rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from geoseg.data.engine import BuildConfig, build
from geoseg.data.imagery import read_bands, read_rgb
from geoseg.data.sources import get_source
from geoseg.data.sources.base import UNLABELED
from geoseg.errors import InputError
from geoseg.rle import rle_decode


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted(out.rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_dk_fields_polygons_become_instances_on_the_raster(dk_fields_dir: Path) -> None:
    src = get_source("dk_fields", str(dk_fields_dir))
    (ref,) = src.scenes()
    scene = src.load(ref)
    assert scene.instances.shape == (413, 452) and scene.rgb.shape == (413, 452, 3)
    ids = np.unique(scene.instances)
    assert ids[0] == 0 and 250 <= ids.size - 1 <= 276  # nearly every one of the 276 parcels is burned in
    assert scene.classes == ["farmland"] and scene.stretch and not scene.exhaustive
    assert ref.bands == (3, 2, 1)  # the file holds B02, B03, B04: blue first
    win = {"col_off": 100, "row_off": 50, "width": 128, "height": 96}
    row = {"image_path": ref.image_path, "window": win, "bands": list(ref.bands), "stretch": scene.stretch}
    assert np.array_equal(read_rgb(row), scene.rgb[50:146, 100:228])  # rows render as the engine saw them


def test_dk_fields_reprojects_polygons_to_the_raster_crs(dk_fields_dir: Path, tmp_path: Path) -> None:
    """The real parcels written in WGS84 must land on the same pixels as the UTM originals."""
    import shapely
    from pyogrio.raw import read, write

    from geoseg.data.sources.dk_fields import reproject

    meta, _, wkb, fields = read(str(dk_fields_dir / "marker2016_small.shp"))
    assert meta["crs"] == "EPSG:32632"
    geo = reproject(shapely.from_wkb(wkb), "EPSG:32632", "EPSG:4326")
    assert abs(shapely.bounds(geo)[:, 0].mean() - 9.2) < 0.5  # now longitudes, not metres
    shutil.copy(dk_fields_dir / "RGB_small.tif", tmp_path / "RGB_small.tif")
    write(str(tmp_path / "fields.gpkg"), shapely.to_wkb(geo), fields, fields=list(meta["fields"]), crs="EPSG:4326",
          geometry_type="Unknown", driver="GPKG")
    orig = get_source("dk_fields", str(dk_fields_dir))
    moved = get_source("dk_fields", str(tmp_path))
    a = orig.load(orig.scenes()[0]).instances > 0
    b = moved.load(moved.scenes()[0]).instances > 0
    assert np.count_nonzero(a != b) / a.size < 0.005


def test_dk_fields_class_field_and_missing_crs(dk_fields_dir: Path, tmp_path: Path) -> None:
    src = get_source("dk_fields", str(dk_fields_dir), class_field="Afgroede")
    scene = src.load(src.scenes()[0])
    assert "Vårbyg" in scene.classes and len(scene.classes) > 5
    assert scene.instance_class.max() < len(scene.classes)
    with pytest.raises(InputError, match="no attribute 'nope'"):
        get_source("dk_fields", str(dk_fields_dir), class_field="nope").load(src.scenes()[0])
    for f in dk_fields_dir.iterdir():
        if f.suffix != ".prj":
            shutil.copy(f, tmp_path / f.name)
    bare = get_source("dk_fields", str(tmp_path))
    with pytest.raises(InputError, match="no coordinate reference system"):
        bare.load(bare.scenes()[0])


def test_ukis_class_map_display_bands_and_all_bands_kept(ukis_dir: Path) -> None:
    src = get_source("ukis", str(ukis_dir))
    refs = src.scenes()
    assert [r.scene for r in refs] == ["landsat5", "landsat7", "sentinel2"]
    ref = refs[2]
    scene = src.load(ref)
    with np.load(ref.image_path) as z:
        msk = z["msk"][:, :, 0]
    assert scene.classes == ["clear ground", "cloud", "cloud shadow"]
    assert np.array_equal(scene.label == scene.classes.index("cloud"), msk == 4)
    assert np.array_equal(scene.label == scene.classes.index("cloud shadow"), msk == 0)
    assert not np.any(scene.label == UNLABELED)
    win = {"col_off": 0, "row_off": 0, "width": 512, "height": 512}
    assert read_bands(ref.image_path, win, None, ref.image_key).shape == (512, 512, 6)
    row = {"image_path": ref.image_path, "image_key": ref.image_key, "window": win, "bands": list(ref.bands),
           "stretch": scene.stretch}
    assert np.array_equal(read_rgb(row), scene.rgb)
    assert ref.bands == (3, 2, 1)


def test_ukis_unknown_mask_value_and_size_mismatch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 6), dtype=np.float32)
    msk = np.full((64, 64, 1), 3, np.uint8)
    msk[10:30, 10:30] = 4
    msk[0, 0] = 9
    np.savez(tmp_path / "a.npz", img=img, msk=msk)
    src = get_source("ukis", str(tmp_path))
    with pytest.raises(InputError, match=r"values \[9\] not in the class map"):
        src.load(src.scenes()[0])
    lenient = get_source("ukis", str(tmp_path), unknown_value="unlabeled")
    scene = lenient.load(lenient.scenes()[0])
    assert scene.label[0, 0] == UNLABELED and scene.notes["unknown_value_px"] == 1
    np.savez(tmp_path / "a.npz", img=img, msk=msk[:63, :65])
    scene = lenient.load(lenient.scenes()[0])
    assert scene.label.shape == (64, 64) and scene.notes["mask_size_adjusted"] == 1
    np.savez(tmp_path / "a.npz", img=img, msk=msk[:40])
    with pytest.raises(InputError, match="pair each image with its own mask"):
        lenient.load(lenient.scenes()[0])


def test_benchmark_split_config_builds_dubai_tile7_fields_and_clouds(tmp_path: Path, shared_data: Path) -> None:
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "data" / "bench.yaml").read_text())
    for s in raw["sources"]:
        s["path"] = str(shared_data / Path(s["path"]).name)
    raw["sources"][0].setdefault("options", {})["max_scenes_per_region"] = 1  # keep the test short
    manifest = build(BuildConfig.from_dict(raw), tmp_path, workers=0)
    assert set(manifest["splits"]) == {"test"}
    assert manifest["splits"]["test"] == ["dk_fields/RGB_small", "dubai/tile_7", "ukis/landsat5", "ukis/landsat7",
                                          "ukis/sentinel2"]
    rows = _rows(tmp_path)
    cats = {r["category"] for r in rows}
    assert {"farmland", "cloud", "cloud shadow", "building"} <= cats
    for r in rows[::7]:
        m = rle_decode(r["mask"])
        assert m.shape == (r["window"]["height"], r["window"]["width"])
        assert bool(m.any()) != r["empty_target"]
        assert isinstance(json.loads(r["attributes"]), dict)


def test_dataset_serves_all_six_ukis_bands(ukis_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from geoseg.data.dataset import ShardDataset

    cfg = BuildConfig.from_dict({"sources": [{"type": "ukis", "path": str(ukis_dir)}]})
    build(cfg, tmp_path, workers=0, report=False)
    ds = ShardDataset(tmp_path, all_bands=True)
    item = ds[0]
    row = ds.rows[0]
    assert item["bands"].shape == (6, 512, 512) and item["image"].shape == (3, 512, 512)
    with np.load(row["image_path"]) as z:
        assert np.allclose(item["bands"].numpy(), z["img"].transpose(2, 0, 1))
    small = ShardDataset(tmp_path, all_bands=True, size=128)[0]
    assert small["bands"].shape == (6, 128, 128) and small["mask"].shape == (128, 128)


def test_dk_fields_referring_targets_are_unique_among_the_parcels(dk_fields_dir: Path, tmp_path: Path) -> None:
    """Polygon instances: every referring row's predicates select exactly its parcel, re-checked from the source."""
    from geoseg.data import attributes as A
    from geoseg.data import instances as I
    from geoseg.data.dataset import read_rows
    from geoseg.data.instructions import predicates as P

    cfg = BuildConfig.from_dict({"tile_size": 256, "stride": 128, "sources": [{"type": "dk_fields",
                                                                              "path": str(dk_fields_dir)}]})
    build(cfg, tmp_path, workers=0, report=False)
    rows = [r for r in read_rows(tmp_path, tasks=["referring", "reasoning"]) if r["instance_id"] >= 0]
    assert len(rows) > 50
    src = get_source("dk_fields", str(dk_fields_dir))
    scene = src.load(src.scenes()[0])
    for r in rows:
        w = r["window"]
        sl = (slice(w["row_off"], w["row_off"] + w["height"]), slice(w["col_off"], w["col_off"] + w["width"]))
        inst = I.from_instance_map(scene.instances[sl], scene.instance_class, scene.classes)
        att = A.compute(inst, scene.rgb[sl])
        k = r["instance_id"]
        assert np.array_equal(inst.mask(k), rle_decode(r["mask"]))
        idx = P.visible(inst, att, int(inst.cls[k]), 0.001)
        ok = np.ones(idx.size, dtype=bool)
        for p in json.loads(r["attributes"])["expression"]["predicates"]:
            ok &= P.evaluate(p, inst, att, idx)
        assert idx[ok].tolist() == [k], r["instruction"]
