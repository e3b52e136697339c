"""``geoseg serve`` warms its backend before listening: the unified model's text encoder loads lazily
(point/box prompts never need it), and a server's first text request should not be the one that pays."""

from __future__ import annotations

import pytest

from geoseg.cli import main
from geoseg.segmenters.classical import GrabCutSegmenter


def test_the_backend_is_warmed_before_the_server_listens(monkeypatch, tmp_path):
    import tempfile

    import uvicorn

    from geoseg import segmenters

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    events: list[str] = []

    class Warming(GrabCutSegmenter):
        def warm_up(self) -> None:
            events.append("warm")

    monkeypatch.setitem(segmenters._REGISTRY, "warming", lambda **kw: Warming(**kw))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: events.append("listen"))
    with pytest.raises(SystemExit) as exc:
        main(["-q", "serve", "--backend", "warming"])
        raise SystemExit(0)
    assert exc.value.code == 0 and events == ["warm", "listen"]
