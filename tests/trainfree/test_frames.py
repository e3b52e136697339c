"""A model that answers in another coordinate frame than its family's: named, with the family that reads it.

The loopback server's ``answer_frame = "pixels"`` plays a general chat model that writes its box
in pixels of the image it received whatever it was asked; the targets are real Dubai buildings.
"""

from __future__ import annotations

import numpy as np
import pytest
from box_backend import BoxAnswer
from openai_server import OpenAIServer, Target

from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.trainfree.calibrate import calibrate
from geoseg.trainfree.client import FrameMismatchError, GroundingClient
from geoseg.trainfree.conventions import FAMILIES, Frame, frame_mismatch
from geoseg.trainfree.segmenter import TrainFreeSegmenter

GENERIC = "gpt-4o-mini"  # the loopback server's generic model


@pytest.fixture()
def pixel_server(openai_server: OpenAIServer) -> OpenAIServer:
    openai_server.state.answer_frame = "pixels"
    return openai_server


def test_generic_model_answering_pixels_is_named_and_the_named_family_reads_it(pixel_server, dubai_targets_005):
    target = dubai_targets_005[0]
    with GroundingClient(pixel_server.url, GENERIC, family="generic") as client:
        with pytest.raises(FrameMismatchError) as exc:
            client.ground(target.image, target.instruction)
    msg = str(exc.value)
    assert "\n" not in msg and "not in fractions of the image" in msg and "family generic" in msg
    sent = pixel_server.state.requests[-1]["size"]
    assert f"pixels of the {sent[0]}x{sent[1]} image sent" in msg  # the cause, with the size the model saw
    assert "--vlm-family qwen2.5-vl" in exc.value.fix  # ... and the fix
    # following the fix reads the same model's pixel answers right
    with GroundingClient(pixel_server.url, GENERIC, family="qwen2.5-vl") as client:
        g = client.ground(target.image, target.instruction)
    scale = max(target.image.shape[:2]) / max(pixel_server.state.requests[-1]["size"])
    assert np.allclose(g.box, target.box, atol=2.0 + scale), (g.box, target.box)


def test_a_pixel_box_at_the_image_corner_is_not_read_as_the_whole_image(dubai_targets_005):
    """A box starting at (0, 0) in pixels overlaps the image when read as fractions: it was clamped to all of it."""
    t = dubai_targets_005[0]
    x0, y0 = int(t.box[0]), int(t.box[1])
    crop = np.ascontiguousarray(t.image[y0:, x0:])  # the building now touches the top-left corner
    corner = Target(crop, (t.box[0] - x0, t.box[1] - y0, t.box[2] - x0, t.box[3] - y0), t.instruction)
    with OpenAIServer([corner]) as srv:
        srv.state.answer_frame = "pixels"
        with GroundingClient(srv.url, GENERIC, family="generic") as client:
            with pytest.raises(FrameMismatchError, match=r"the model's box \[0, 0, \d+, \d+\]"):
                client.ground(crop, corner.instruction)
        seg = TrainFreeSegmenter(vlm_url=srv.url, vlm_model=GENERIC, vlm_family="generic",
                                 mask_backend=BoxAnswer(), routes="B", refinement="none")
        seg.set_image(crop)
        pred = seg.predict(Prompt(text=corner.instruction))
    assert not pred.mask.any() and pred.info["grounding"] == "no box"  # not a mask of the whole image
    hint = seg.empty_answer_hint(Prompt(text=corner.instruction))
    assert GENERIC in hint and "pixels of the" in hint and "--vlm-family qwen2.5-vl" in hint
    assert "rephrase" in seg.empty_answer_hint(Prompt(text="another text"))  # other prompts keep the general note


def test_calibration_with_the_wrong_family_names_it(pixel_server, dubai_targets_005):
    samples = []
    for i, t in enumerate(dubai_targets_005[:3]):
        mask = np.zeros(t.image.shape[:2], bool)
        x0, y0, x1, y1 = (int(v) for v in t.box)
        mask[y0:y1, x0:x1] = True
        samples.append(_Sample(f"s{i}", t.image, mask, t.instruction))
    with GroundingClient(pixel_server.url, GENERIC, family="generic") as client:
        with pytest.raises(GeosegError) as exc:
            calibrate(client, samples, key="k")
    msg = str(exc.value)
    assert "only 0 of 3 samples" in msg and "3 answer(s) in another coordinate frame" in msg and "\n" not in msg
    assert "--vlm-family qwen2.5-vl" in exc.value.fix
    with GroundingClient(pixel_server.url, GENERIC, family="qwen2.5-vl") as client:
        assert calibrate(client, samples, key="k").n == 3


class _Sample:
    task = "referring"

    def __init__(self, sample_id: str, image: np.ndarray, mask: np.ndarray, instruction: str) -> None:
        self.sample_id, self.image_key, self.instruction = sample_id, sample_id, instruction
        self._image, self._mask = image, mask

    def load_image(self) -> np.ndarray:
        return self._image

    def load_mask(self) -> np.ndarray:
        return self._mask


@pytest.mark.parametrize("family, sent, coords, fits, fix", [
    # a generic (fractions) model writing pixels of a 1024 px image: past 1000 (and its slack), so pixels only
    ("generic", (1024, 768), (120, 80, 1060, 700), "pixels of the 1024x768 image sent", "qwen2.5-vl"),
    # a 0-1000 grid model writing pixels of a 1344 px image
    ("internvl", (1344, 900), (300, 100, 1300, 800), "pixels of the 1344x900 image sent", "qwen2.5-vl"),
    # a pixel model (qwen2.5-vl) on a small image writing a 0-1000 grid
    ("qwen2.5-vl", (448, 336), (120, 80, 900, 950), "a 0-1000 grid", "qwen3-vl"),
    # numbers both frames hold: both are named, nothing is guessed
    ("generic", (1024, 768), (120, 80, 300, 250), "pixels of the 1024x768 image sent or a 0-1000 grid",
     "qwen2.5-vl if the model answers in pixels, or qwen3-vl"),
])
def test_frame_mismatch_names_the_frames_the_numbers_fit(family, sent, coords, fits, fix):
    frame = Frame(sent, sent, (1.0, 1.0))
    fam = FAMILIES[family]
    problem, advice = frame_mismatch(coords, fam.convention, fam, frame)
    assert problem.endswith(f"its numbers fit {fits}") and fix in advice


def test_in_frame_and_sloppy_boxes():
    frame = Frame((1000, 800), (1000, 800), (1.0, 1.0))
    generic = FAMILIES["generic"]
    assert frame_mismatch((0.1, 0.2, 1.0, 1.02), "unit", generic, frame) is None  # the edge, give or take
    # a sloppy fraction: it fits pixels, but as a 1-pixel box that reading is no explanation
    problem, advice = frame_mismatch((0.1, 0.2, 1.3, 0.5), "unit", generic, frame)
    assert "nor in any frame geoseg knows" in problem and "--vlm-family" in advice
    assert frame_mismatch((-5000, 80, 90000, 250), "unit", generic, frame)[0].endswith("1000x800 image sent")
