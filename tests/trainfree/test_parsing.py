"""Parsing of grounding answers in every family's format, conventions and junk."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.trainfree.conventions import (
    FAMILIES,
    from_original,
    get_family,
    guess_family,
    prepare_image,
    smart_resize,
    to_original,
)
from geoseg.trainfree.parsing import parse_answer


@pytest.mark.parametrize(("text", "coords", "label", "source"), [
    ("<|object_ref_start|>the red roof<|object_ref_end|><|box_start|>(120,230),(560,780)<|box_end|>",
     (120, 230, 560, 780), "the red roof", "qwen2-tokens"),
    ("<|box_start|>( 560 , 780 ),( 120 , 230 )<|box_end|>", (120, 230, 560, 780), None, "qwen2-tokens"),
    ("```json\n[\n\t{\"bbox_2d\": [14, 27, 310, 402], \"label\": \"pool\"}\n]\n```", (14, 27, 310, 402), "pool", "json"),
    ("Here it is: {\"bbox\": [0.1, 0.25, 0.5, 0.75], \"prompt\": \"ship\"} hope it helps", (0.1, 0.25, 0.5, 0.75),
     "ship", "json"),
    ("<ref>the pier</ref><box>[[101, 202, 303, 404]]</box>", (101, 202, 303, 404), "the pier", "internvl"),
    ("Sure, it is {<12><34><56><78>}.", (12, 34, 56, 78), None, "geopix"),
    ("The target is at [12.5, 30, 400, 501].", (12.5, 30, 400, 501), None, "json"),
    ("building(120,230),(560,780)", (120, 230, 560, 780), None, "pair"),
    ("<box>(120, 230), (560, 780)</box>", (120, 230, 560, 780), None, "pair"),
    ("{'bbox_2d': [1, 2, 3, 4], 'label': 'car',}", (1, 2, 3, 4), "car", "json"),
    ("<think>maybe [0, 0, 5, 5]?</think>{\"bbox_2d\": [10, 20, 30, 40]}", (10, 20, 30, 40), None, "json"),
    ("{\"bbox_2d\": {\"xmin\": 5, \"ymin\": 6, \"xmax\": 7, \"ymax\": 8}}", (5, 6, 7, 8), None, "json"),
    ("[{\"bbox_2d\": [[3, 4, 9, 12]], \"label\": \"tank\"}]", (3, 4, 9, 12), "tank", "json"),
    ("box: [1e2, 2E1, 3.5e2, 4e2]", (100, 20, 350, 400), None, "json"),
])
def test_formats(text, coords, label, source):
    ans = parse_answer(text)
    assert ans.boxes, text
    assert ans.boxes[0].coords == pytest.approx(coords)
    assert ans.label == label
    assert ans.boxes[0].source == source


def test_several_boxes_keep_order_and_points_are_read():
    ans = parse_answer("<ref>tanks</ref><box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>")
    assert [b.coords for b in ans.boxes] == [(1, 2, 3, 4), (5, 6, 7, 8)]
    pts = parse_answer('[{"point_2d": [120, 45], "label": "car"}, {"point_2d": [30, 60], "label": "car"}]')
    assert [p.xy for p in pts.points] == [(120, 45), (30, 60)] and not pts.boxes and pts.label == "car"
    both = parse_answer('{"bbox": [1, 2, 3, 4], "points": [[2, 3], [2.5, 3.5]]}')
    assert both.boxes[0].coords == (1, 2, 3, 4) and [p.xy for p in both.points] == [(2, 3), (2.5, 3.5)]


@pytest.mark.parametrize("junk", [
    "", "   ", "I cannot find it in the image.", "{}", "[]", "[1, 2, 3]", "[a, b, c, d]", '{"bbox": "none"}',
    '{"bbox": [NaN, 1, 2, 3]}', "```json\n{\"bbox_2d\": [1, 2,", "1000 1000 1000 1000", "{<1><2><3>}",
    '{"bbox": [true, false, 1, 2]}', "<|box_start|>(1,2)<|box_end|>", "[[[[[[[[", "}{][", "[" * 100000,
    "{'a': [" * 5000, "<think>" + "[1, 2, 3, 4]",
])
def test_junk_gives_nothing(junk):
    assert parse_answer(junk).empty


def test_guess_family_from_served_names():
    assert guess_family("Qwen/Qwen2.5-VL-7B-Instruct") == "qwen2.5-vl"
    assert guess_family("qwen2.5vl:7b") == "qwen2.5-vl"
    assert guess_family("Qwen/Qwen2-VL-2B-Instruct") == "qwen2-vl"
    assert guess_family("qwen3-vl-8b-instruct-q4_k_m.gguf") == "qwen3-vl"
    assert guess_family("Qwen/Qwen3-VL-30B-A3B-Instruct") == "qwen3-vl"
    assert guess_family("OpenGVLab/InternVL3-8B") == "internvl"
    assert guess_family("Norman-ou/GeoPix-ft-sior_rsicap") == "geopix"
    assert guess_family("models/gemini-2.5-flash") == "gemini"
    assert guess_family("gpt-4o-mini") == "generic" and guess_family(None) == "generic"
    with pytest.raises(GeosegError, match="unknown model family"):
        get_family("llava-next")


def test_smart_resize_rule():
    # hand-computed: 2061x1817 = 3.74 MP > 1003520 -> beta = sqrt(3744837/1003520) = 1.9318
    assert smart_resize(2061, 1817) == (1064, 924)
    assert smart_resize(1064, 924) == (1064, 924)  # idempotent: the server keeps the client's size
    # 30x40 rounds to 28x28 < 3136 px -> beta = sqrt(3136 / 1200) = 1.617 -> ceil(1.73)*28, ceil(2.31)*28
    assert smart_resize(30, 40) == (56, 84)
    assert smart_resize(500, 700) == (504, 700)
    with pytest.raises(GeosegError, match="elongated"):
        smart_resize(1, 300)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_conversion_round_trip(family):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (301, 517, 3), dtype=np.uint8)
    fam = FAMILIES[family]
    sent, frame = prepare_image(img, fam)
    assert sent.shape[:2] == frame.sent_size[::-1]
    pts = np.array([[10.0, 20.0], [516.0, 300.0], [250.5, 100.25]])
    back = to_original(from_original(pts, fam.convention, frame), fam.convention, frame)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_pad_square_frame_puts_the_image_in_the_middle():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:] = 200
    sent, frame = prepare_image(img, FAMILIES["geopix"])
    assert sent.shape == (300, 300, 3) and frame.offset == (0, 100)
    assert (sent[:100] == FAMILIES["geopix"].resize.fill).all() and (sent[100:200] == 200).all()
    # the centre of the 0-100 grid is the centre of the original image
    np.testing.assert_allclose(to_original([[50, 50]], "grid100", frame), [[150, 50]])


def test_prepare_image_rejects_non_rgb():
    with pytest.raises(GeosegError, match="uint8 RGB"):
        prepare_image(np.zeros((10, 10), np.uint8), FAMILIES["generic"])


def test_smart_resize_matches_the_reference_implementation():
    """geoseg's rule agrees with transformers' Qwen2-VL processor on many sizes and budgets."""
    ref = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl").smart_resize
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(20, 5000, (300, 2))] + [(2061, 1817), (509, 544), (28, 28)]
    for h, w in sizes:
        for factor, lo, hi in ((28, 56 * 56, 28 * 28 * 1280), (28, 3136, 12845056), (32, 256 * 256, 32 * 32 * 1024)):
            if max(h, w) / min(h, w) <= 200:
                assert smart_resize(h, w, factor, lo, hi) == tuple(ref(h, w, factor, lo, hi)), (h, w, factor)
