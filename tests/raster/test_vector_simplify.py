"""``--simplify`` and ``--min-area``: shaped polygons for GIS users, the mask raster untouched.

Seeded generated GeoTIFF / PNG scenes whose bright pixels are the answer (:class:`BrightSegmenter`),
so the mask is known pixel for pixel, and real outlines (the Dubai building labels, the Danish
parcels) written through the scene writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy import ndimage

import geoseg
from geoseg import segmenters
from geoseg.batch import MARKER_DIR, run_batch
from geoseg.batch.jobs import BatchOptions
from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.raster.writer import SceneWriter, WindowResult

from .conftest import BrightSegmenter, write_geotiff, write_plain
from .test_cli_segment import run_cli

GROUND, BRIGHT = 30, 220


def blob_array(width: int = 360, height: int = 300, seed: int = 3) -> np.ndarray:
    """``3 x H x W`` uint8: smooth seeded blobs (ragged pixel outlines, holes, specks) bright on dark ground."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((height, width)), 4)
    bright = field > np.quantile(field, 0.7)
    return np.where(bright, BRIGHT, GROUND).astype(np.uint8)[None].repeat(3, axis=0)


#: (row0, row1, col0, col1, value) painted in order on a 200 x 160 scene of 10 m pixels (100 m² each)
SHAPES = (
    (10, 13, 10, 13, BRIGHT),   # speck: 9 px
    (10, 15, 30, 35, BRIGHT),   # piece: 25 px
    (10, 14, 50, 55, BRIGHT),   # piece of exactly 20 px
    (10, 15, 70, 75, BRIGHT),   # ring of 16 px ...
    (11, 14, 71, 74, GROUND),   # ... around a 9 px hole: 25 px filled
    (40, 70, 10, 40, BRIGHT),   # field 900 px ...
    (50, 52, 15, 17, GROUND),   # ... with a 4 px hole
    (55, 61, 25, 31, GROUND),   # ... and a 36 px hole
    (40, 70, 60, 90, BRIGHT),   # lake shore 900 px ...
    (53, 57, 73, 77, GROUND),   # ... around a 16 px lake ...
    (54, 55, 74, 75, BRIGHT),   # ... with a 1 px island
    (100, 150, 100, 190, BRIGHT),  # a big roof, so the scene's stretch sees both levels
)


def shapes_array() -> np.ndarray:
    img = np.full((160, 200), GROUND, np.uint8)
    for r0, r1, c0, c1, value in SHAPES:
        img[r0:r1, c0:c1] = value
    return img[None].repeat(3, axis=0)


@pytest.fixture()
def bright_backend(monkeypatch) -> str:
    """``--backend bright``: text answered with the bright pixels (deterministic per pixel)."""
    monkeypatch.setitem(segmenters._REGISTRY, "bright", lambda **_: BrightSegmenter())
    return "bright"


def read_layer(path: Path) -> tuple[np.ndarray, dict]:
    """Geometries and fields of a layer, in ``id`` order."""
    meta, _, wkb, fields = pyogrio.raw.read(path)
    cols = dict(zip(meta["fields"], fields))
    order = np.argsort(cols["id"])
    return shapely.from_wkb(wkb)[order], {k: v[order] for k, v in cols.items()}


def read_mask(path: Path) -> tuple[np.ndarray, object]:
    with rasterio.open(path) as ds:
        return ds.read(1) == 1, ds.transform


def layer_provenance(path: Path) -> dict:
    return json.loads(pyogrio.read_info(path)["layer_metadata"]["provenance"])


def check_coverages(geoms: np.ndarray, prompts: np.ndarray) -> None:
    """Every geometry a valid, non-empty polygon; each prompt's polygons a valid coverage (no overlap)."""
    assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
    assert set(shapely.get_type_id(geoms)) == {shapely.GeometryType.POLYGON}
    for p in np.unique(prompts):
        mine = geoms[prompts == p]
        assert shapely.coverage_is_valid(mine), p
        assert shapely.union_all(mine).area == pytest.approx(shapely.area(mine).sum(), rel=1e-9), p


def pixels_off(geoms: np.ndarray, mask: np.ndarray, transform) -> float:
    """Pixels where the polygons burnt into the mask's grid differ from it, as a share of the mask."""
    burnt = rasterize(((g, 1) for g in geoms), out_shape=mask.shape, transform=transform, dtype="uint8")
    return float((burnt.astype(bool) ^ mask).sum()) / mask.sum()


