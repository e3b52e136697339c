"""Backend options (``mask_threshold``, ``vlm_*``) travel as arguments to the segmenter, in one
process, in batch workers and from the CLI, and secrets never reach files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.batch import MARKER_DIR, BatchOptions, run_batch
from geoseg.prompts import Prompt

from .conftest import run_cli, write_scene


def _mask_pixels(path) -> int:
    with rasterio.open(path) as ds:
        return int((ds.read(1) == 1).sum())


def _provenance(path) -> dict:
    with rasterio.open(path) as ds:
        return json.loads(ds.tags()["provenance_json"])


def test_resume_key_keeps_options_but_not_the_api_key():
    opts = BatchOptions(backend="trainfree", backend_options={"vlm_url": "http://h/v1", "vlm_key": "s3cret"})
    key = opts.key([Prompt(text="the pier")])
    assert key["backend_options"] == {"vlm_url": "http://h/v1"}
    assert "s3cret" not in json.dumps(key)


def test_batch_passes_the_mask_threshold_to_the_unified_backend(tmp_path, scenes, tiny_checkpoint):
    prompt = [Prompt(text="the bright roof")]
    counts = {}
    for t in (0.05, 0.95):
        out = tmp_path / f"out_{t}"
        s = run_batch(scenes, out, prompt, backend="unified", checkpoint=str(tiny_checkpoint), device="cpu",
                      backend_options={"mask_threshold": t, "presence_threshold": 1e-6, "vlm_key": "s3cret"})
        assert s.count("done") == 3
        counts[t] = _mask_pixels(out / "scene_0.tif")
        prov = _provenance(out / "scene_0.tif")
        assert prov["mask_thresholds"] == dict.fromkeys(("interactive", "referring", "reasoning"), t)
        for f in (out / MARKER_DIR).rglob("*"):  # the markers and the run's summary
            assert f.is_dir() or "s3cret" not in f.read_text()
    # a lower threshold can only add pixels, and on random weights it adds many
    assert counts[0.05] > counts[0.95]


def test_cli_mask_threshold(tmp_path, tiny_checkpoint, capsys):
    from geoseg.unified.decision import Decision
    from geoseg.unified.train import export_checkpoint

    scene = write_scene(tmp_path / "scene.tif")
    # a bundle whose presence head always answers "present", so the mask threshold alone decides
    ckpt = export_checkpoint(tiny_checkpoint, tmp_path / "always.pt", Decision(presence_threshold=1e-6))
    counts = []
    for t in ("0.05", "0.95"):
        out = tmp_path / f"m_{t}.tif"
        assert run_cli(["-q", "segment", str(scene), "--text", "the bright roof", "--checkpoint", str(ckpt),
                     "--mask-threshold", t, "-o", str(out)]) == 0
        counts.append(_mask_pixels(out))
        assert _provenance(out)["mask_thresholds"]["referring"] == float(t)
    assert counts[0] > counts[1]
    code = run_cli(["-q", "segment", str(scene), "--text", "x", "--mask-threshold", "1.5", "-o", str(tmp_path / "bad.tif")])
    assert code == 2 and "--mask-threshold" in capsys.readouterr().err
    assert not (tmp_path / "bad.tif").exists()


@pytest.mark.parametrize("flag, prompt, key", [
    ("--no-selector", ["--text", "the largest building"], "instance_selector"),
    ("--no-refine", ["--box", "140,90,410,310"], "interactive_refine"),
    ("--no-object-region", ["--point", "275,200"], "object_region"),
    ("--no-zoom", ["--box", "200,150,240,180"], "small_box_zoom"),
])
def test_cli_turns_off_a_step_of_the_default_model(tmp_path, flag, prompt, key):
    """The shipped model selects the parts of a text answer, re-cuts point/box answers along image
    edges and keeps them to the class region the prompt marks; each flag answers without that step,
    and the output's provenance says which way it answered."""
    scene = write_scene(tmp_path / "scene.tif")
    used = {}
    # the re-cut is compared with the class-region step off in both runs: on this clean synthetic roof the
    # step's coarse class map shaves the edges the re-cut found (measured IoU 0.979 with it, 0.999 without)
    others = ["--no-object-region"] if flag == "--no-refine" else []
    for flags in ([], [flag]):
        out = tmp_path / f"m{len(flags)}.tif"
        assert run_cli(["-q", "segment", str(scene), *prompt, *others, *flags, "-o", str(out)]) == 0
        used[bool(flags)] = _provenance(out)[key]
        with rasterio.open(out) as ds:
            mask = ds.read(1) == 1
        roof = np.zeros_like(mask)
        roof[100:300, 150:400] = True  # the bright roof write_scene draws
        used[(bool(flags), "iou")] = (mask & roof).sum() / (mask | roof).sum()
    assert used[False] and used[True] is None
    if flag == "--no-refine":  # the box answer snaps to the roof's edges (measured 0.999 vs 0.961)
        assert used[(False, "iou")] > 0.98 and used[(False, "iou")] > used[(True, "iou")]
