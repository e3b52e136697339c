"""The grounding client end to end against the loopback OpenAI-compatible server on a real Dubai image."""

from __future__ import annotations

import time

import numpy as np
import pytest
from openai_server import MODELS, Target

from geoseg.errors import GeosegError
from geoseg.trainfree.client import GroundingClient, NoBoxError

# how far the recovered box may be from the truth, in original pixels: the answer's rounding
# (half a grid step of the sent image) plus one pixel of resampling at the borders
_GRID = {"gemini": 1000, "qwen2-vl": 1000, "qwen3-vl": 1000, "internvl": 1000, "geopix": 100, "qwen2.5-vl": None, "generic": 10000}


def _tolerance(family: str, size: tuple[int, int]) -> float:
    steps = _GRID[family]
    if steps is None:  # Qwen2.5-VL: whole pixels of the ~1 MP resized input, scaled back up
        return 1.0 + max(size) / 1064 / 2
    return 1.0 + max(size) / steps / 2  # geopix's grid spans the padded square = the longest side


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_family_recovers_the_true_box(openai_server, dubai_targets_005, model):
    family = MODELS[model]
    client = GroundingClient(openai_server.url, model=model)
    assert client.family.name == family  # guessed from the served name
    for target in dubai_targets_005:
        g = client.ground(target.image, target.instruction)
        h, w = target.image.shape[:2]
        tol = _tolerance(family, (w, h))
        assert g.family == family and g.raw
        assert g.box is not None and np.abs(np.array(g.box) - np.array(target.box)).max() <= tol, (g, target.box, tol)
        assert g.label == (None if family == "geopix" else target.label)  # GeoPix's markup has no label
    req = openai_server.state.requests[-1]
    # the client resized as the family expects, never sent the full 1817x2061 original
    assert req["size"] != (w, h) and max(req["size"]) <= 1344
    assert req["mime"] == "image/jpeg" and target.instruction in req["prompt"]


def test_qwen2_tokens_stripped_by_the_server_still_parse(openai_server, dubai_targets_005):
    openai_server.state.strip_special_tokens = True
    t = dubai_targets_005[0]
    g = GroundingClient(openai_server.url, model="Qwen/Qwen2-VL-7B-Instruct").ground(t.image, t.instruction)
    assert np.abs(np.array(g.box) - np.array(t.box)).max() <= 3.1
    assert g.raw.startswith("building(")


def test_wrong_family_is_caught_by_the_size_of_the_error(openai_server, dubai_targets_005):
    """Reading Qwen2.5-VL's resized-pixel answer as a 0-1000 grid lands far from the truth: conversion matters."""
    t = dubai_targets_005[0]
    g = GroundingClient(openai_server.url, model="Qwen/Qwen2.5-VL-7B-Instruct", family="qwen3-vl").ground(
        t.image, t.instruction)
    assert np.abs(np.array(g.box) - np.array(t.box)).max() > 50


