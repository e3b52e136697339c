"""A build config is checked while it is parsed: one line naming the key, the value and what it needs.

Nothing is created for a config that fails, and a YAML syntax error is one line with its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.cli import main
from geoseg.data.engine import BuildConfig, build
from geoseg.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _raw(**top) -> dict:
    return {"tile_size": 64, "stride": 32, "sources": [{"type": "dubai", "path": "/nowhere"}], **top}


def _with_source(**entry) -> dict:
    raw = _raw()
    raw["sources"][0].update(entry)
    return raw


BAD = [
    (_raw(tile_size="big"), r"tile_size = 'big' is invalid \(tile_size needs a whole number >= 1\)"),
    (_raw(tile_size=-5), r"tile_size = -5 .*>= 1"),
    (_raw(stride=0), r"stride = 0 .*>= 1"),
    (_raw(stride=2.5), r"stride = 2.5 .*whole number"),
    (_raw(seed="zero"), r"seed = 'zero' .*whole number"),
    (_raw(seed=True), r"seed = True .*whole number"),
    (_raw(shard_rows=0), r"shard_rows = 0"),
    (_raw(knowledge=3), r"knowledge = 3 .*text"),
    (_raw(filters={"min_area_frac": "tiny"}), r"filters.min_area_frac = 'tiny' .*number in \[0, 1\]"),
    (_raw(filters={"max_unlabeled_frac": 1.5}), r"filters.max_unlabeled_frac = 1.5"),
    (_raw(filters={"min_pixels": "many"}), r"filters.min_pixels = 'many'"),
    (_raw(filters={"min_area_frac": 0.5, "max_area_frac": 0.1}), r"min_area_frac \(0.5\) is above"),
    (_raw(filters=[1, 2]), r"filters = \[1, 2\] .*mapping"),
    (_raw(instructions={"no_target_ratio": [1]}), r"instructions.no_target_ratio = \[1\] .*\[0, 1\)"),
    (_raw(instructions={"class_reasoning": "yes"}), r"instructions.class_reasoning = 'yes' .*true or false"),
    (_raw(instructions={"point_count_p": [1, 2]}), r"instructions.point_count_p"),
    (_raw(instructions={"referring_per_instance": -1}), r"referring_per_instance = -1"),
    (_raw(paraphrase={"tasks": "referring"}), r"paraphrase.tasks = 'referring'"),
    (_raw(paraphrase={"share": 2}), r"paraphrase.share = 2"),
    (_raw(sources={"type": "dubai"}), r"sources = .*a list"),
    (_with_source(type="dubia"), r"sources\[0\].type = 'dubia' .*one of coco, dk_fields, dubai, ukis"),
    (_with_source(path=7), r"sources\[0\].path = 7"),
    (_with_source(tile_size=0), r"sources\[0\].tile_size = 0"),
    (_with_source(stride="x"), r"sources\[0\].stride = 'x'"),
    (_with_source(splits={"train": "tile_1"}), r"sources\[0\].splits.train = 'tile_1' .*list of names"),
    (_with_source(options=["regions"]), r"sources\[0\].options = \['regions'\] .*mapping"),
    (_with_source(options={"unknwon_colour": "unlabeled"}),
     r"unknown dubai source option unknwon_colour in sources\[0\].options "
     r"\(the dubai source reads max_scenes_per_region, regions, split, unknown_colour\)"),
    (_with_source(options={"unknown_colour": "ignore"}),
     r"sources\[0\].options.unknown_colour = 'ignore' is invalid .*one of error, unlabeled"),
    (_with_source(options={"max_scenes_per_region": 0}), r"max_scenes_per_region = 0"),
    (_with_source(options={"regions": "tile_1"}), r"options.regions = 'tile_1'"),
    (_with_source(type="ukis", options={"unknown_value": "drop"}), r"unknown_value = 'drop' .*error, unlabeled"),
    (_with_source(type="ukis", options={"values": {"a": "cloud"}}), r"options.values"),
    (_with_source(type="coco", options={"region_pattern": "P\\d+"}), r"region_pattern .*first group"),
    (_with_source(type="coco", options={"exhaustive": "no"}), r"exhaustive = 'no'"),
    (_with_source(type="dk_fields", options={"bands": [3, 2]}), r"options.bands = \[3, 2\] .*three"),
    (_with_source(type="dk_fields", options={"class_feld": "Afgroede"}), r"unknown dk_fields source option class_feld"),
    ([{"sources": []}], r"the build config is a list, not a mapping"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m[:40] for _, m in BAD])
def test_a_wrong_setting_is_one_line_naming_it(raw, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        BuildConfig.from_dict(raw)
    assert "\n" not in str(info.value)


def test_shipped_configs_and_manifests_still_parse_to_the_same_config() -> None:
    for f in sorted((REPO / "configs" / "data").glob("*.yaml")):
        BuildConfig.from_yaml(f)
    split = json.loads((REPO / "src" / "geoseg" / "bench" / "splits" / "geoseg_bench_v1.json").read_text())
    cfg = BuildConfig.from_dict(split["config"])
    again = BuildConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()


def test_valid_option_values_are_accepted() -> None:
    raw = _with_source(options={"unknown_colour": "unlabeled", "regions": ["tile_1"], "max_scenes_per_region": 2,
                                "split": "test"})
    assert BuildConfig.from_dict(raw).sources[0].options["unknown_colour"] == "unlabeled"
    ukis = _with_source(type="ukis", options={"values": {0: "shadow", 4: "cloud"}, "unknown_value": "error",
                                              "bands": [3, 2, 1], "image_key": "img"})
    BuildConfig.from_dict(ukis)
    BuildConfig.from_dict(_with_source(type="coco", options={"region_pattern": r"^(P\d+)_", "exhaustive": False}))


def _cli(tmp_path: Path, text: str, capsys: pytest.CaptureFixture, *extra: str) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["data", "build", "--config", str(cfg), "-o", str(tmp_path / "out"), "--workers", "0", *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    return err


@pytest.mark.parametrize("text, expect", [
    ("tile_size: big\nsources: [{type: dubai, path: /x}]\n", "tile_size = 'big'"),
    ("seed: zero\nsources: [{type: dubai, path: /x}]\n", "seed = 'zero'"),
    ("stride: 0\nsources: [{type: dubai, path: /x}]\n", "stride = 0"),
    ("filters: {min_area_frac: tiny}\nsources: [{type: dubai, path: /x}]\n", "filters.min_area_frac"),
    ("instructions: {no_target_ratio: [1]}\nsources: [{type: dubai, path: /x}]\n", "instructions.no_target_ratio"),
    ("- type: dubai\n  path: /x\n", "holds a list, not a mapping"),
    ("sources:\n  - type: dubai\n   path: /x\n", "is not valid YAML (line 3, column 4: expected <block end>"),
    ("sources: [{type: dubai, path: /x\n", "is not valid YAML (line 2, column 1:"),
    ("sources: [{type: dubai, path: /x, options: {unknwon_colour: unlabeled}}]\n",
     "unknown dubai source option unknwon_colour"),
    ("sources: [{type: dubai, path: /x, options: {unknown_colour: ignore}}]\n", "one of error, unlabeled"),
    ("sources: nonsense\n", "sources = 'nonsense'"),
])
def test_cli_bad_config_is_one_line_and_creates_nothing(text: str, expect: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert expect in _cli(tmp_path, text, capsys)


def test_cli_bad_size_option_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _cli(tmp_path, "sources: [{type: dubai, path: /x}]\n", capsys, "--tile-size", "0")
    assert "tile_size = 0" in err


def test_unknown_palette_colour_skips_the_scene_naming_the_fix(tmp_path: Path) -> None:
    """What docs/data.md says: the scene is skipped (listed in the manifest) naming the colours and the option
    that would count them as unlabeled; with that option the scene is built."""
    rng = np.random.default_rng(1)
    for name, stray in (("tile_1", False), ("tile_2", True)):
        d = tmp_path / "dubai" / name
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(d / "images" / "image_part_001.jpg")
        m = np.empty((96, 96, 3), np.uint8)
        m[:] = (132, 41, 246)
        m[20:60, 30:70] = (226, 169, 41)
        if stray:
            m[0:3, 0:3] = (1, 2, 3)
        Image.fromarray(m).save(d / "masks" / "image_part_001.png")
    src = {"type": "dubai", "path": str(tmp_path / "dubai")}
    manifest = build(BuildConfig.from_dict({"tile_size": 64, "stride": 32, "sources": [src]}), tmp_path / "a",
                     workers=0, report=False)
    assert manifest["counts"]["skipped_scenes"] == 1
    (skip,) = manifest["skipped"]
    assert "tile_2" in skip and "(1, 2, 3)" in skip and "options: {unknown_colour: unlabeled}" in skip
    assert "add the colours to the palette" not in skip
    with pytest.raises(InputError, match=r"not in the palette: \(1, 2, 3\)"):
        build(BuildConfig.from_dict({"tile_size": 64, "stride": 32, "sources": [src]}), tmp_path / "b",
              workers=0, strict=True)
    assert not (tmp_path / "b").exists()
    lenient = {**src, "options": {"unknown_colour": "unlabeled"}}
    manifest = build(BuildConfig.from_dict({"tile_size": 64, "stride": 32, "sources": [lenient]}), tmp_path / "c",
                     workers=0, report=False)
    assert manifest["skipped"] == [] and manifest["counts"]["notes/unknown_colour_px"] == 9


def test_yaml_config_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(InputError, match=r"line 2, column 1") as info:
        BuildConfig.from_yaml(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="cannot read build config") as info:
        BuildConfig.from_yaml(tmp_path / "missing.yaml")
    assert "\n" not in str(info.value)
