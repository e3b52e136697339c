"""``geoseg serve --backend trainfree``: the --vlm-* options reach the grounding client, and an empty answer says why."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "trainfree"))
from openai_server import OpenAIServer, Target  # noqa: E402

from geoseg.cli import main  # noqa: E402
from geoseg.trainfree.segmenter import ENV_KEY, ENV_MODEL, ENV_URL  # noqa: E402


@pytest.fixture()
def dubai_crop(dubai_dir: Path, tmp_path: Path) -> tuple[Path, Target]:
    """A 400 x 300 crop of a real Dubai image as a PNG file, and the box the loopback model answers for it."""
    rgb = np.asarray(Image.open(dubai_dir / "tile_1" / "images" / "image_part_009.jpg").convert("RGB"))
    crop = np.ascontiguousarray(rgb[:300, :400])
    path = tmp_path / "crop.png"
    Image.fromarray(crop).save(path)
    return path, Target(crop, (120.0, 90.0, 260.0, 200.0), "the building in the middle", "building")


def _serve_and_ask(args: list[str], image: Path, text: str, monkeypatch) -> dict:
    """Run ``geoseg serve ARGS``; instead of listening, upload ``image`` and predict ``text``; the JSON answer."""
    import uvicorn

    answers: dict = {}

    def run(app, **_kw) -> None:
        with TestClient(app) as c, open(image, "rb") as fh:
            iid = c.post("/api/images", files={"file": (image.name, fh, "image/png")}).json()["image_id"]
            r = c.post(f"/api/images/{iid}/predict", json={"text": text, "include": []})
            assert r.status_code == 200, r.text
            answers.update(r.json())

    monkeypatch.setattr(uvicorn, "run", run)
    for var in (ENV_URL, ENV_MODEL, ENV_KEY, "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    main(["-q", "serve", "--backend", "trainfree", *args])
    return answers


def test_vlm_options_reach_the_backend_and_a_wrong_family_is_named(dubai_crop, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_HOME", str(tmp_path / "home"))  # no stored calibration profile
    path, target = dubai_crop
    with OpenAIServer([target], api_key="sk-test") as srv:
        args = ["--vlm-url", srv.url, "--vlm-model", "qwen3-vl:8b", "--vlm-key", "sk-test"]
        out = _serve_and_ask(args, path, target.instruction, monkeypatch)
        assert [r["model"] for r in srv.state.requests] == ["qwen3-vl:8b"]  # old: "no such option: --vlm-url"
        assert out["area_px"] > 0 and out["provenance"]["vlm_model"] == "qwen3-vl:8b"
        assert "sk-test" not in str(out)

        srv.state.answer_frame = "pixels"  # a general chat model answering in pixels
        out = _serve_and_ask(["--vlm-url", srv.url, "--vlm-model", "gpt-4o-mini", "--vlm-key", "sk-test"], path,
                             target.instruction, monkeypatch)
    assert out["area_px"] == 0 and "--vlm-family qwen2.5-vl" in out["hint"] and "pixels of the" in out["hint"]