@pytest.mark.parametrize("crs", ["EPSG:32632", "EPSG:4326"])
def test_simplify_cuts_vertices_and_keeps_valid_coverages(tmp_path: Path, bright_backend: str, crs: str) -> None:
    """Tiled text answers (objects cut by window borders) under two prompts, exact and simplified.

    Simplifying moves outlines by under a pixel: the pixels that change, burnt back into the grid,
    are a small share of the mask and of the outlines' length (staircase corners cut or filled).
    """
    scene = write_geotiff(tmp_path / "blobs.tif", blob_array(), crs=crs)
    vertices, counts, masks = {}, {}, []
    for tol in (0.0, 1.0, 2.0):
        out = tmp_path / f"v{tol:g}.gpkg"
        res = geoseg.segment(scene, output=tmp_path / f"m{tol:g}.tif", text=["bright", "shiny"],
                             backend=bright_backend, tile_size=96, overlap=16, vector=out, simplify=tol)
        geoms, fields = read_layer(out)
        mask, transform = read_mask(tmp_path / f"m{tol:g}.tif")
        masks.append(mask)
        check_coverages(geoms, fields["prompt"])
        if tol == 0:
            outline_px = shapely.length(geoms[fields["prompt"] == "bright"]).sum() / abs(transform.a)
        off = pixels_off(geoms, mask, transform)
        assert off <= {0.0: 0.0, 1.0: 0.03, 2.0: 0.06}[tol], (tol, off)
        assert off * mask.sum() <= {0.0: 0.0, 1.0: 0.1, 2.0: 0.2}[tol] * outline_px, (tol, off)
        vertices[tol], counts[tol] = int(shapely.get_num_coordinates(geoms).sum()), len(geoms)
        assert res.n_objects == len(geoms) and {"bright", "shiny"} == set(fields["prompt"])
        assert layer_provenance(out)["vector"] == {"simplify": tol, "simplify_unit": "px", "min_area": 0.0,
                                                   "min_area_unit": "m2"}
    assert counts[0.0] > 50 and counts[0.0] == counts[1.0] == counts[2.0]  # no polygon vanished
    assert vertices[1.0] < 0.6 * vertices[0.0] and vertices[2.0] < vertices[1.0], vertices
    assert all((m == masks[0]).all() for m in masks)  # the mask raster never changes


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the PNG's outputs
@pytest.mark.parametrize("plain", [False, True], ids=["utm-m2", "png-px"])
def test_min_area_drops_small_pieces_and_fills_small_holes(tmp_path: Path, bright_backend: str, plain: bool) -> None:
    if plain:
        scene, unit, a = write_plain(tmp_path / "shapes.png", shapes_array()), "px", 20.0
    else:
        scene, unit, a = write_geotiff(tmp_path / "shapes.tif", shapes_array()), "m2", 2000.0
    px = 1.0 if plain else 100.0
    geoseg.segment(scene, output=tmp_path / "all.tif", text=["bright"], backend=bright_backend,
                   vector=tmp_path / "all.gpkg")
    every, _ = read_layer(tmp_path / "all.gpkg")
    assert len(every) == 8 and sorted(len(g.interiors) for g in every) == [0, 0, 0, 0, 0, 1, 1, 2]
    for tol in (0.0, 1.0):
        out = tmp_path / f"big{tol:g}.gpkg"
        geoseg.segment(scene, output=tmp_path / f"big{tol:g}.tif", text=["bright"], backend=bright_backend,
                       vector=out, min_area=a, simplify=tol)
        geoms, fields = read_layer(out)
        check_coverages(geoms, fields["prompt"])
        assert (fields["area"] >= a).all()
        holes = [shapely.Polygon(r) for g in geoms for r in g.interiors]
        if tol == 0:
            # speck (9 px) and island (1 px) dropped; the 20 px piece kept; the field's 4 px hole, the
            # 16 px lake (the island in it dropped) and the ring's 9 px hole filled (so the ring counts
            # 25 px, not 16), the 36 px hole kept
            assert sorted(np.round(fields["area"] / px).astype(int).tolist()) == [20, 25, 25, 864, 900, 4500]
            assert [h.area / px for h in holes] == [36.0]
        else:
            assert len(geoms) == 6 and len(holes) == 1
        assert layer_provenance(out)["vector"] == {"simplify": tol, "simplify_unit": "px", "min_area": a,
                                                   "min_area_unit": unit}
        with rasterio.open(tmp_path / f"big{tol:g}.tif") as m, rasterio.open(tmp_path / "all.tif") as ref:
            assert (m.read(1) == ref.read(1)).all()  # vectors only
            assert json.loads(m.tags()["provenance_json"])["vector"]["min_area"] == a


def write_with(source_path: Path, mask: np.ndarray, out: Path, block: int, **shape) -> tuple[np.ndarray, dict]:
    """Write ``mask`` as one prompt's answer through the scene writer (blocks of ``block`` px)."""
    src = open_source(str(source_path))
    try:
        with SceneWriter(src, str(out.with_suffix(".tif")), [Prompt(text="target")], {"model": "test"},
                         vector=str(out), block=block, **shape) as writer:
            writer.add(WindowResult(0, Window(0, 0, src.width, src.height), mask, 1.0))
            writer.finish()
    finally:
        src.close()
    return read_layer(out)


