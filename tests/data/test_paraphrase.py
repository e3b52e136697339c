"""The optional paraphraser against a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.data.dataset import read_rows
from geoseg.data.engine import BuildConfig, build
from geoseg.errors import InputError

LAND, WATER, BUILDING = (132, 41, 246), (226, 169, 41), (60, 16, 152)


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][-1]["content"].split("Instruction: ", 1)[1]
        if "fail" in self.server.mode and len(_Handler.seen) % 3 == 0:  # type: ignore[attr-defined]
            self.send_response(500)
            self.end_headers()
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": f"In other words: {text.lower()}"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.mode = ""  # type: ignore[attr-defined]
    _Handler.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _region(root: Path) -> None:
    """A 128 px palette-mask region: three ponds and two buildings on land."""
    m = np.empty((128, 128, 3), np.uint8)
    m[:] = LAND
    for y, x, s in ((10, 10, 20), (70, 20, 30), (30, 80, 14)):
        m[y:y + s, x:x + s] = WATER
    m[90:115, 80:120] = BUILDING
    m[5:25, 50:70] = BUILDING
    rgb = np.where(m == WATER, 40, 180).astype(np.uint8)
    for sub in ("images", "masks"):
        (root / "tile_1" / sub).mkdir(parents=True)
    Image.fromarray(rgb).save(root / "tile_1" / "images" / "image_part_001.jpg", quality=95)
    Image.fromarray(m).save(root / "tile_1" / "masks" / "image_part_001.png")


def _cfg(root: Path, url: str | None) -> BuildConfig:
    d = {"tile_size": 128, "stride": 128, "sources": [{"type": "dubai", "path": str(root)}]}
    if url:
        d["paraphrase"] = {"url": url, "model": "tiny-test", "api_key_env": "GEOSEG_TEST_KEY"}
    return BuildConfig.from_dict(d)


def test_paraphraser_rewrites_text_rows_and_keeps_the_original(server: ThreadingHTTPServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_TEST_KEY", "sk-test")
    _region(tmp_path / "d")
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    build(_cfg(tmp_path / "d", None), tmp_path / "a", workers=0, report=False)
    plain = {r["sample_id"]: r for r in read_rows(tmp_path / "a")}
    manifest = build(_cfg(tmp_path / "d", url), tmp_path / "b", workers=0, report=False)
    rows = read_rows(tmp_path / "b")
    assert set(plain) == {r["sample_id"] for r in rows}  # same samples, only the wording differs
    text_rows = [r for r in rows if r["task"] != "interactive"]
    assert len(text_rows) >= 5 and manifest["counts"]["paraphrased"] == len(text_rows)
    assert {r["task"] for r in text_rows} == {"referring", "reasoning"}
    for r in rows:
        orig = plain[r["sample_id"]]
        if r["task"] == "interactive":
            assert r["instruction"] == orig["instruction"]
            continue
        att = json.loads(r["attributes"])
        assert att["original_instruction"] == orig["instruction"]
        assert r["instruction"] == f"In other words: {orig['instruction'].lower()}"
        assert att["paraphrase"]["model"] == "tiny-test"
        assert r["mask"] == orig["mask"] and r["answer"] == orig["answer"]
    req = _Handler.seen[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "tiny-test" and req["body"]["messages"][0]["role"] == "system"
    assert "sk-test" not in (tmp_path / "b" / "manifest.json").read_text()


def test_failed_calls_keep_the_original_and_are_counted(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    _region(tmp_path / "d")
    server.mode = "fail"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    manifest = build(_cfg(tmp_path / "d", url), tmp_path / "b", workers=0, report=False)
    c = manifest["counts"]
    assert c["paraphrase_failed"] > 0 and c["paraphrased"] > 0
    rows = [r for r in read_rows(tmp_path / "b") if r["task"] != "interactive"]
    assert sum("original_instruction" in json.loads(r["attributes"]) for r in rows) == c["paraphrased"]
    assert len(rows) == c["paraphrased"] + c["paraphrase_failed"]


def test_unreachable_endpoint_stops_before_building(tmp_path: Path) -> None:
    _region(tmp_path / "d")
    with pytest.raises(InputError, match="does not answer"):
        build(_cfg(tmp_path / "d", "http://127.0.0.1:9/v1"), tmp_path / "b", workers=0)
    assert not (tmp_path / "b" / "manifest.json").exists()
    with pytest.raises(InputError, match="cannot be paraphrased"):
        BuildConfig.from_dict({"sources": [{"type": "dubai", "path": "x"}],
                               "paraphrase": {"url": "http://x", "tasks": ["interactive"]}})