def test_model_is_taken_from_the_server_and_env(openai_server, dubai_targets_005, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    client = GroundingClient()  # URL from the environment, model = the first listed by /v1/models
    assert client.model == next(iter(MODELS))
    t = dubai_targets_005[1]
    assert client.ground(t.image, t.instruction).box is not None


def test_api_key_is_sent_and_a_wrong_one_is_a_clear_error(openai_server, dubai_targets_005, monkeypatch):
    openai_server.state.api_key = "sk-right"
    t = dubai_targets_005[0]
    g = GroundingClient(openai_server.url, model="qwen3-vl:8b", api_key="sk-right").ground(t.image, t.instruction)
    assert g.box is not None and openai_server.state.requests[-1]["auth"] == "Bearer sk-right"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(GeosegError, match="rejected the API key.*--vlm-key"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)
    assert len(openai_server.state.requests) == 2  # a rejected key is not retried


def test_unreachable_server_is_a_clear_error_after_retries():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GroundingClient(f"http://127.0.0.1:{port}/v1", model="qwen3-vl:8b", retries=1, backoff=0.01)
    with pytest.raises(GeosegError, match=r"did not answer after 2 attempt\(s\): cannot connect"):
        client.ground(np.zeros((64, 64, 3), np.uint8), "the building")


def test_no_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(GeosegError, match="no grounding endpoint.*--vlm-url"):
        GroundingClient(model="x")
    with pytest.raises(GeosegError, match="not an http"):
        GroundingClient("ftp://host/v1", model="x")


def test_server_errors_are_retried_then_succeed(openai_server, dubai_targets_005):
    openai_server.state.fail_statuses = [503, 429]
    t = dubai_targets_005[2]
    g = GroundingClient(openai_server.url, model="qwen3-vl:8b", retries=2, backoff=0.01).ground(t.image, t.instruction)
    assert g.box is not None
    assert [r["status"] for r in openai_server.state.requests] == [503, 429, None]


def test_persistent_server_errors_fail_clearly(openai_server, dubai_targets_005):
    openai_server.state.fail_statuses = [500, 500]
    t = dubai_targets_005[2]
    with pytest.raises(GeosegError, match="HTTP 500: simulated failure"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b", retries=1, backoff=0.01).ground(t.image, t.instruction)


def test_timeout_is_retried_and_reported(openai_server, dubai_targets_005):
    openai_server.state.delay_s = 0.6
    t = dubai_targets_005[0]
    start = time.perf_counter()
    with pytest.raises(GeosegError, match=r"after 2 attempt\(s\): no answer within 0.2 s"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b", timeout=0.2, retries=1, backoff=0.01).ground(
            t.image, t.instruction)
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize("reply", ["I am not sure what you mean.", "", '{"bbox": []}', "[1, 2, 3]"])
def test_nonsense_answer_is_a_no_box_error(openai_server, dubai_targets_005, reply):
    openai_server.state.reply_override = reply
    t = dubai_targets_005[0]
    with pytest.raises(NoBoxError, match="holds no box"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)


def _one_clean_line(exc: GeosegError) -> str:
    """The message as the CLI prints it: the problem, then the fix in one pair of brackets (none nested)."""
    text = str(exc)
    assert "\n" not in text and text == f"{exc.problem} ({exc.fix})"
    assert not set("()") & set(exc.problem + exc.fix)  # the answers quoted in these tests hold no brackets
    return text


def test_no_box_messages_are_one_clean_line(openai_server, dubai_targets_005):
    """The problem, then the fix in brackets, none nested (was "(check that ... (family ...; ...))")."""
    t = dubai_targets_005[0]
    openai_server.state.reply_override = "I am not sure what you mean."
    with pytest.raises(NoBoxError) as exc:
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)
    text = _one_clean_line(exc.value)
    assert "holds no box" in text and "family qwen3-vl" in text and "--vlm-family" in exc.value.fix
    openai_server.state.reply_override = None
    openai_server.state.thinking_tokens = 1500  # a thinking model cut at the token limit
    with pytest.raises(NoBoxError) as exc:
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)
    assert "cut at the 512-token limit" in _one_clean_line(exc.value) and "--vlm-max-tokens" in exc.value.fix
    openai_server.state.thinking_tokens = 0
    openai_server.state.reply_override = '{"bbox_2d": [-0.5, -0.5, -0.1, -0.1]}'  # fractions, off the image
    with pytest.raises(NoBoxError) as exc:
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)
    assert "box [-0.5, -0.5, -0.1, -0.1] lies outside" in _one_clean_line(exc.value)


def test_box_outside_the_image_is_a_no_box_error(openai_server, dubai_targets_005):
    openai_server.state.reply_override = '{"bbox_2d": [1200, 1300, 1500, 1600]}'
    t = dubai_targets_005[0]
    with pytest.raises(NoBoxError, match="is not in a 0-1000 grid, which family qwen3-vl reads"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, t.instruction)


def test_target_the_model_cannot_see_is_a_no_box_error(openai_server, dubai_targets_005):
    t = dubai_targets_005[0]
    with pytest.raises(NoBoxError, match="cannot find"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image, "the helicopter pad")
    # a flipped image is not the image the server knows: the server's match is real
    with pytest.raises(NoBoxError):
        GroundingClient(openai_server.url, model="qwen3-vl:8b").ground(t.image[::-1].copy(), t.instruction)