def test_real_building_outlines(tmp_path: Path, dubai_dir: Path) -> None:
    """The hand-labelled buildings of a Dubai image (no CRS: pixels), cut into 512 px blocks."""
    from PIL import Image

    image = dubai_dir / "tile_7" / "images" / "image_part_004.jpg"
    labels = np.asarray(Image.open(dubai_dir / "tile_7" / "masks" / "image_part_004.png").convert("RGB"))
    mask = (labels == np.array((60, 16, 152), np.uint8)).all(axis=2)
    exact, _ = write_with(image, mask, tmp_path / "exact.gpkg", 512)
    simple, fields = write_with(image, mask, tmp_path / "simple.gpkg", 512, simplify=1.0)
    assert len(exact) == len(simple) > 50
    check_coverages(simple, fields["prompt"])
    assert shapely.get_num_coordinates(simple).sum() < 0.5 * shapely.get_num_coordinates(exact).sum()
    assert pixels_off(simple, mask, rasterio.Affine.identity()) < 0.01
    assert abs(fields["area"].sum() - mask.sum()) < 0.005 * mask.sum()
    big, fields = write_with(image, mask, tmp_path / "big.gpkg", 512, min_area=100.0)
    sizes = np.bincount(ndimage.label(mask)[0].ravel())[1:]  # 4-connected pieces, as traced
    assert (fields["area"] >= 100).all() and len(big) >= (sizes >= 100).sum() and len(big) < len(exact)
    assert all(shapely.Polygon(r).area >= 100 for g in big for r in g.interiors)


def test_real_parcels_in_square_metres(tmp_path: Path, dk_fields_dir: Path) -> None:
    """The Danish parcels burnt into the Sentinel-2 grid (EPSG:32632, 10 m): --min-area in m²."""
    meta, _, wkb, _ = pyogrio.raw.read(dk_fields_dir / "marker2016_small.shp")
    scene = dk_fields_dir / "RGB_small.tif"
    with rasterio.open(scene) as ds:
        from geoseg.vector import reproject_geoms

        parcels = reproject_geoms(shapely.from_wkb(wkb), meta["crs"], ds.crs)
        mask = rasterize(((g, 1) for g in parcels), out_shape=ds.shape, transform=ds.transform).astype(bool)
        transform = ds.transform
    exact, _ = write_with(scene, mask, tmp_path / "exact.gpkg", 128)
    simple, fields = write_with(scene, mask, tmp_path / "simple.gpkg", 128, simplify=1.0, min_area=5000.0)
    check_coverages(simple, fields["prompt"])
    assert (fields["area"] >= 5000).all() and 0 < len(simple) < len(exact)
    assert shapely.get_num_coordinates(simple).sum() < 0.6 * shapely.get_num_coordinates(exact).sum()
    assert pixels_off(simple, mask, transform) < 0.03
    assert layer_provenance(tmp_path / "simple.gpkg")["vector"]["min_area_unit"] == "m2"


def _cli_cases(tmp: Path, scene: Path, folder: Path) -> list[tuple[list[str], str]]:
    v = ["--vector", str(tmp / "out" / "v.gpkg")]
    return [
        ([str(scene), "--simplify", "-1", *v], "--simplify -1.0 is not a number >= 0"),
        ([str(scene), "--min-area", "-5", *v], "--min-area -5.0 is not a number >= 0"),
        ([str(scene), "--simplify", "nan", *v], "--simplify nan is not a number >= 0"),
        ([str(scene), "--simplify", "1"], "--simplify shapes the polygons, and no vector output"),
        ([str(scene), "--simplify", "1", "--min-area", "3"], "--simplify and --min-area shape the polygons"),
        ([str(folder), "--min-area", "10", "--workers", "0"], "--min-area shapes the polygons"),
        ([str(folder), "--simplify", "-2", "--vector", "gpkg", "--workers", "0"], "--simplify -2.0"),
    ]


