"""Test-only helpers for the benchmark tests: a tiny deterministic backend and a benchmark writer."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.bench.readers import load_benchmark
from geoseg.prompts import Prompt
from geoseg.segmenters import Prediction, Segmenter


class BrightBoxSegmenter(Segmenter):
    """Test-only backend: inside the prompt box (or a 9x9 square around points) the bright pixels."""

    name = "bright-box"
    capabilities = frozenset({"point", "box"})

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.set_image_calls = 0
        self.predict_calls = 0
        self.fail_after = fail_after

    def _set_image(self, image):
        self.set_image_calls += 1
        self.bright = image.mean(axis=2) > 127

    def _predict(self, prompt: Prompt) -> Prediction:
        if self.fail_after is not None and self.predict_calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.predict_calls += 1
        h, w = self.image_shape
        win = np.zeros((h, w), bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            win[max(y0, 0):y1, max(x0, 0):x1] = True
        for x, y in prompt.points:
            win[max(int(y) - 4, 0):int(y) + 5, max(int(x) - 4, 0):int(x) + 5] = True
        return Prediction(mask=win & self.bright, score=0.9)


def write_bench(root: Path, n_images=3):
    """A RISBench-style file plus a GeoSeg-Bench style folder with interactive samples (bright squares)."""
    entries = []
    for i in range(n_images):
        img = np.full((48, 48, 3), 30, np.uint8)
        img[10:30, 12 + i:32 + i] = 220
        gt = np.zeros((48, 48), bool)
        gt[10:30, 12 + i:32 + i] = True
        for sub in ("intera/img", "intera/mask", "intera/json", "ref/json"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"intera/img/{i}.png")
        Image.fromarray(gt.astype(np.uint8) * 255).save(root / f"intera/mask/{i}.png")
        x0, y0, x1, y1 = (12 + i) / 48, 10 / 48, (32 + i) / 48, 30 / 48
        (root / f"intera/json/{i}.json").write_text(json.dumps({"question": [
            f"Please segment the target corresponding to the box x0,y0=[{x0:.3f},{y0:.3f}], x1,y1=[{x1:.3f},{y1:.3f}].",
            f"Please segment the target corresponding to the point [{(22 + i) / 48:.3f}, {20 / 48:.3f}]."]}))
        (root / f"ref/json/{i}.json").write_text(json.dumps({"question": ["the bright square"], "category": "roof"}))
        entries.append({"img": f"intera/img/{i}.png", "mask": f"intera/mask/{i}.png", "json": f"intera/json/{i}.json"})
        entries.append({"img": f"intera/img/{i}.png", "mask": f"intera/mask/{i}.png", "json": f"ref/json/{i}.json"})
    (root / "test.json").write_text(json.dumps(entries))
    return load_benchmark(root)[0]


@pytest.fixture()
def Bright():  # noqa: N802 - the fixture is the class
    return BrightBoxSegmenter


@pytest.fixture(name="write_bench")
def write_bench_fixture():
    return write_bench


class TableParser(HTMLParser):
    """Collects each <table>'s rows as lists of cell texts, plus <img> and <svg> counts."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self.imgs: list[str] = []
        self.svgs = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"section": a.get("data-section", a.get("class", "")), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse_html(text: str) -> TableParser:
    p = TableParser()
    p.feed(text)
    return p


@pytest.fixture(name="parse_html")
def parse_html_fixture():
    """Parse an HTML report: ``.tables`` (section + rows of cell texts), ``.imgs``, ``.svgs``."""
    return _parse_html
