"""The shipped text seed: point/box prompts answer without loading the text encoder, with identical results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.prompts import Prompt
from geoseg.unified.segmenter import UnifiedSegmenter
from geoseg.unified.text_encoder import TextEncoder, default_encoder_path
from geoseg.unified.text_seed import SEED_FILE, encoder_digest, load_seed, seed_texts, write_seed


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((256, 256, 3)) * 60 + 40).astype(np.uint8)
    img[60:140, 80:190] = (200, 190, 170)
    return img


def test_the_shipped_seed_is_the_installed_encoders_output():
    """Fails when the encoder package or the instruction template changes: regenerate the seed."""
    seed = load_seed(default_encoder_path())
    assert set(seed) == set(seed_texts()), ("the shipped seed does not match the installed encoder or the "
                                           "templates: python -m geoseg.unified.text_seed")
    assert SEED_FILE.stat().st_size < 2e6
    live = TextEncoder(seed=False).encode(seed_texts())
    for text, emb in zip(seed_texts(), live):
        torch.testing.assert_close(seed[text], emb, rtol=0, atol=1e-5)


def test_point_and_box_prompts_never_load_the_encoder_and_answer_the_same():
    seg = UnifiedSegmenter(device="cpu", refine=False)
    seg.set_image(_image())
    prompts = [Prompt(box=(70.0, 50.0, 200.0, 150.0)), Prompt(points=((120.0, 100.0),), labels=(1,)),
               Prompt(points=((120.0, 100.0), (20.0, 20.0)), labels=(1, 0))]
    seeded = [seg.predict(p) for p in prompts]
    assert not seg.text.loaded
    live = UnifiedSegmenter(device="cpu", refine=False)
    live.text._seed = {}  # no seed: every instruction through the network
    live.set_image(_image())
    for a, p in zip(seeded, prompts):
        b = live.predict(p)
        assert live.text.loaded
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score, abs=1e-6)
    # a text prompt loads the encoder on demand
    seg.predict(Prompt(text="the building"))
    assert seg.text.loaded


def test_a_seed_made_from_another_encoder_is_ignored(tmp_path):
    """Tampered embeddings under another encoder's digest must never reach the model."""
    path = default_encoder_path()
    fake = tmp_path / "seed.pt"
    write_seed(fake, path)
    data = torch.load(fake, weights_only=True)
    assert data["encoder"] == encoder_digest(path)
    assert load_seed(path, fake).keys() == set(seed_texts())
    data["encoder"] = "0" * 64
    data["texts"] = {t: torch.zeros_like(e) for t, e in data["texts"].items()}
    torch.save(data, fake)
    assert load_seed(path, fake) == {}
    fake.write_bytes(b"not torch")
    assert load_seed(path, fake) == {}


def test_a_bad_encoder_path_still_fails_at_start(tmp_path):
    from geoseg.errors import GeosegError

    with pytest.raises(GeosegError, match="cannot load the text encoder"):
        TextEncoder(str(tmp_path / "nowhere"))


def test_warm_up_loads_the_encoder_before_any_instruction():
    """A server warms its backend at start, so its first text request does not pay the encoder load."""
    seg = UnifiedSegmenter(device="cpu")
    assert not seg.text.loaded
    seg.warm_up()
    assert seg.text.loaded
