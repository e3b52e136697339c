"""Edge cases of user datasets met by the source adapters and the GeoSeg-Bench export (small synthetic files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.data.engine import BuildConfig, build
from geoseg.data.export import export_geoseg_bench
from geoseg.data.sources import get_source
from geoseg.data.sources.base import NO_CROWD
from geoseg.errors import InputError
from geoseg.rle import rle_decode

S = 100


def _coco(root: Path, names: list[str], anns: list[dict], cats: list[dict] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    images = []
    for i, n in enumerate(names, start=1):
        Image.fromarray(np.full((S, S, 3), 40 + 60 * i, np.uint8)).save(root / "images" / n)
        images.append({"id": i, "file_name": n, "height": S, "width": S})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": cats or [{"id": 1, "name": "ship"}]}, ensure_ascii=False), encoding="utf-8")
    return ann


def _square(x0: int, aid: int, iid: int) -> dict:
    return {"id": aid, "image_id": iid, "category_id": 1, "iscrowd": 0,
            "segmentation": [[x0, 10, x0 + 40, 10, x0 + 40, 60, x0, 60]]}


def test_coco_bbox_only_annotation_is_counted_not_a_crash(tmp_path: Path) -> None:
    box = {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [60, 60, 30, 20]}  # no segmentation
    ann = _coco(tmp_path, ["a.png"], [_square(5, 1, 1), box])
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert scene.notes["no_segmentation"] == 1
    assert scene.instance_class.tolist() == [0]  # only the polygon is a target
    assert scene.crowd is not None and (scene.crowd[60:80, 60:90] == 0).all()  # the box: never asked as absent
    assert (scene.crowd[:50, :50] == NO_CROWD).all()


@pytest.mark.parametrize(("part", "drop", "expect"), [
    ("annotations", "image_id", r"annotations\[1\] lacks 'image_id'"),
    ("categories", "id", r"categories\[0\] lacks 'id'"),
    ("images", "file_name", r"images\[0\] lacks 'file_name'"),
])
def test_coco_entry_missing_a_key_is_a_one_line_error(tmp_path: Path, part: str, drop: str, expect: str) -> None:
    ann = _coco(tmp_path, ["a.png"], [_square(5, 1, 1), _square(50, 2, 1)])
    data = json.loads(ann.read_text())
    idx = 1 if part == "annotations" else 0
    del data[part][idx][drop]
    ann.write_text(json.dumps(data))
    with pytest.raises(InputError, match=expect):
        get_source("coco", str(ann)).scenes()


def test_ukis_nan_fractional_and_malformed_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 6)).astype(np.float32)
    msk = rng.integers(0, 5, (32, 32)).astype(np.float32)
    msk[0, 0], msk[0, 1] = np.nan, 1.5
    np.savez(tmp_path / "a.npz", img=img, msk=msk)
    src = get_source("ukis", str(tmp_path))
    with pytest.raises(InputError, match=r"values \[1\.5\]"):  # a fractional value is no class value
        src.load(src.scenes()[0])
    scene = get_source("ukis", str(tmp_path), unknown_value="unlabeled").load(src.scenes()[0])
    assert scene.notes["nonfinite_mask_px"] == 1 and scene.notes["unknown_value_px"] == 1
    assert scene.label[0, 0] == 255 and scene.label[0, 1] == 255
    np.savez(tmp_path / "a.npz", img=np.arange(4.0), msk=msk)  # a 1-D "image": named, not an IndexError
    with pytest.raises(InputError, match="not an H x W x bands image"):
        src.load(src.scenes()[0])


def test_dk_fields_drops_zero_area_and_unclassed_polygons(tmp_path: Path) -> None:
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    with rasterio.open(tmp_path / "r.tif", "w", driver="GTiff", height=100, width=100, count=3, dtype="uint16",
                       crs="EPSG:32632", transform=from_origin(500000, 6200000, 10, 10)) as dst:
        dst.write(np.random.default_rng(0).integers(100, 3000, (3, 100, 100)).astype("uint16"))
    t = Transformer.from_crs(32632, 4326, always_xy=True)  # the polygons are in another CRS than the raster

    def ring(*pts: tuple[int, int]) -> list:
        return [list(t.transform(500000 + 10 * x, 6200000 - 10 * y)) for x, y in (*pts, pts[0])]

    def feat(crop: object, coords: list) -> dict:
        return {"type": "Feature", "properties": {"crop": crop}, "geometry": {"type": "Polygon", "coordinates": [coords]}}

    feats = [feat("wheat", ring((10, 10), (40, 10), (40, 40), (10, 40))),
             feat("rye", ring((10, 60), (90, 60), (50, 60))),          # zero area (a line)
             feat(None, ring((10, 70), (40, 70), (40, 95), (10, 95)))]  # no class
    (tmp_path / "v.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    src = get_source("dk_fields", str(tmp_path), class_field="crop")
    scene = src.load(src.scenes()[0])
    assert scene.classes == ["wheat"]
    assert scene.notes["polygons_zero_area"] == 1 and scene.notes["polygons_without_class"] == 1
    assert scene.instance_class.tolist() == [0] and int((scene.instances == 1).sum()) == 900


def _small_build(tmp_path: Path, names: list[str]) -> Path:
    ann = _coco(tmp_path / "coco", names, [_square(10 + 30 * i, i, i) for i in range(1, len(names) + 1)])
    cfg = BuildConfig.from_dict({"tile_size": S, "stride": S, "sources": [{"type": "coco", "path": str(ann)}]})
    build(cfg, tmp_path / "build", workers=0, report=False)
    return tmp_path / "build"


def test_export_keeps_non_ascii_scenes_apart(tmp_path: Path) -> None:
    build_dir = _small_build(tmp_path, ["é.png", "ü.png"])  # both sanitise to "_"
    summary = export_geoseg_bench(build_dir, tmp_path / "gsb")
    entries = json.loads((tmp_path / "gsb" / "train.json").read_text())
    assert summary["train"]["entries"] == len(entries) == 6
    assert len({e["img"] for e in entries}) == len({e["mask"] for e in entries}) == 6
    from geoseg.data.dataset import read_rows
    rows = {r["sample_id"]: r for r in read_rows(build_dir)}
    for e in entries:  # each exported mask is its own row's mask
        qa = json.loads((tmp_path / "gsb" / e["json"]).read_text(encoding="utf-8"))
        m = np.array(Image.open(tmp_path / "gsb" / e["mask"])) > 0
        assert all(np.array_equal(m, rle_decode(rows[sid]["mask"])) for sid in qa["sample_id"])


def test_export_into_the_build_folder_is_refused(tmp_path: Path) -> None:
    build_dir = _small_build(tmp_path, ["a.png"])
    with pytest.raises(InputError, match="inside the build"):
        export_geoseg_bench(build_dir, build_dir / "gsb")
    assert not (build_dir / "gsb").exists()
