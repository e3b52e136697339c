"""Instance selector: components of a mask, their features, fitting, tuning and use in the segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.unified.select_fit import Example, fit_selector, score_components, tune_selection
from geoseg.unified.selection import (
    apply_selection,
    component_features,
    feature_dim,
    feature_names,
    select_mask,
    split_components,
    target_labels,
)


def _blobs() -> np.ndarray:
    m = np.zeros((128, 160), bool)
    m[10:20, 5:65] = True  # wide horizontal bar, top left, the largest
    m[60:110, 140:150] = True  # tall vertical bar, right
    m[100:110, 40:50] = True  # small square, bottom
    m[0, 159] = True  # a one-pixel speck: noise, not an instance
    return m


def test_split_components_drops_specks_and_rebuilds_masks():
    comps = split_components(_blobs())
    assert comps.count == 3
    whole = comps.mask(range(3))
    assert whole.sum() == _blobs().sum() - 1 and not whole[0, 159]
    one = comps.mask([comps.labels[15, 10] - 1])
    assert one.sum() == 600 and one[10:20, 5:65].all()


def test_features_describe_position_size_shape_and_surroundings():
    comps = split_components(_blobs())
    sem = np.zeros((2, 16, 20), np.float32)
    sem[0] = 1.0
    sem[1, 12:, 2:8] = 1.0  # class 1 just around the small square at the bottom
    sem[0, 12:, 2:8] = 0.0
    prob = _blobs().astype(np.float32)
    f = component_features(comps, prob, sem)
    names = feature_names(2)
    assert f.shape == (3, feature_dim(2)) == (3, len(names)) and np.isfinite(f).all()
    col = {n: f[:, i] for i, n in enumerate(names)}
    bar, tall, small = (comps.labels[15, 10] - 1, comps.labels[80, 145] - 1, comps.labels[105, 45] - 1)
    assert col["size_rank"][bar] == 0 and col["size_rank"][small] == 1  # 0 = largest
    assert col["x_rank"][bar] == 0 and col["x_rank"][tall] == 1  # 0 = leftmost
    assert col["y_rank"][bar] == 0
    assert col["horizontal"][bar] > 0.8 and col["horizontal"][tall] < -0.8
    assert col["elongation"][bar] > col["elongation"][small]
    assert col["cx"][tall] == pytest.approx(145 / 160, abs=0.01)
    assert col["mean_prob"] == pytest.approx(1.0)
    assert np.argmin(col["dist_1"]) == small and col["dist_rank_1"][small] == 0
    assert np.argmax(col["surround_1"]) == small
    assert component_features(split_components(np.zeros((8, 8), bool)), np.zeros((8, 8))).shape == (0, feature_dim(0))


def test_target_labels_and_selection():
    comps = split_components(_blobs())
    bar, tall = comps.labels[15, 10] - 1, comps.labels[80, 145] - 1
    gt = np.zeros_like(_blobs())
    gt[60:90, 140:150] = True  # 60 % of the tall bar
    gt[10:20, 5:10] = True  # a sliver of the wide bar: most of the bar is not the target
    y = target_labels(comps, gt)
    assert y[tall] == 1 and y[bar] == 0
    scores = np.array([0.1, 0.2, 0.3])
    assert np.array_equal(select_mask(comps, scores, 0.25), comps.mask([2]))
    assert select_mask(comps, scores, 0.9) is None  # no preference
    assert np.array_equal(select_mask(comps, np.array([0.9, 0.8, 0.1]), 0.5), comps.mask([0, 1]))
    answer = _blobs()
    assert np.array_equal(apply_selection(comps, scores, 0.9, answer), answer)  # the whole answer is kept
    assert np.array_equal(apply_selection(comps, scores, 0.25, answer), comps.mask([2]))
    one = split_components(answer & (np.arange(160)[None, :] < 100) & (np.arange(128)[:, None] < 50))
    assert one.count == 1 and np.array_equal(apply_selection(one, np.array([0.0]), 0.5, answer), answer)


def _synthetic(n: int, rng: np.random.Generator, left: np.ndarray, right: np.ndarray):
    """Rows of 2–5 random boxes; the instruction is 'leftmost' or 'rightmost' (two fixed text vectors)."""
    out = []
    for _ in range(n):
        m = np.zeros((64, 64), bool)
        for _ in range(rng.integers(2, 6)):
            x, y = rng.integers(0, 56, 2)
            m[y: y + 6, x: x + 6] = True
        comps = split_components(m)
        if comps.count < 2:
            continue
        feats = component_features(comps, m.astype(np.float32))
        want_left = bool(rng.integers(0, 2))
        cx = feats[:, 0]
        target = int(np.argmin(cx) if want_left else np.argmax(cx))
        out.append((left if want_left else right, comps, feats, comps.mask([target])))
    return out


def test_fit_selector_learns_which_part_an_instruction_means():
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
    train = [(t, f, target_labels(c, gt)) for t, c, f, gt in _synthetic(400, rng, left, right)]
    net, cfg = fit_selector(train, num_classes=0, epochs=25, seed=0)
    test = _synthetic(100, np.random.default_rng(1), left, right)
    hits = [bool(gt[comps.mask([int(np.argmax(score_components(net, cfg, t, f)))])].all())
            for t, comps, f, gt in test]
    assert np.mean(hits) > 0.9

    # tuning turns selection on where it helps, off where the answer is every part
    val = [Example({"task": "referring"}, t, c, f, c.mask(range(c.count)), gt) for t, c, f, gt in test]
    val += [Example({"task": "reasoning"}, t, c, f, c.mask(range(c.count)), c.mask(range(c.count)))
            for t, c, f, _ in test]
    choice, report = tune_selection(net, cfg, val)
    assert choice["referring"] is not None and choice["reasoning"] is None
    assert report["referring"]["gIoU_by_threshold"][choice["referring"]] > report["referring"]["gIoU_off"] + 20


def _semantic_run(tiny_shard, text_cache_path, out):
    from dataclasses import replace

    from geoseg.unified.train import train

    from .conftest import tiny_config

    cfg = tiny_config(tiny_shard, out, epochs=1)
    cfg = replace(cfg, model=replace(cfg.model, semantic_aux=True))
    train(cfg, device="cpu", text_cache=str(text_cache_path))
    return cfg


def test_fit_export_and_segment_with_the_selector(tiny_shard, text_cache_path, tmp_path):
    from geoseg.prompts import Prompt
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.decision import Decision
    from geoseg.unified.segmenter import UnifiedSegmenter
    from geoseg.unified.select_fit import fit_for_checkpoint
    from geoseg.unified.train import export_checkpoint

    cfg = _semantic_run(tiny_shard, text_cache_path, tmp_path / "run")
    best = tmp_path / "run" / "best.pt"
    decision = Decision({"interactive": 0.5, "referring": 0.3, "reasoning": 0.3}, 0.01, "test")
    entry, report = fit_for_checkpoint(cfg, best, decision, device="cpu", text_cache=str(text_cache_path), epochs=3)
    assert set(report) == {"referring", "reasoning"} and "train rows" in entry["trained_on"]
    entry["thresholds"] = {"referring": 0.5, "reasoning": None}  # force it on for referring only
    dst = export_checkpoint(best, tmp_path / "bundle.pt", decision, entry)
    assert read_checkpoint(dst)["selector"]["thresholds"] == {"referring": 0.5, "reasoning": None}
    assert "selector" in read_checkpoint(export_checkpoint(dst, tmp_path / "again.pt"))  # kept on re-export

    seg = UnifiedSegmenter(dst, device="cpu")
    plain = UnifiedSegmenter(dst, device="cpu", use_selector=False)
    assert seg.provenance()["instance_selector"] == {"referring": 0.5, "reasoning": None}
    rng = np.random.default_rng(3)
    img = np.full((128, 128, 3), (194, 178, 128), np.uint8)
    img[10:40, 10:40] = (120, 120, 120)
    img[80:110, 85:115] = (120, 120, 120)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    seg.set_image(img)
    plain.set_image(img)
    # the selector keeps a subset of the decoder's parts (all of them when there is only one)
    for text in ("the building on the left", "the buildings", "the water"):
        full = plain.predict(Prompt(text=text, task="referring")).mask
        pred = seg.predict(Prompt(text=text, task="referring"))
        assert not (pred.mask & ~full).any()
        n = split_components(full).count
        if n >= 2:
            assert pred.info["selected_parts"].endswith(f"of {n}")
        else:
            assert np.array_equal(pred.mask, full)
    # a crafted two-part answer: the kept part is the one the stored network scores highest
    mask = np.zeros((128, 128), bool)
    mask[10:40, 10:40] = True
    mask[80:110, 85:115] = True
    info: dict = {}
    kept = seg._select(mask, mask.astype(np.float32), "the building on the left", "referring", info)
    net, scfg, _ = seg.selector
    comps = split_components(mask)
    text = seg.text.encode(["the building on the left"])[0].float().mean(0).numpy()
    scores = score_components(net, scfg, text, component_features(comps, mask.astype(np.float32),
                                                                   seg._semantic_probs()))
    assert np.array_equal(kept, apply_selection(comps, scores, 0.5, mask))
    assert info["selected_parts"] == f"{int((scores >= 0.5).sum()) or 2} of 2"
    # reasoning has no threshold: untouched
    assert np.array_equal(seg._select(mask, mask.astype(np.float32), "x", "reasoning", {}), mask)


def test_a_malformed_selector_is_a_clear_error(trained_run, tmp_path):
    from geoseg.errors import GeosegError
    from geoseg.unified.segmenter import UnifiedSegmenter
    from geoseg.unified.train import export_checkpoint

    dst = export_checkpoint(trained_run["out"] / "best.pt", tmp_path / "b.pt", None,
                            {"state_dict": {"x": torch.zeros(1)}, "config": {"text_dim": 384, "num_classes": 3},
                             "thresholds": {"referring": 0.5}})
    with pytest.raises(GeosegError, match="instance selector stored in .* is malformed"):
        UnifiedSegmenter(dst, device="cpu")
    assert UnifiedSegmenter(dst, device="cpu", use_selector=False).selector is None


def test_fit_selector_needs_the_semantic_head(trained_run, text_cache_path):
    from geoseg.errors import InputError
    from geoseg.unified.decision import Decision
    from geoseg.unified.select_fit import fit_for_checkpoint

    with pytest.raises(InputError, match="no semantic head"):
        fit_for_checkpoint(trained_run["cfg"], trained_run["out"] / "best.pt", Decision.from_dict(None),
                           device="cpu", text_cache=str(text_cache_path))

