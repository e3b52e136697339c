"""Instructions unlike the shipped model's training ones are told apart (geoseg.unified.instruction_check).

The shipped unified model answers any text: a French or a nonsense instruction gets a mask as
confident as an English one. The check measures how far the text's MiniLM sentence embedding is
from instructions the data engine writes about the checkpoint's classes, and ``geoseg segment``
prints a note for a distant one and records every text's distance in the mask's provenance.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.prompts import Prompt
from geoseg.segmenters import build_segmenter
from geoseg.unified.instruction_check import UNFAMILIAR_DISTANCE, check_instructions, reference_instructions

DUBAI = ("land", "water", "building", "vegetation", "road")

#: typical instructions in other languages, and nonsense
FOREIGN = ["l'eau", "das Wasser", "el agua", "les bâtiments", "die Gebäude", "los edificios",
           "le plus grand bâtiment en haut à gauche", "Wo könnte ein Boot fahren?", "¿Dónde vive la gente?",
           "建筑物", "左上角最大的建筑物", "الماء", "أين يمكن أن يبحر قارب؟"]
GIBBERISH = ["asdkjh qwe", "xyzzy", "lorem ipsum dolor sit amet", "blorf the snarg", "123 456", "!!!"]


@pytest.fixture(scope="module")
def shipped():
    return build_segmenter("unified", device="cpu", threads=2)


def _distance(seg, text: str) -> float:
    return seg.instruction_distance(Prompt(text=text))[0]


def test_other_languages_and_gibberish_are_flagged(shipped):
    far = {t: _distance(shipped, t) for t in FOREIGN + GIBBERISH}
    assert all(d > UNFAMILIAR_DISTANCE for d in far.values()), far
    # measured 0.65-0.81 for these (benchmarks/instruction_ood.py): well past the threshold, not just over it
    assert np.median(list(far.values())) > 2 * UNFAMILIAR_DISTANCE, far
    assert shipped.instruction_distance(Prompt(box=(1.0, 1.0, 9.0, 9.0))) is None  # no text, nothing to measure


def _engine_instructions(classes: tuple[str, ...], tiles: int, seed: int) -> list[str]:
    """Referring and reasoning instructions the data engine writes for seeded generated class maps."""
    from geoseg.data import attributes, filters, instances
    from geoseg.data.instructions import InstructionConfig, generate
    from geoseg.data.instructions.knowledge import load_kb

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(tiles):
        label = np.full((256, 256), rng.integers(len(classes)), np.uint8)
        for _ in range(int(rng.integers(4, 14))):  # rectangles of random classes, some long and thin
            h, w = (int(v) for v in rng.integers(8, 128, 2))
            if rng.random() < 0.3:
                w = int(rng.integers(4, 16))
            y, x = int(rng.integers(0, 256 - h)), int(rng.integers(0, 256 - w))
            label[y:y + h, x:x + w] = rng.integers(len(classes))
        inst = instances.from_class_map(label, list(classes))
        att = attributes.compute(inst, rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        keep = filters.apply(inst, att, filters.FilterConfig(), Counter())
        out += [s.instruction for s in generate(inst, att, keep, InstructionConfig(), load_kb(), rng)
                if s.task != "interactive"]
    return out


def test_instructions_the_data_engine_writes_are_not_flagged(shipped):
    """Validation-style instructions (the engine's own generator, not the reference enumeration) pass, as do
    the class names and the wording the docs show."""
    texts = _engine_instructions(DUBAI, tiles=30, seed=7)
    assert len(set(texts)) > 150
    shipped.text.encode(list(dict.fromkeys(texts)))  # one batched pass; the check then reads the cache
    d = np.array([_distance(shipped, t) for t in texts])
    # on the validation split 0.64 % of rows are flagged, by construction of the threshold (<= 1 %)
    assert np.mean(d > UNFAMILIAR_DISTANCE) <= 0.02, sorted(zip(d, texts))[-10:]
    assert np.median(d) < 0.15
    for text in ("the water", "buildings", "the largest building", "Where could a boat sail?", "roads"):
        assert _distance(shipped, text) <= UNFAMILIAR_DISTANCE, text


def test_a_checkpoint_on_other_classes_is_measured_against_its_own(shipped):
    """The references come from ``cfg.classes``: a model of farmland and clouds takes "the farm field" and
    notes "the body of water", naming its own classes."""
    refs = reference_instructions(("farmland", "cloud"))
    assert "Where could crops be harvested in this image?" in refs and not any("water" in t for t in refs)
    other = copy.copy(shipped)
    other.cfg = replace(shipped.cfg, classes=("farmland", "cloud"))
    assert _distance(other, "Segment the farm field.") < 0.05
    checked = check_instructions(other, [Prompt(text="the farm field"), Prompt(text="Segment the body of water.")])
    assert [p["unfamiliar"] for p in checked.record["prompts"]] == [False, True]
    assert len(checked.notes) == 1 and "(English instructions about farmland, cloud)" in checked.notes[0]
    assert "'the largest farm field'" in checked.notes[0]  # its own wording


def _scene(path: Path) -> Path:
    """A seeded 128 px RGB GeoTIFF in UTM: sand with a blue pond and a grey roof."""
    rng = np.random.default_rng(0)
    img = np.empty((3, 128, 128), np.float32)
    img[:] = np.array([194, 178, 128], np.float32)[:, None, None]
    img[:, 20:70, 15:80] = np.array([40, 90, 150], np.float32)[:, None, None]
    img[:, 85:115, 85:115] = 140
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    profile = {"driver": "GTiff", "width": 128, "height": 128, "count": 3, "dtype": "uint8", "crs": "EPSG:32640",
               "transform": from_origin(500000, 2800000, 0.5, 0.5), "photometric": "RGB"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path


def test_segment_notes_an_unfamiliar_instruction_and_records_every_distance(tmp_path, run_geoseg, caplog):
    scene = _scene(tmp_path / "scene.tif")
    code, out = run_geoseg(["segment", str(scene), "--text", "das Wasser", "--text", "the body of water",
                      "-o", str(tmp_path / "m.tif")])[:2]
    assert code == 0
    notes = [line for line in out.splitlines() if line.startswith("note: the instruction")]
    assert len(notes) == 1, out
    assert notes[0].startswith("note: the instruction 'das Wasser' is unlike what this model was trained on "
                               "(English instructions about land, water, building, vegetation, road), so its "
                               "answer may not follow it; rephrase it in English")
    assert "point or a box" in notes[0] and "trainfree backend" in notes[0]
    # printed once: the command quiets the notes logger while it shows the notes itself
    assert not any("'das Wasser' is unlike" in r.getMessage() for r in caplog.records)
    import geoseg  # the library logs it (a Python user's channel) and returns it

    caplog.clear()
    res = geoseg.segment(scene, text="das Wasser", output=tmp_path / "lib.tif")
    assert any("'das Wasser' is unlike" in n for n in res.notes)
    assert any(r.levelname == "WARNING" and r.name == "geoseg.notes" and "'das Wasser' is unlike" in r.getMessage()
               for r in caplog.records)
    with rasterio.open(tmp_path / "m.tif") as m:
        record = json.loads(m.tags()["provenance_json"])["instruction_check"]
    assert record["threshold"] == UNFAMILIAR_DISTANCE
    (german, english) = record["prompts"]
    assert german["prompt"] == 0 and german["unfamiliar"] and german["distance"] > 0.5
    assert english["prompt"] == 1 and not english["unfamiliar"] and english["distance"] < 0.05
    # --json lists the note; an English instruction alone gets none; a backend without text gets no record
    code, out = run_geoseg(["segment", str(scene), "--text", "the body of water", "-o", str(tmp_path / "e.tif"),
                      "--json"])[:2]
    assert code == 0 and not any("unlike what" in n for n in json.loads(out)["notes"])
    code, out = run_geoseg(["segment", str(scene), "--text", "xyzzy", "-o", str(tmp_path / "x.tif"), "--json"])[:2]
    assert code == 0 and any("'xyzzy' is unlike what" in n for n in json.loads(out)["notes"])
    code, _ = run_geoseg(["segment", str(scene), "--box", "10,10,60,60", "--backend", "classical",
                    "-o", str(tmp_path / "c.tif")])[:2]
    with rasterio.open(tmp_path / "c.tif") as m:
        assert code == 0 and "instruction_check" not in json.loads(m.tags()["provenance_json"])


def test_batch_mode_notes_it_once_and_records_it_in_every_scene(tmp_path):
    from geoseg.batch import run_batch
    from geoseg.prompts import Prompt

    scenes = [_scene(tmp_path / "a.tif"), _scene(tmp_path / "b.tif")]
    summary = run_batch(scenes, tmp_path / "out", [Prompt(text="das Wasser")], backend="unified", device="cpu")
    assert [n for n in summary.notes if "'das Wasser' is unlike what this model was trained on" in n]
    assert sum("note: the instruction 'das Wasser'" in line for line in summary.report().splitlines()) == 1
    for name in ("a", "b"):
        with rasterio.open(tmp_path / "out" / f"{name}.tif") as m:
            (record,) = json.loads(m.tags()["provenance_json"])["instruction_check"]["prompts"]
        assert record["unfamiliar"] and record["distance"] > 0.5


def test_building_the_reference_set_leaves_the_models_text_cache_alone(shipped):
    """A reference encoded in a padded batch differs from the text encoded alone in its last bits: cached, it made
    the answer to an instruction that is also a reference ("the water") depend on whether the check had run first."""
    from geoseg.unified.instruction_check import _REFERENCES, reference_for

    fresh = copy.copy(shipped.text)
    fresh._cache = type(shipped.text._cache)()
    _REFERENCES.clear()
    reference_for(fresh, shipped.cfg.classes)
    assert "the water" in reference_instructions(shipped.cfg.classes)
    assert len(fresh._cache) == 0


def test_the_predictor_logs_an_unfamiliar_instruction(tmp_path, caplog):
    import geoseg

    pred = geoseg.SegmentPredictor("unified", device="cpu")
    pred.set_image(_scene(tmp_path / "scene.tif"))
    with caplog.at_level("WARNING", logger="geoseg.notes"):
        pred.predict(text="das Wasser")
    assert any("'das Wasser' is unlike" in r.getMessage() for r in caplog.records)
