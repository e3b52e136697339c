"""The UnifiedSegmenter honours the Segmenter contract on a real Dubai image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from geoseg.errors import GeosegError, PromptError
from geoseg.prompts import Prompt
from geoseg.segmenters import build_segmenter
from geoseg.unified.object_region import keep_object_region
from geoseg.unified.refine import refine_mask
from geoseg.unified.segmenter import UnifiedSegmenter


@pytest.fixture(scope="module")
def dubai_image(dubai_dir) -> np.ndarray:
    img = cv2.imread(str(dubai_dir / "tile_2" / "images" / "image_part_001.jpg"), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img[:, :, ::-1])


@pytest.fixture(scope="module")
def segmenter(trained_run, dubai_image) -> UnifiedSegmenter:
    seg = build_segmenter(str(trained_run["out"] / "best.pt"), device="cpu")
    seg.set_image(dubai_image)
    return seg


def test_registry_builds_the_unified_backend(segmenter):
    assert isinstance(segmenter, UnifiedSegmenter)
    assert segmenter.name == "unified" and segmenter.capabilities == {"point", "box", "text"}
    prov = segmenter.provenance()
    assert prov["model"] == "unified" and prov["checkpoint"] == "best.pt" and prov["geoseg_version"]


@pytest.mark.parametrize("prompt, task", [
    (Prompt(text="the largest building"), "referring"),
    (Prompt(text="Where could a boat sail?"), "reasoning"),
    (Prompt(points=((200.0, 300.0), (50.0, 60.0)), labels=(1, 0)), "interactive"),
    (Prompt(box=(100.0, 120.0, 300.0, 400.0)), "interactive"),
])
def test_predict_returns_a_full_size_mask(segmenter, dubai_image, prompt, task):
    pred = segmenter.predict(prompt)
    h, w = dubai_image.shape[:2]
    assert pred.mask.shape == (h, w) and pred.mask.dtype == bool
    assert pred.prob.shape == (h, w) and pred.prob.dtype == np.float32
    assert 0.0 <= pred.score <= 1.0 and pred.info["task"] == task
    decided = (pred.prob >= 0.5) & (pred.score >= 0.5)
    if task == "interactive":  # re-cut along image edges, seeded by the same probabilities
        assert pred.info["refined"] == "grabcut"
        expected = refine_mask(dubai_image, pred.prob, decided, 0.5, prompt)
        expected = keep_object_region(expected, prompt, segmenter.class_map())[0]  # then kept to one class region
        assert np.array_equal(pred.mask, expected)
    else:
        assert np.array_equal(pred.mask, decided) or not pred.mask.any()


def test_refinement_can_be_turned_off_and_is_recorded(trained_run, dubai_image):
    box = Prompt(box=(100.0, 120.0, 300.0, 400.0))
    plain = UnifiedSegmenter(trained_run["out"] / "best.pt", device="cpu", refine=False, object_region=False,
                             presence_threshold=1e-6, mask_threshold=0.3)
    plain.set_image(dubai_image)
    pred = plain.predict(box)
    assert "refined" not in pred.info and plain.provenance()["interactive_refine"] is None
    assert np.array_equal(pred.mask, pred.prob >= 0.3) and pred.mask.any()
    on = UnifiedSegmenter(trained_run["out"] / "best.pt", device="cpu", object_region=False, presence_threshold=1e-6,
                          mask_threshold=0.3)
    on.set_image(dubai_image)
    cut = on.predict(box).mask
    assert on.provenance()["interactive_refine"]["method"] == "grabcut"
    assert np.array_equal(cut, refine_mask(dubai_image, pred.prob, pred.mask, 0.3, box))
    assert cut.any()  # re-cut inside the box, or the network's answer where the cut came back empty


def test_set_image_caches_features_and_predict_is_cheap(segmenter, dubai_image):
    calls = []
    hook = segmenter.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        segmenter.predict(Prompt(text="the leftmost body of water"))
        segmenter.predict(Prompt(box=(10.0, 10.0, 200.0, 200.0)))
        assert calls == []
        segmenter.set_image(dubai_image)
        assert calls == [1]
    finally:
        hook.remove()
    assert "the leftmost body of water" in segmenter.text._cache


def test_geometry_changes_the_answer(segmenter):
    a = segmenter.predict(Prompt(box=(0.0, 0.0, 150.0, 150.0))).prob
    b = segmenter.predict(Prompt(box=(300.0, 350.0, 500.0, 540.0))).prob
    assert not np.allclose(a, b)


def test_similarity_map_for_the_training_free_route(segmenter, dubai_image):
    sim = segmenter.similarity_map("the water")
    assert sim.shape == dubai_image.shape[:2] and sim.dtype == np.float32
    assert 0.0 <= sim.min() and sim.max() <= 1.0
    np.testing.assert_allclose(sim, segmenter.predict(Prompt(text="the water", task="referring")).prob, atol=1e-6)


def test_bad_instructions_give_clear_errors(segmenter):
    with pytest.raises(PromptError, match="empty"):
        Prompt(text="   ")
    with pytest.raises(PromptError, match="at most"):
        segmenter.predict(Prompt(text="the large building next to the road " * 40))


def test_text_that_finds_nothing_gets_advice_naming_the_models_classes(segmenter):
    classes = ", ".join(segmenter.cfg.classes)
    unknown = segmenter.empty_answer_hint(Prompt(text="the trees"))
    assert classes in unknown and "name one of those" in unknown and "trainfree backend" in unknown
    known = segmenter.empty_answer_hint(Prompt(text="all the buildings"))  # a class it knows, plural
    assert classes in known and "training imagery" in known and "name one of those" not in known
    assert segmenter.empty_answer_hint(Prompt(box=(1.0, 1.0, 9.0, 9.0))) is None


def test_other_sizes_round_to_the_working_scale(segmenter):
    small = np.zeros((70, 45, 3), np.uint8)
    segmenter.set_image(small)
    assert segmenter.predict(Prompt(text="the road")).mask.shape == (70, 45)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(GeosegError, match="does not exist"):
        build_segmenter("unified", checkpoint=str(tmp_path / "none.pt"))


def test_a_small_box_is_answered_from_a_zoomed_crop(trained_run, dubai_image):
    from geoseg.unified.zoom import zoom_window

    kw = dict(device="cpu", refine=False, object_region=False, presence_threshold=1e-6, mask_threshold=0.3)
    zoomed = UnifiedSegmenter(trained_run["out"] / "best.pt", **kw)
    plain = UnifiedSegmenter(trained_run["out"] / "best.pt", zoom=False, **kw)
    for seg in (zoomed, plain):
        seg.set_image(dubai_image)
    h, w = dubai_image.shape[:2]
    small = Prompt(box=(300.0, 200.0, 318.0, 214.0))
    c0, r0, c1, r1, zoom = zoom_window(small.box, w, h, zoomed.cfg.scale, zoomed.cfg.input_size, zoomed.zoom)
    calls = []
    hook = zoomed.model.backbone.register_forward_hook(lambda *a: calls.append(a[1][0].shape[-2:]))
    try:
        pred = zoomed.predict(small)
        assert len(calls) == 1  # the crop, encoded on its own; the image's features stay cached
        assert zoomed.predict(Prompt(box=(100.0, 120.0, 300.0, 400.0))).info.get("zoom") is None
        assert len(calls) == 1  # a box large enough at the working scale uses the cached features
    finally:
        hook.remove()
    assert pred.info["zoom"] == round(zoom, 2) and zoom > 1
    outside = np.ones((h, w), bool)
    outside[r0:r1, c0:c1] = False
    assert pred.prob.shape == (h, w) and not pred.prob[outside].any() and pred.prob[~outside].any()
    assert np.array_equal(pred.mask, pred.prob >= 0.3)
    # the same box without zoom is answered at the working scale, from the whole image's features
    flat = plain.predict(small)
    assert "zoom" not in flat.info and flat.prob[outside].any()
    assert zoomed.provenance()["small_box_zoom"]["method"] == "zoomed-crop"
    assert plain.provenance()["small_box_zoom"] is None
