"""Per-task decision thresholds: the IoU curve, the tuning rule, storage in the bundle, use by the segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.unified.decision import THRESHOLD_GRID, Decision, iou_curve, record_ious, tune, tune_with_presence


def _brute_iou(prob: np.ndarray, gt: np.ndarray, t: float) -> float:
    pred = prob >= t
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else np.logical_and(pred, gt).sum() / union


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_curve_equals_thresholding_at_every_grid_value(seed):
    rng = np.random.default_rng(seed)
    prob = rng.random((37, 53)).astype(np.float32)
    prob[:5] = 0.5  # values exactly on a grid point count as "at or above"
    gt = rng.random((37, 53)) < 0.3
    curve = iou_curve(prob, gt)
    assert curve.shape == (len(THRESHOLD_GRID),)
    assert np.allclose(curve, [_brute_iou(prob, gt, t) for t in THRESHOLD_GRID])


def test_iou_curve_follows_the_empty_target_rule():
    gt = np.zeros((8, 8), bool)
    prob = np.full((8, 8), 0.3, np.float32)
    curve = iou_curve(prob, gt, grid=(0.2, 0.4))
    assert curve.tolist() == [0.0, 1.0]  # mask at 0.2 on an empty target scores 0; empty mask scores 1


def _rec(task, curve, presence=0.9, empty=False):
    return {"task": task, "curve": np.asarray(curve, float), "presence": presence, "empty": empty}


def test_tune_takes_each_tasks_best_threshold_and_gates_on_presence():
    grid = (0.3, 0.4, 0.5, 0.6)
    recs = [_rec("referring", [0.6, 0.4, 0.1, 0.0]), _rec("referring", [0.4, 0.4, 0.3, 0.2]),
            _rec("interactive", [0.5, 0.6, 0.7, 0.6]),
            # presence says "no target": an empty answer whatever the threshold (1 on an empty target)
            _rec("reasoning", [0.0, 0.0, 0.0, 0.9], presence=0.1, empty=True),
            _rec("reasoning", [0.2, 0.2, 0.2, 0.2])]
    decision, report = tune(recs, grid=grid, tuned_on="test rows")
    assert decision.mask_thresholds == {"interactive": 0.5, "referring": 0.3, "reasoning": 0.5}
    assert decision.tuned_on == "test rows"
    assert report["referring"]["gIoU@threshold"] == pytest.approx(50.0)
    assert report["referring"]["gIoU@0.5"] == pytest.approx(20.0)
    # reasoning is flat (1.0 and 0.2 at every threshold): the tie goes to 0.5
    assert report["reasoning"]["gIoU@threshold"] == pytest.approx(60.0)


def test_presence_threshold_is_tuned_with_the_mask_thresholds():
    grid = (0.2, 0.5)
    # a wrong "present" (0.7) on an empty target: the low mask threshold paints it, the high one does not
    recs = [_rec("referring", [0.0, 1.0], presence=0.7, empty=True),
            _rec("referring", [0.8, 0.1], presence=0.9),
            _rec("referring", [0.6, 0.0], presence=0.95)]
    decision, report = tune_with_presence(recs, grid=grid, presence_grid=(0.5, 0.8))
    # presence 0.5: best is mask 0.2 -> (0 + 0.8 + 0.6) / 3; presence 0.8: mask 0.2 -> (1 + 0.8 + 0.6) / 3
    assert decision.presence_threshold == 0.8 and decision.mask_threshold("referring") == 0.2
    r = report["referring"]
    assert r["gIoU@threshold"] == pytest.approx(80.0) and r["gIoU@0.5"] == pytest.approx(110 / 3)
    assert r["no_target_acc"] == 100.0 and r["presence_threshold"] == 0.8
    # with one candidate it is plain tune() at that presence threshold
    d1, _ = tune_with_presence(recs, grid=grid, presence_grid=(0.5,))
    assert d1 == tune(recs, grid=grid)[0]


def test_record_ious_score_each_row_as_the_decision_answers_it():
    grid = (0.2, 0.5)
    recs = [_rec("referring", [0.0, 1.0], presence=0.7, empty=True),
            _rec("referring", [0.8, 0.1], presence=0.9),
            _rec("interactive", [0.3, 0.6], presence=0.2),   # below presence: empty answer on a target = 0
            _rec("reasoning", [0.4, 0.7], presence=0.9)]
    d = Decision({"interactive": 0.5, "referring": 0.2, "reasoning": 0.5}, 0.8)
    assert record_ious(recs, d, grid=grid).tolist() == [1.0, 0.8, 0.0, 0.7]
    # the tuned decision's per-task means are the tuning report's figures
    rng = np.random.default_rng(3)
    many = [_rec(t, rng.random(len(THRESHOLD_GRID)).tolist(), presence=float(rng.random()), empty=bool(rng.random() < 0.2))
            for t in ("interactive", "referring", "reasoning") for _ in range(30)]
    tuned, report = tune_with_presence(many)
    ious = record_ious(many, tuned)
    for task, r in report.items():
        assert 100 * ious[[m["task"] == task for m in many]].mean() == pytest.approx(r["gIoU@threshold"])
    with pytest.raises(InputError, match="not on the tuning grid"):
        record_ious(recs, Decision({"referring": 0.33}), grid=grid)


def test_tune_without_rows_is_a_clear_error():
    with pytest.raises(InputError, match="no validation rows"):
        tune([])


def test_decision_block_round_trip_and_validation():
    assert Decision.from_dict(None).mask_thresholds == {"interactive": 0.5, "referring": 0.5, "reasoning": 0.5}
    d = Decision({"interactive": 0.5, "referring": 0.35, "reasoning": 0.25}, 0.6, "val")
    assert Decision.from_dict(d.to_dict()) == d
    assert Decision.from_dict({"mask_thresholds": {"referring": 0.3}}).mask_threshold("reasoning") == 0.5
    with pytest.raises(InputError, match="outside"):
        Decision.from_dict({"mask_thresholds": {"referring": 1.5}})


def test_tuned_bundle_carries_the_thresholds_and_the_segmenter_applies_them(trained_run, text_cache_path, tmp_path):
    from geoseg.prompts import Prompt
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.segmenter import UnifiedSegmenter
    from geoseg.unified.train import export_checkpoint, tune_decision, val_records

    best = trained_run["out"] / "best.pt"
    decision, report = tune_decision(trained_run["cfg"], best, device="cpu", text_cache=str(text_cache_path))
    # the same pass, kept row by row: every val row once, each at the tuned decision giving the report's figure
    records, where = val_records(trained_run["cfg"], best, device="cpu", text_cache=str(text_cache_path))
    assert where == decision.tuned_on and len(records) == sum(r["n"] for r in report.values())
    assert len({r["sample_id"] for r in records}) == len(records)
    ious = record_ious(records, decision)
    for task, r in report.items():
        assert 100 * ious[[rec["task"] == task for rec in records]].mean() == pytest.approx(r["gIoU@threshold"])
    assert set(report) == {"interactive", "referring", "reasoning"}
    for r in report.values():
        assert r["threshold"] in THRESHOLD_GRID and r["gIoU@threshold"] >= r["gIoU@0.5"] - 1e-9
        assert r["presence_threshold"] == decision.presence_threshold
    assert "val rows" in decision.tuned_on
    dst = export_checkpoint(best, tmp_path / "bundle.pt", decision)
    assert read_checkpoint(dst)["meta"]["decision"] == decision.to_dict()

    # a hand-set decision makes the effect visible: the mask is exactly prob >= the task's threshold
    forced = Decision({"interactive": 0.5, "referring": 0.05, "reasoning": 0.95}, 0.01, "test")
    export_checkpoint(best, tmp_path / "forced.pt", forced)
    seg = UnifiedSegmenter(tmp_path / "forced.pt", device="cpu")
    rng = np.random.default_rng(0)
    seg.set_image(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    for text, task in (("the water", "referring"), ("Where could a boat sail?", "reasoning")):
        pred = seg.predict(Prompt(text=text, task=task))
        assert np.array_equal(pred.mask, pred.prob >= forced.mask_threshold(task))
    assert seg.provenance()["mask_thresholds"]["referring"] == 0.05
    # the constructor argument overrides the stored values for every task
    seg2 = UnifiedSegmenter(tmp_path / "forced.pt", device="cpu", mask_threshold=0.7, presence_threshold=0.2)
    assert seg2.decision.mask_thresholds == dict.fromkeys(("interactive", "referring", "reasoning"), 0.7)
    assert seg2.decision.presence_threshold == 0.2


@pytest.mark.parametrize("flag", ["--tune-decision", "--fit-selector"])
def test_cli_post_training_steps_need_export(tmp_path, capsys, flag):
    """Tuned thresholds and a fitted selector live in the exported bundle, so both flags need --export."""
    from geoseg.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(cfg), flag])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{flag} needs --export" in err and len(err.strip().splitlines()) == 1