def test_unknown_model_or_path_is_refused_clearly(openai_server, dubai_targets_005):
    t = dubai_targets_005[0]
    with pytest.raises(GeosegError, match="HTTP 404.*does not exist.*--vlm-model"):
        GroundingClient(openai_server.url, model="no-such-model").ground(t.image, t.instruction)
    with pytest.raises(GeosegError, match="HTTP 404.*usually end in /v1"):
        GroundingClient(openai_server.url.removesuffix("/v1"), model="qwen3-vl:8b").ground(t.image, t.instruction)
    with pytest.raises(GeosegError, match="unknown model family"):
        GroundingClient(openai_server.url, model="qwen3-vl:8b", family="qwen9")


def test_points_only_answer_and_unit_fractions():
    """A points-only answer gives points; [0, 1] fractions are recognised whatever the family."""
    from openai_server import OpenAIServer

    img = np.random.default_rng(1).integers(0, 255, (200, 400, 3), dtype=np.uint8)
    with OpenAIServer([Target(img, (40, 20, 120, 60), "the car")]) as srv:
        srv.state.reply_override = '[{"point_2d": [500, 500], "label": "car"}]'
        g = GroundingClient(srv.url, model="qwen3-vl:8b").ground(img, "the car")
        assert g.box is None and g.points == [pytest.approx((200.0, 100.0))] and g.label == "car"
        srv.state.reply_override = '{"bbox_2d": [0.1, 0.1, 0.3, 0.3]}'
        g = GroundingClient(srv.url, model="qwen3-vl:8b").ground(img, "the car")
        assert g.box == pytest.approx((40.0, 20.0, 120.0, 60.0)) and g.convention == "unit"
        # several boxes: all converted, the first is the box; one outside the image is dropped
        srv.state.reply_override = "<ref>cars</ref><box>[[100, 100, 300, 300], [500, 0, 750, 250], [1200, 0, 1300, 50]]</box>"
        g = GroundingClient(srv.url, model="OpenGVLab/InternVL3-8B").ground(img, "the car")
        assert g.boxes == [pytest.approx((40.0, 20.0, 120.0, 60.0)), pytest.approx((200.0, 0.0, 300.0, 50.0))]
        assert g.box == g.boxes[0] and g.label == "cars"


def test_smaller_pixel_budget_still_converts_right(openai_server, dubai_targets_005):
    """A smaller budget sends a smaller image; Qwen2.5-VL's pixel answer is still mapped back right."""
    t = dubai_targets_005[0]
    client = GroundingClient(openai_server.url, model="Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=200_000)
    g = client.ground(t.image, t.instruction)
    w, h = openai_server.state.requests[-1]["size"]
    assert w * h <= 200_000 and w % 28 == 0 and h % 28 == 0
    assert np.abs(np.array(g.box) - np.array(t.box)).max() <= 1.0 + t.image.shape[0] / h / 2


def test_the_server_speaks_the_protocol_the_openai_sdk_expects(openai_server, dubai_targets_005):
    """The official client library accepts the loopback server's answers and errors (the fixture is a real API)."""
    openai = pytest.importorskip("openai")
    from geoseg.trainfree.client import encode_image
    from geoseg.trainfree.conventions import FAMILIES, prepare_image

    t = dubai_targets_005[0]
    sent, _ = prepare_image(t.image, FAMILIES["qwen3-vl"])
    sdk = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
    assert "qwen3-vl:8b" in [m.id for m in sdk.models.list()]
    resp = sdk.chat.completions.create(model="qwen3-vl:8b", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": encode_image(sent)}},
        {"type": "text", "text": f"Locate {t.instruction}."}]}])
    assert resp.choices[0].message.role == "assistant" and '"bbox_2d"' in resp.choices[0].message.content
    assert resp.usage.total_tokens > 0
    openai_server.state.api_key = "sk-other"
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
