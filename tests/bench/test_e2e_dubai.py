"""End to end on real Dubai data (region tile_7) with the real classical backend.

A small GeoSeg-Bench-format benchmark is written from one Dubai image and its palette
mask into the test's temporary folder (nothing derived is kept), then ``geoseg bench run``
scores the classical GrabCut backend on it and the HTML report is opened and its tables
checked; the oracle-box row and ``bench compare`` run on the same samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from geoseg.cli import cli

BUILDING = (60, 16, 152)
WATER = (226, 169, 41)


def write_dubai_bench(dubai: Path, root: Path, n: int = 6) -> int:
    img = np.asarray(Image.open(dubai / "tile_7/images/image_part_003.jpg").convert("RGB"))
    pal = np.asarray(Image.open(dubai / "tile_7/masks/image_part_003.png").convert("RGB"))
    tile = (slice(0, 512), slice(0, 512))
    img, pal = img[tile], pal[tile]
    h, w = img.shape[:2]
    building = np.all(pal == BUILDING, axis=2)
    lab, k = ndimage.label(building, structure=np.ones((3, 3)))
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, k + 1))
    ok = [i + 1 for i in np.argsort(-sizes) if 0.005 * h * w <= sizes[i] <= 0.7 * h * w][:n]
    for sub in ("intera/img", "intera/mask", "intera/json", "ref/json"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "intera/img/t7_003.png")
    entries = []
    for j, lid in enumerate(ok):
        m = lab == lid
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        x0, y0, x1, y1 = cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h
        cy, cx = ndimage.center_of_mass(m)
        inside = m[int(cy), int(cx)]
        Image.fromarray(m.astype(np.uint8) * 255).save(root / f"intera/mask/{j}.png")
        qs = [f"Please segment the target corresponding to the box x0,y0=[{x0:.3f},{y0:.3f}], x1,y1=[{x1:.3f},{y1:.3f}]."]
        if inside:
            qs.append(f"Please segment the target corresponding to the point [{cx / w:.3f}, {cy / h:.3f}].")
        (root / f"intera/json/{j}.json").write_text(json.dumps({"question": qs, "category": "building"}))
        (root / f"ref/json/{j}.json").write_text(json.dumps({"question": ["the large building"], "category": "building"}))
        entries.append({"img": "intera/img/t7_003.png", "mask": f"intera/mask/{j}.png", "json": f"intera/json/{j}.json"})
    entries.append({"img": "intera/img/t7_003.png", "mask": "intera/mask/0.png", "json": "ref/json/0.json"})
    (root / "test.json").write_text(json.dumps(entries))
    return len(ok)


def test_classical_report_on_dubai(dubai_dir, tmp_path, parse_html):
    pytest.importorskip("cv2")
    n_inst = write_dubai_bench(dubai_dir, tmp_path / "bench")
    assert n_inst >= 3
    runner = CliRunner()
    r = runner.invoke(cli, ["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path / "bench"),
                            "-o", str(tmp_path / "classical")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "classical/metrics.json").read_text())
    inter = metrics["per_task"]["interactive"]
    assert inter["n"] >= n_inst and metrics["unsupported_per_task"] == {"referring": 1}
    # GrabCut from a tight box on real buildings: clearly better than nothing, not perfect
    assert 0.3 < inter["gIoU"] < 1.0 and metrics["run"]["provenance"]["backend_provenance"]["model"] == "classical"

    page = parse_html((tmp_path / "classical/report.html").read_text(encoding="utf-8"))
    sections = {t["section"]: t["rows"] for t in page.tables}
    assert {"overall", "per task", "per category"} <= set(sections)
    task_rows = {row[0]: row for row in sections["per task"][1:]}
    assert "interactive" in task_rows and float(task_rows["interactive"][3]) == pytest.approx(100 * inter["gIoU"], abs=0.06)
    assert sections["per category"][1][0] == "building"
    facts = {row[0]: row[1] for row in sections["facts"]}
    assert facts["empty-target rule"].startswith("unigeoseg") and "referring 1" in facts["samples"]
    assert page.svgs >= 2 and len(page.imgs) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    md = (tmp_path / "classical/report.md").read_text()
    assert "## Per task" in md and "| interactive |" in md

    r = runner.invoke(cli, ["-q", "bench", "run", "--model", "oracle-box", "--data", str(tmp_path / "bench"),
                            "-o", str(tmp_path / "oracle")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    oracle = json.loads((tmp_path / "oracle/metrics.json").read_text())
    assert oracle["n_unsupported"] == 0 and oracle["per_task"]["referring"]["n"] == 1
    r = runner.invoke(cli, ["bench", "compare", str(tmp_path / "classical"), str(tmp_path / "oracle"),
                            "-o", str(tmp_path / "cmp")], catch_exceptions=False)
    assert r.exit_code == 0 and "| task referring | n/a |" in r.output
    assert (tmp_path / "cmp/compare.html").exists()