def test_cli_bad_values_and_no_vector(tmp_path: Path, bright_backend: str, capsys) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    scene = write_geotiff(folder / "s.tif", shapes_array())
    out = tmp_path / "out"
    for args, message in _cli_cases(tmp_path, scene, folder):
        code, _, err = run_cli(["segment", *args, "--text", "bright", "--backend", bright_backend,
                                "-o", str(out / "m.tif" if args[0] == str(scene) else out)], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, err)
        assert not out.exists(), args
    assert sorted(p.name for p in folder.iterdir()) == ["s.tif"]
    code, stdout, _ = run_cli(["segment", str(scene), "--text", "bright", "--backend", bright_backend, "-o",
                               str(out / "m.tif"), "--vector", str(out / "v.fgb"), "--simplify", "1",
                               "--min-area", "2000", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["n_objects"] == 6


def test_batch_shapes_every_scene_and_keys_the_resume(tmp_path: Path, bright_backend: str) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        write_geotiff(folder / f"s{i}.tif", blob_array(seed=i))
    out, text = tmp_path / "out", [Prompt(text="bright")]
    first = run_batch(folder, out, text, backend=bright_backend, merged_vector=tmp_path / "all.gpkg",
                      simplify=1.0, min_area=5000.0)
    assert first.count("done") == 2
    for i in range(2):
        geoms, fields = read_layer(out / f"s{i}.gpkg")  # --merged-vector implies --vector gpkg
        check_coverages(geoms, fields["prompt"])
        assert (fields["area"] >= 5000).all()
        assert layer_provenance(out / f"s{i}.gpkg")["vector"]["simplify"] == 1.0
    markers = [json.loads(p.read_text()) for p in (out / MARKER_DIR).glob("s[0-9].json")]
    assert [(m["job_key"]["simplify"], m["job_key"]["min_area"]) for m in markers] == [(1.0, 5000.0)] * 2
    again = run_batch(folder, out, text, backend=bright_backend, merged_vector=tmp_path / "all.gpkg",
                      simplify=1.0, min_area=5000.0)
    assert again.count("skipped") == 2
    with pytest.raises(InputError, match=r"differs in: min-area, simplify\)"):
        run_batch(folder, out, text, backend=bright_backend, vector="gpkg")
    with pytest.raises(GeosegError, match="--simplify shapes the polygons, and no vector output"):
        run_batch(folder, tmp_path / "other", text, backend=bright_backend, simplify=1.0)
    assert not (tmp_path / "other").exists()
    # at the defaults the key is what it was before the options existed: earlier folders still resume
    assert "simplify" not in BatchOptions(vector="gpkg").key(text)
    assert "min_area" not in BatchOptions(vector="gpkg").key(text)


def test_a_speck_in_a_notch_stays_out_of_the_field() -> None:
    """A piece inside another's notch: simplifying the field alone (Douglas-Peucker) would cut the notch
    off and cover the piece; simplified as one coverage the two never overlap, at any tolerance."""
    from geoseg.vector import PolygonCollector, simplify_polygons

    mask = np.zeros((20, 30), bool)
    mask[5:15, 2:28] = True
    mask[5:9, 12:17] = False  # a notch 5 px wide, 4 deep ...
    mask[6, 14] = True  # ... and a speck in it that touches nothing
    collector = PolygonCollector(30, 20)
    collector.add_block(mask.view(np.uint8), Window(0, 0, 30, 20))
    polygons = collector.polygons()
    for tol in (1.0, 2.0, 5.0, 8.0):
        geoms = np.array([g for _, g in simplify_polygons(polygons, tol)], dtype=object)
        assert len(geoms) == 2
        check_coverages(geoms, np.ones(2))
        assert shapely.intersection(geoms[0], geoms[1]).area == 0.0, tol


def test_simplify_needs_a_coverage_capable_shapely(monkeypatch) -> None:
    from geoseg.vector import simplify_polygons

    square = shapely.box(0, 0, 3, 3)
    monkeypatch.setattr(shapely, "geos_version", (3, 11, 2))
    with pytest.raises(GeosegError, match=r"needs shapely >= 2.1 with GEOS >= 3.12 .*GEOS 3.11.2"):
        simplify_polygons([(1, square)], 1.0)
    assert simplify_polygons([(1, square)], 0.0) == [(1, square)]  # exact outlines need nothing


def test_only_valid_polygons_leave_the_simplifier() -> None:
    """An empty result is dropped and an invalid one repaired within its footprint, never written as is."""
    from geoseg.vector import _polygonal_parts

    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    index, parts = _polygonal_parts(np.array([shapely.box(0, 0, 1, 1), shapely.Polygon(), bowtie], dtype=object))
    assert index == [0, 2, 2] and all(p.is_valid and p.geom_type == "Polygon" for p in parts)
    assert sum(p.area for p in parts[1:]) == pytest.approx(2.0)


def test_predictor_write_shapes_the_polygons(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "shapes.tif", shapes_array())
    pred = geoseg.SegmentPredictor(segmenter=BrightSegmenter())
    pred.set_image(scene)
    results = [pred.predict(text="bright")]
    pred.write(results, tmp_path / "m.tif", vector=tmp_path / "v.gpkg", simplify=1.0, min_area=2000.0)
    geoms, fields = read_layer(tmp_path / "v.gpkg")
    assert len(geoms) == 6 and (fields["area"] >= 2000).all()
    with pytest.raises(GeosegError, match="--min-area shapes the polygons"):
        pred.write(results, tmp_path / "m2.tif", min_area=2000.0)
    assert not (tmp_path / "m2.tif").exists()
