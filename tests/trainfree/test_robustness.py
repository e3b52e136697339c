"""Misbehaving endpoints and bad options of the training-free route: one-line errors, sane retries, no leaked key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.trainfree.client import GroundingClient, redact_url, retry_after

IMG = np.zeros((100, 200, 3), np.uint8)
SECRET = "sk-very-secret-123"


def _chat(content: str) -> tuple[int, dict, str]:
    return 200, {}, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


class _Scripted:
    """A loopback HTTP server answering from a script of ``(status, headers, body)``; records arrival times."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict, str]] = []
        self.seen: list[tuple[float, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                owner.seen.append((time.monotonic(), self.headers.get("Authorization")))
                status, headers, body = owner.script.pop(0) if owner.script else _chat("nothing")
                data = body.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture()
def scripted() -> Iterator[_Scripted]:
    srv = _Scripted()
    yield srv
    srv.close()


def test_429_waits_as_long_as_retry_after_asks(scripted):
    scripted.script = [(429, {"Retry-After": "1"}, '{"error": {"message": "rate limited"}}'),
                       _chat('{"bbox": [0.1, 0.1, 0.5, 0.5]}')]
    g = GroundingClient(scripted.url, model="gpt-4o-mini", backoff=0.01).ground(IMG, "the car")
    assert g.box == pytest.approx((20.0, 10.0, 100.0, 50.0))
    (t0, _), (t1, _) = scripted.seen
    assert t1 - t0 >= 0.95  # the old client came back after its own 0.01 s back-off


def test_retry_after_forms_and_cap():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert retry_after("100000") == 60.0 and retry_after("-5") == 0.0 and retry_after("nan") is None
    assert 5.0 <= retry_after(formatdate(time.time() + 8, usegmt=True)) <= 8.0


def test_key_with_white_space_is_stripped_and_a_bad_key_is_never_printed(scripted):
    scripted.script = [_chat('{"bbox": [0.1, 0.1, 0.5, 0.5]}')]
    g = GroundingClient(scripted.url, model="gpt-4o-mini", api_key=SECRET + "\n", retries=0).ground(IMG, "the car")
    assert g.box is not None and scripted.seen[-1][1] == f"Bearer {SECRET}"  # old: a retried error quoting the key
    with pytest.raises(GeosegError, match="API key holds characters") as exc:
        GroundingClient(scripted.url, model="gpt-4o-mini", api_key="sk-sécret")  # old: UnicodeEncodeError
    assert "sécret" not in str(exc.value)


def test_server_message_echoing_the_key_is_scrubbed(scripted):
    scripted.script = [(400, {}, json.dumps({"error": {"message": f"key {SECRET} has no access\nto this model"}}))]
    with pytest.raises(GeosegError, match=r"HTTP 400: key \*\*\* has no access to this model") as exc:
        GroundingClient(scripted.url, model="gpt-4o-mini", api_key=SECRET, retries=0).ground(IMG, "the car")
    assert SECRET not in str(exc.value) and "\n" not in str(exc.value)


def test_password_in_the_url_stays_out_of_errors_and_provenance(scripted, monkeypatch, tmp_path):
    from test_route_e2e import BoxMask

    from geoseg.trainfree.segmenter import TrainFreeSegmenter

    monkeypatch.setenv("GEOSEG_HOME", str(tmp_path))
    assert redact_url("https://me:pw@host:8/v1") == "https://me:***@host:8/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    url = scripted.url.replace("http://", f"http://me:{SECRET}@")
    scripted.script = [(503, {}, "{}")]
    client = GroundingClient(url, model="gpt-4o-mini", retries=0)
    with pytest.raises(GeosegError) as exc:
        client.ground(IMG, "the car")
    assert SECRET not in str(exc.value) and "me:***@127.0.0.1" in str(exc.value)
    seg = TrainFreeSegmenter(grounder=client, mask_backend=BoxMask(), routes="B", refinement="fixed")
    assert SECRET not in json.dumps(seg.provenance()) and seg.provenance()["vlm_url"].startswith("http://me:***@")


@pytest.mark.parametrize("kw, match", [({"timeout": 0}, "time-out 0 must be a positive"),
                                       ({"timeout": -1}, "time-out -1 must be a positive"),
                                       ({"max_pixels": 0}, "--vlm-max-pixels 0"),
                                       ({"max_pixels": -5}, "--vlm-max-pixels -5")])
def test_bad_timeout_or_budget_is_a_one_line_error(kw, match):
    # old: ValueError('Timeout value out of range'), a misleading ConnectError after 3 attempts,
    # max_pixels 0 silently ignored, or ValueError('math domain error')
    with pytest.raises(GeosegError, match=match):
        GroundingClient("http://127.0.0.1:9/v1", model="qwen3-vl:8b", **kw).ground(IMG, "the car")


def test_backend_options_zero_timeout_and_bad_env_are_errors(monkeypatch):
    from test_route_e2e import BoxMask

    from geoseg.trainfree.segmenter import ENV_MAX_PIXELS, ENV_TIMEOUT, TrainFreeSegmenter

    monkeypatch.setenv(ENV_TIMEOUT, "")
    monkeypatch.setenv(ENV_MAX_PIXELS, "")
    with pytest.raises(GeosegError, match="time-out 0"):  # old: silently 60 s
        TrainFreeSegmenter(vlm_url="http://127.0.0.1:9/v1", vlm_timeout=0, mask_backend=BoxMask())
    monkeypatch.setenv(ENV_TIMEOUT, "sixty")
    with pytest.raises(GeosegError, match="GEOSEG_VLM_TIMEOUT='sixty' is not a number"):  # old: ValueError
        TrainFreeSegmenter(vlm_url="http://127.0.0.1:9/v1", mask_backend=BoxMask())
    monkeypatch.setenv(ENV_TIMEOUT, "")
    monkeypatch.setenv(ENV_MAX_PIXELS, "1M")
    with pytest.raises(GeosegError, match="GEOSEG_VLM_MAX_PIXELS='1M' is not an integer"):
        TrainFreeSegmenter(vlm_url="http://127.0.0.1:9/v1", mask_backend=BoxMask())


def test_unreadable_or_missing_mask_checkpoint_names_the_route_s_choices(tmp_path):
    from geoseg.trainfree.segmenter import build_mask_backend

    with pytest.raises(GeosegError, match="mask-backend checkpoint .* does not exist.*SAM.*SAM 2"):
        build_mask_backend(None, tmp_path / "sam_vit_h_4b8939.pth", "cpu")
    truncated = tmp_path / "sam_vit_b_01ec64.pth"
    truncated.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a download cut short
    with pytest.raises(GeosegError, match="neither SAM, SAM 2 nor geoseg unified.*re-download") as exc:
        build_mask_backend(None, truncated, "cpu")
    assert "written by geoseg train" not in str(exc.value)  # old: the unified model's fix, wrong for SAM users


def test_calibrate_rejects_a_non_positive_limit_before_any_request(scripted, tmp_path):
    from click.testing import CliRunner

    from geoseg.cli import cli

    r = CliRunner().invoke(cli, ["trainfree", "calibrate", "--data", str(tmp_path), "--vlm-url", scripted.url,
                                 "--vlm-model", "gpt-4o-mini", "--limit", "0"])
    assert r.exit_code == 2 and "--limit" in r.output  # old: accepted, and -1 silently dropped the last sample
    assert scripted.seen == []
