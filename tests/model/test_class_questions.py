"""A bare class name ("vegetation", "the water") is asked as the model's question for the whole class.

Asked as typed, "vegetation" found almost none of the vegetation of the Dubai validation images
(pooled IoU 0.06) while the class's question found most of it (0.73); see
``benchmarks/class_questions.py`` and :mod:`geoseg.unified.class_questions`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.cli import cli
from geoseg.data.instructions.knowledge import load_kb
from geoseg.prompts import Prompt
from geoseg.unified.class_questions import as_class_question
from geoseg.unified.segmenter import UnifiedSegmenter, default_checkpoint_path

DUBAI = ("land", "water", "building", "vegetation", "road")


def _question(cls: str) -> str:
    return load_kb().uses(cls)[0].query


@pytest.mark.parametrize(("text", "cls"), [
    ("vegetation", "vegetation"), ("Buildings", "building"), ("the water", "water"), ("all roads", "road"),
    ("  all the bodies of water. ", "water"), ("land", "land"), ("the buildings", "building"),
])
def test_bare_class_names_become_the_class_question(text, cls):
    assert as_class_question(Prompt(text=text), DUBAI).text == _question(cls)


@pytest.mark.parametrize("prompt", [
    Prompt(text="the building"),  # one building: a referring expression
    Prompt(text="the body of water"),
    Prompt(text="the largest building"),
    Prompt(text="buildings", task="referring"),  # an explicit task: the benchmark and its category-only baseline
    Prompt(text="buildings", box=(1.0, 1.0, 9.0, 9.0)),
    Prompt(text="trees"),
])
def test_anything_else_is_asked_as_written(prompt):
    assert as_class_question(prompt, DUBAI) == prompt


def test_a_class_without_a_question_is_asked_as_written():
    assert as_class_question(Prompt(text="helipads"), ("helipad",)).text == "helipads"


@pytest.fixture(scope="module")
def shipped():
    if not default_checkpoint_path().is_file():
        pytest.skip("the default unified checkpoint is not installed in this build")
    return UnifiedSegmenter(device="cpu"), UnifiedSegmenter(device="cpu", class_question=False)


def test_vegetation_is_found_when_asked_as_the_class_question(dubai_dir, shipped, tmp_path):
    """tile_6/image_part_003 (validation region): the bare name marks little of its vegetation, the question most."""
    from PIL import Image

    from geoseg.data.sources.base import UNLABELED
    from geoseg.data.sources.dubai import CLASSES, PALETTE, palette_to_classes

    region = dubai_dir / "tile_6"
    rgb = np.array(Image.open(region / "images" / "image_part_003.jpg").convert("RGB"))
    label, _ = palette_to_classes(np.array(Image.open(region / "masks" / "image_part_003.png").convert("RGB")),
                                  PALETTE, unknown="unlabeled")
    target, known = label == CLASSES.index("vegetation"), label != UNLABELED
    ious = {}
    for name, seg in zip(("question", "typed"), shipped):
        seg.set_image(rgb)
        pred = seg.predict(Prompt(text="vegetation"))
        m = pred.mask & known
        ious[name] = (m & target).sum() / (m | target).sum()
        assert pred.info["instruction"] == (_question("vegetation") if name == "question" else "vegetation")
    assert ious["question"] > 0.5 and ious["question"] > ious["typed"] + 0.3, ious


def test_the_cli_says_what_it_asked_and_literal_text_turns_it_off(dubai_dir, shipped, tmp_path):
    from click.testing import CliRunner

    image = dubai_dir / "tile_6" / "images" / "image_part_003.jpg"
    runs = {}
    for flag in ((), ("--literal-text",)):
        out = tmp_path / f"m{len(flag)}.tif"
        res = CliRunner().invoke(cli, ["segment", str(image), "--text", "vegetation", "-o", str(out), "--device",
                                       "cpu", *flag])
        assert res.exit_code == 0, res.output
        with rasterio.open(out) as ds:
            runs[flag] = res.output, json.loads(ds.tags()["provenance_json"]), ds.read(1) == 1
    output, prov, mask = runs[()]
    assert f"note: read 'vegetation' as this model's question for the whole class, '{_question('vegetation')}'" \
        in output
    assert prov["class_questions"] is True
    assert prov["instruction_check"]["prompts"][0]["read_as"] == _question("vegetation")
    literal_output, literal_prov, literal_mask = runs[("--literal-text",)]
    assert "read 'vegetation' as" not in literal_output and literal_prov["class_questions"] is False
    assert "read_as" not in literal_prov["instruction_check"]["prompts"][0]
    assert mask.sum() > literal_mask.sum()
