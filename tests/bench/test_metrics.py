"""Metric tests with hand-computed expectations (GUIDE §2)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.bench.metrics import Counts, evaluate, mask_counts, per_sample_iou, summarize
from geoseg.errors import GeosegError


def counts(pairs, task=None, level=None, category=None) -> Counts:
    cols = [mask_counts(p, g) for p, g in pairs]
    arr = [np.array([c[i] for c in cols]) for i in range(4)]
    n = len(pairs)
    return Counts(*arr, task=task or [""] * n, level=level or [""] * n, category=category or [""] * n)


def m(shape, *cells):
    out = np.zeros(shape, bool)
    for r, c in cells:
        out[r, c] = True
    return out


def test_two_samples_hand_computed():
    # A: pred 4 px, target 4 px, overlap 2 -> I=2, U=6, IoU=1/3, Dice=4/8
    pa = m((4, 4), (0, 0), (0, 1), (0, 2), (0, 3))
    ga = m((4, 4), (0, 2), (0, 3), (1, 2), (1, 3))
    # B: exact 3 px -> IoU 1
    gb = m((4, 4), (3, 0), (3, 1), (2, 0))
    c = counts([(pa, ga), (gb.copy(), gb)])
    s = summarize(c)
    assert c.inter.tolist() == [2, 3] and c.union.tolist() == [6, 3]
    assert s["gIoU"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["cIoU"] == pytest.approx(5 / 9)
    assert s["Pr@0.5"] == 0.5 and s["Pr@0.9"] == 0.5
    assert s["Dice"] == pytest.approx(0.75)
    assert s["target_acc"] == 1.0 and s["no_target_acc"] is None
    assert s["n"] == 2 and s["n_scored"] == 2 and s["empty_rule"] == "unigeoseg"


@pytest.mark.parametrize("t,k", [(0.5, 2), (0.6, 3), (0.7, 7), (0.8, 8), (0.9, 9)])
def test_threshold_is_strict_at_exactly_t(t, k):
    # prediction = k of the target's n pixels with k/n == t exactly -> IoU == t, not counted at Pr@t
    n = {0.5: 4, 0.6: 5, 0.7: 10, 0.8: 10, 0.9: 10}[t]
    g = np.zeros((1, 16), bool)
    g[0, :n] = True
    p = np.zeros_like(g)
    p[0, :k] = True
    s = summarize(counts([(p, g)]))
    assert s["gIoU"] == pytest.approx(t)
    assert s[f"Pr@{t:g}"] == 0.0
    lower = round(t - 0.1, 1)
    if lower >= 0.5:
        assert s[f"Pr@{lower:g}"] == 1.0


def test_all_empty_under_each_rule():
    z = np.zeros((8, 8), bool)
    c = counts([(z, z), (z, z)])
    u = summarize(c, "unigeoseg")
    assert u["gIoU"] == 1.0 and u["cIoU"] == 1.0 and u["Pr@0.9"] == 1.0 and u["Dice"] == 1.0
    assert u["no_target_acc"] == 1.0 and u["target_acc"] is None and u["n_empty_target"] == 2
    zr = summarize(c, "zero")
    assert zr["gIoU"] == 0.0 and zr["cIoU"] == 0.0 and zr["Pr@0.5"] == 0.0 and zr["no_target_acc"] == 1.0
    sk = summarize(c, "skip")
    assert sk["n_scored"] == 0 and sk["gIoU"] is None and sk["cIoU"] is None and sk["no_target_acc"] == 1.0


def test_one_empty_target_each_rule():
    z = np.zeros((4, 4), bool)
    fp = m((4, 4), (0, 0), (0, 1), (1, 1))       # 3 px predicted on an empty target
    g = m((4, 4), (2, 2), (2, 3), (3, 2), (3, 3))
    c = counts([(z, z), (fp, z), (g.copy(), g)])
    u = summarize(c, "unigeoseg")
    assert per_sample_iou(c, "unigeoseg").tolist() == [1.0, 0.0, 1.0]
    assert u["gIoU"] == pytest.approx(2 / 3)
    assert u["cIoU"] == pytest.approx(4 / 7)      # the false positive's 3 px count in the union
    assert u["no_target_acc"] == 0.5 and u["target_acc"] == 1.0
    zr = summarize(c, "zero")
    assert zr["gIoU"] == pytest.approx(1 / 3) and zr["cIoU"] == pytest.approx(4 / 7)
    sk = summarize(c, "skip")
    assert sk["n_scored"] == 1 and sk["gIoU"] == 1.0 and sk["cIoU"] == 1.0 and sk["no_target_acc"] == 0.5
    assert np.isnan(per_sample_iou(c, "skip")[:2]).all()


def test_tiny_and_full_masks():
    full = np.ones((512, 512), bool)
    tiny = m((512, 512), (10, 10))
    other = m((512, 512), (400, 300))
    c = counts([(full, full.copy()), (tiny.copy(), tiny), (other, tiny), (full, tiny)])
    iou = per_sample_iou(c)
    assert iou[0] == 1.0 and iou[1] == 1.0 and iou[2] == 0.0
    assert iou[3] == pytest.approx(1 / (512 * 512))
    s = summarize(c)
    assert s["cIoU"] == pytest.approx((512 * 512 + 1 + 0 + 1) / (512 * 512 + 1 + 2 + 512 * 512))
    assert s["Pr@0.5"] == 0.5


def test_missed_target_lowers_target_accuracy():
    g = m((4, 4), (1, 1))
    c = counts([(np.zeros_like(g), g), (g.copy(), g)])
    s = summarize(c)
    assert s["target_acc"] == 0.5 and s["gIoU"] == 0.5 and s["cIoU"] == 0.5


def test_batched_counts_equal_per_sample_counts():
    rng = np.random.default_rng(0)
    p = rng.random((20, 32, 32)) > 0.6
    g = rng.random((20, 32, 32)) > 0.5
    batch = mask_counts(p, g)
    for i in range(20):
        single = mask_counts(p[i], g[i])
        assert [int(b[i]) for b in batch] == [int(s) for s in single]
    assert (batch[1] == np.count_nonzero(p | g, axis=(1, 2))).all()


def test_breakdowns_and_rule_stated():
    g = m((4, 4), (0, 0), (0, 1))
    half = m((4, 4), (0, 0))
    z = np.zeros((4, 4), bool)
    c = counts([(g.copy(), g), (half, g), (z, z)], task=["interactive", "referring", "referring"],
               level=["1", "2", "2"], category=["building", "building", "water"])
    ev = evaluate(c, "zero")
    assert ev["empty_rule"] == "zero" and "RMSIN" in ev["empty_rule_meaning"]
    assert ev["per_task"]["interactive"]["gIoU"] == 1.0
    assert ev["per_task"]["referring"]["gIoU"] == pytest.approx(0.25)
    assert list(ev["per_level"]) == ["1", "2"]
    assert ev["per_category"]["building"]["gIoU"] == pytest.approx(0.75)
    assert ev["per_category"]["water"]["gIoU"] == 0.0 and ev["per_category"]["water"]["no_target_acc"] == 1.0


def test_unknown_rule_and_shape_mismatch():
    with pytest.raises(GeosegError, match="empty-target rule"):
        summarize(counts([(np.ones((2, 2), bool), np.ones((2, 2), bool))]), "lenient")
    with pytest.raises(ValueError, match="does not match"):
        mask_counts(np.ones((2, 3), bool), np.ones((2, 2), bool))


def test_rle_counts_equal_dense_counts():
    from geoseg.bench.metrics import rle_counts
    from geoseg.rle import rle_encode

    rng = np.random.default_rng(1)
    for _ in range(5):
        p = rng.random((37, 29)) > 0.5
        g = rng.random((37, 29)) > 0.7
        assert rle_counts(rle_encode(p), rle_encode(g)) == tuple(int(v) for v in mask_counts(p, g))
    z = np.zeros((5, 5), bool)
    assert rle_counts(rle_encode(z), rle_encode(z)) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="does not match"):
        rle_counts(rle_encode(np.zeros((5, 4), bool)), rle_encode(z))
