"""The stats report and the GeoSeg-Bench export of a real Dubai build (read back by the bench reader)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.cli import main
from geoseg.data.dataset import read_rows
from geoseg.data.export import export_geoseg_bench
from geoseg.data.imagery import read_rgb
from geoseg.errors import InputError
from geoseg.rle import rle_decode


def test_stats_report_counts_match_the_shards(dubai_build: Path) -> None:
    stats = json.loads((dubai_build / "stats.json").read_text())
    manifest = json.loads((dubai_build / "manifest.json").read_text())
    rows = read_rows(dubai_build)
    assert stats["rows"] == len(rows) == manifest["rows"]
    assert stats["by_task"] == dict(Counter(r["task"] for r in rows))
    assert stats["by_task_level"] == dict(Counter(f"{r['task']}/{r['level']}" for r in rows))
    assert stats["by_category"] == dict(Counter(r["category"] for r in rows))
    assert stats["by_no_target_task"] == dict(Counter(r["task"] for r in rows if r["empty_target"]))
    # every rejected instance has exactly one counted reason
    assert stats["rejected_total"] == stats["instances"] - stats["kept_instances"] > 0
    hist = stats["instruction_length"]["histogram"]
    assert sum(sum(h) for h in hist.values()) == len(rows)
    words = [len(r["instruction"].split()) for r in rows if r["task"] == "referring"]
    assert sum(hist["referring"][:2]) == sum(1 for n in words if n < 7)
    md = (dubai_build / "stats.md").read_text()
    assert "## Filter rejections" in md and "## Instruction length" in md
    sheet = Image.open(dubai_build / "examples.png")
    assert sheet.size[0] == 4 * 256 and sheet.size[1] >= 3 * 256


def test_stats_cli_rewrites_the_report(dubai_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["data", "stats", str(dubai_build), "-o", str(tmp_path), "--examples", "4"])
    assert "# Data-engine build" in capsys.readouterr().out
    assert Image.open(tmp_path / "examples.png").size == (4 * 256, 256 + 84)
    assert json.loads((tmp_path / "stats.json").read_text()) == json.loads((dubai_build / "stats.json").read_text())
    main(["data", "export", str(dubai_build), "-o", str(tmp_path / "gsb"), "--split", "val", "--task", "referring"])
    assert "val: " in capsys.readouterr().out
    entries = json.loads((tmp_path / "gsb" / "val.json").read_text())
    assert entries and all(e["json"].startswith("ref/json/") for e in entries)


def test_geoseg_bench_export_round_trips_through_the_bench_reader(dubai_build: Path, tmp_path: Path) -> None:
    from geoseg.bench.readers import unigeoseg

    out = tmp_path / "gsb"
    summary = export_geoseg_bench(dubai_build, out, splits=["val"])
    rows = {r["sample_id"]: r for r in read_rows(dubai_build) if r["split"] == "val"}
    assert sum(s["questions"] for s in summary.values()) == len(rows)
    assert not (out / "train.json").exists()
    entries = json.loads((out / "val.json").read_text())
    assert {"img", "mask", "json"} == set(entries[0])
    samples = unigeoseg.read(out)
    assert len(samples) == len(rows)
    by_task = Counter(s.task for s in samples)
    assert by_task == Counter(r["task"] for r in rows.values())
    for s in samples[:: max(1, len(samples) // 40)]:
        qa = json.loads(Path(s.source_file).read_text())
        k = int(s.sample_id.rsplit("#", 1)[1])
        row = rows[qa["sample_id"][k]]
        assert s.instruction == row["instruction"] and s.task == row["task"]
        m = s.load_mask()
        assert set(np.unique(np.asarray(Image.open(out / Path(s.source_file).parent.parent / "masks" /
                                                   (Path(s.source_file).stem + ".png"))))) <= {0, 255}
        assert np.array_equal(m, rle_decode(row["mask"]))
        assert np.array_equal(s.load_image(), read_rgb(row))
        if s.task == "interactive":  # normalised coordinates in the text map back onto the target
            pts = s.prompt.points or [((s.prompt.box[0] + s.prompt.box[2]) / 2, (s.prompt.box[1] + s.prompt.box[3]) / 2)]
            for x, y in pts:
                assert m[min(int(y), m.shape[0] - 1), min(int(x), m.shape[1] - 1)] or s.prompt.box is not None
    with pytest.raises(InputError, match="already holds an export"):
        export_geoseg_bench(dubai_build, out)
    export_geoseg_bench(dubai_build, out, splits=["val"], tasks=["referring"], overwrite=True)
    assert {p.name for p in out.iterdir() if p.suffix == ".json"} == {"val.json"}
    assert {unigeoseg.task_of(e["json"]) for e in json.loads((out / "val.json").read_text())} == {"referring"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="is not a geoseg export"):
        export_geoseg_bench(dubai_build, tmp_path / "other")
    assert not list(tmp_path.glob(".*tmp-*"))
