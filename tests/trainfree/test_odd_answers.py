"""Odd but plausible servers and models: each failure is one line naming its own cause and fix."""

from __future__ import annotations

import numpy as np
import pytest
from box_backend import BoxAnswer

from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.trainfree.client import GroundingClient, NoBoxError
from geoseg.trainfree.segmenter import ENV_MAX_TOKENS, TrainFreeSegmenter

QWEN3 = "qwen3-vl:8b"


def _ground(server, target, **kw):
    with GroundingClient(server.url, QWEN3, backoff=0.01, **kw) as client:
        return client.ground(target.image, target.instruction)


def test_rate_limit_that_outlasts_the_retries_says_so(openai_server, dubai_targets_005):
    openai_server.state.fail_statuses = [429, 429, 429]
    openai_server.state.retry_after = "0"
    with pytest.raises(GeosegError) as exc:
        _ground(openai_server, dubai_targets_005[0])
    assert "HTTP 429: Rate limit reached" in exc.value.problem and "rate limit" in exc.value.fix
    assert "start the server" not in exc.value.fix  # old: the fix for a server that is down
    assert len(openai_server.state.requests) == 3


def test_a_failing_server_and_a_slow_one_get_their_own_fix(openai_server, dubai_targets_005):
    openai_server.state.fail_statuses = [503, 503, 503]
    with pytest.raises(GeosegError) as exc:
        _ground(openai_server, dubai_targets_005[0])
    assert "HTTP 503" in exc.value.problem and "log" in exc.value.fix
    openai_server.reset()
    openai_server.state.delay_s = 1.5
    with pytest.raises(GeosegError) as exc:
        _ground(openai_server, dubai_targets_005[0], timeout=0.3, retries=0)
    assert "no answer within 0.3 s" in exc.value.problem and "--vlm-timeout" in exc.value.fix


def test_a_thinking_model_cut_at_max_tokens_names_the_option_that_lets_it_answer(openai_server, dubai_targets_005,
                                                                                  monkeypatch):
    t = dubai_targets_005[0]
    openai_server.state.thinking_tokens = 1500
    with pytest.raises(NoBoxError) as exc:
        _ground(openai_server, t)
    assert "cut at the 512-token limit" in exc.value.problem and "--vlm-max-tokens" in exc.value.fix
    assert openai_server.state.requests[-1]["max_tokens"] == 512
    g = _ground(openai_server, t, max_tokens=4096)  # the fix works: the same model now answers
    assert np.allclose(g.box, t.box, atol=1.0 + max(t.image.shape[:2]) / 1000)
    # the route takes it as an argument (the --vlm-max-tokens flag) or from the environment
    seg = TrainFreeSegmenter(vlm_url=openai_server.url, vlm_model=QWEN3, vlm_max_tokens=4096,
                             mask_backend=BoxAnswer(), routes="B")
    seg.set_image(t.image)
    assert seg.predict(Prompt(text=t.instruction)).mask.any()
    assert openai_server.state.requests[-1]["max_tokens"] == 4096
    monkeypatch.setenv(ENV_MAX_TOKENS, "3000")
    seg = TrainFreeSegmenter(vlm_url=openai_server.url, vlm_model=QWEN3, mask_backend=BoxAnswer(), routes="B")
    seg.set_image(t.image)
    assert seg.predict(Prompt(text=t.instruction)).mask.any()
    assert openai_server.state.requests[-1]["max_tokens"] == 3000
    with pytest.raises(GeosegError, match="--vlm-max-tokens 0 is not a whole number of at least 16"):
        GroundingClient(openai_server.url, QWEN3, max_tokens=0)


def test_a_refusal_is_quoted(openai_server, dubai_targets_005):
    openai_server.state.refusal = "I'm sorry, I can't help with identifying locations in images."
    with pytest.raises(NoBoxError) as exc:
        _ground(openai_server, dubai_targets_005[0])
    assert "I'm sorry, I can't help" in str(exc.value)  # old: "holds no box: ''"
