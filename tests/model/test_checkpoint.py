"""Checkpoint round trip and the clear errors for files of another architecture or version."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import GeosegError, InputError
from geoseg.unified.build import build_model
from geoseg.unified.checkpoint import FORMAT_VERSION, load_model, read_checkpoint, save_checkpoint
from geoseg.unified.config import ModelConfig

CFG = ModelConfig(channels=(8, 16, 24, 32), depths=(1, 1, 1, 1), fpn_dim=16, query_dim=32, tile_size=128,
                  input_size=64)


def _inputs():
    torch.manual_seed(1)
    return (torch.randn(1, 3, 64, 64), torch.randn(1, 5, 384), torch.ones(1, 5, dtype=torch.bool), torch.tensor([1]),
            torch.rand(1, 3, 2), torch.tensor([[1, -1, -1]]), torch.tensor([[0.1, 0.1, 0.4, 0.5]]), torch.tensor([True]))


def test_round_trip_keeps_outputs_config_norm_and_version(tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    norm = {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    path = save_checkpoint(tmp_path / "m.pt", model, CFG, norm, meta={"experiment": "t"})
    loaded, cfg, payload = load_model(path)
    assert cfg == CFG and payload["norm"] == norm and payload["geoseg_version"]
    assert payload["model_config"]["arch"] == "unigeoseg_tiny"
    with torch.no_grad():
        a, b = model(*_inputs()), loaded(*_inputs())
    assert torch.allclose(a["logits"], b["logits"], atol=1e-6)
    half = save_checkpoint(tmp_path / "h.pt", model, CFG, norm, half=True)
    assert half.stat().st_size < path.stat().st_size * 0.7
    with torch.no_grad():
        assert torch.allclose(load_model(half)[0](*_inputs())["logits"], a["logits"], atol=5e-2)
    assert not list(tmp_path.glob("*.tmp"))


def test_weights_of_another_architecture_fail_clearly(tmp_path):
    model = build_model(CFG)
    path = save_checkpoint(tmp_path / "m.pt", model, CFG)
    payload = torch.load(path, weights_only=False)
    payload["model_config"]["channels"] = [8, 16, 24, 48]  # config no longer matches the weights
    torch.save(payload, path)
    with pytest.raises(GeosegError, match="do not fit architecture"):
        load_model(path)


def test_unknown_architecture_fails_clearly(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(CFG), CFG)
    payload = torch.load(path, weights_only=False)
    payload["model_config"]["arch"] = "unigeoseg_giant"
    torch.save(payload, path)
    with pytest.raises(GeosegError, match="unigeoseg_giant"):
        load_model(path)


def test_other_format_or_geoseg_version_fails_clearly(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(CFG), CFG)
    payload = torch.load(path, weights_only=False)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "f.pt")
    with pytest.raises(GeosegError, match="format version"):
        read_checkpoint(tmp_path / "f.pt")
    payload["format_version"] = FORMAT_VERSION
    payload["geoseg_version"] = "9.0.0"
    torch.save(payload, tmp_path / "v.pt")
    with pytest.raises(GeosegError, match="geoseg 9.0.0"):
        read_checkpoint(tmp_path / "v.pt")


def test_not_a_checkpoint_and_missing_file(tmp_path):
    torch.save({"model": {}}, tmp_path / "sam.pth")
    with pytest.raises(InputError, match="not a geoseg unified-model checkpoint"):
        read_checkpoint(tmp_path / "sam.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_truncated_or_foreign_files_get_one_line_errors(tmp_path):
    """torch's own messages for these run to a paragraph or are a bare number: the error stays one line."""
    from geoseg.unified.text_cache import load_text_cache

    torch.save({"a": torch.zeros(3)}, tmp_path / "good.pt")
    whole = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.pt").write_text("hello world")
    for name in ("half.pt", "text.pt"):
        for load, what in ((read_checkpoint, "cannot read checkpoint"), (load_text_cache, "cannot read text cache")):
            with pytest.raises(InputError, match=what) as err:
                load(tmp_path / name)
            message = str(err.value)
            assert "\n" not in message and len(message) < 400, message
    with pytest.raises(InputError, match=r"\(KeyError: '?\d+'?\)"):
        load_text_cache(tmp_path / "text.pt")
