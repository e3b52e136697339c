"""A few CPU training steps on the generated shard: the loss falls, checkpoints resume, the schedule progresses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from geoseg.errors import InputError
from geoseg.unified.config import load_config
from geoseg.unified.train import compute_losses, task_weights

from .conftest import tiny_config


def test_loss_falls_over_a_few_cpu_steps(trained_run):
    hist = [json.loads(line) for line in (trained_run["out"] / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 3
    assert hist[-1]["train_loss"] < 0.85 * hist[0]["train_loss"], hist
    assert (trained_run["out"] / "best.pt").is_file() and (trained_run["out"] / "last.pt").is_file()
    log = (trained_run["out"] / "train.log").read_text()
    assert "epoch 3 done" in log and "| interactive |" in log
    # the run folder says which settings made it, in a form load_config reads back
    from dataclasses import asdict

    assert asdict(load_config(trained_run["out"] / "config.yaml")) == asdict(trained_run["cfg"])


def test_resume_continues_from_last_checkpoint(trained_run, tiny_shard, text_cache_path, tmp_path):
    import shutil

    from geoseg.unified.train import train

    shutil.copy(trained_run["out"] / "last.pt", tmp_path / "last.pt")
    cfg = tiny_config(tiny_shard, tmp_path, epochs=4)
    summary = train(cfg, resume=True, device="cpu", text_cache=str(text_cache_path))
    assert summary["epochs"] == 4 and summary["steps"] == 4 * 12
    assert "resumed from" in (tmp_path / "train.log").read_text()


def test_resume_without_checkpoint_is_a_clear_error(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.train import train

    with pytest.raises(InputError, match="--resume"):
        train(tiny_config(tiny_shard, tmp_path), resume=True, device="cpu", text_cache=str(text_cache_path))


def test_init_from_starts_at_the_checkpoint_weights(trained_run, tiny_shard, text_cache_path, tmp_path):
    """Fine-tuning (train.init_from) loads every tensor of the checkpoint before the first step."""
    from geoseg.unified.build import build_model
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import init_weights

    cfg = tiny_config(tiny_shard, tmp_path)
    model = build_model(cfg.model)
    src = trained_run["out"] / "best.pt"
    norm = init_weights(model, str(src), cfg.model)
    saved = read_checkpoint(src)
    assert norm == saved["norm"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["state_dict"][k].float()), k


def test_init_from_may_add_the_zero_started_modules(trained_run, tiny_shard, tmp_path):
    """A checkpoint without the spatial prior and relation anchor fine-tunes into a config with them."""
    from geoseg.unified.build import build_model
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import init_weights

    cfg = tiny_config(tiny_shard, tmp_path)
    cfg.model.spatial_prior = cfg.model.relation_anchor = True
    model = build_model(cfg.model)
    src = trained_run["out"] / "best.pt"
    init_weights(model, str(src), cfg.model)
    saved = read_checkpoint(src)["state_dict"]
    for k, v in model.state_dict().items():
        if k.startswith(("decoder.spatial_prior.", "decoder.anchor.")):
            assert k not in saved
        else:
            assert torch.equal(v, saved[k].float()), k
    assert not model.decoder.spatial_prior.mlp[-1].weight.any() and not model.decoder.anchor.mix.weight.any()


def test_init_from_another_architecture_is_a_clear_error(trained_run, tiny_shard, tmp_path):
    from geoseg.unified.build import build_model
    from geoseg.unified.train import init_weights

    cfg = tiny_config(tiny_shard, tmp_path)
    cfg.model.fpn_dim = 48  # same arch name, other widths: the weights do not fit
    with pytest.raises(InputError, match="does not fit the configured model"):
        init_weights(build_model(cfg.model), str(trained_run["out"] / "best.pt"), cfg.model)


def test_progressive_schedule_starts_interactive_and_decays_to_0_7():
    tc = SimpleNamespace(progressive=True, interactive_start=1.0, interactive_end=0.7, ramp_frac=0.4,
                         reasoning_share=0.4)
    assert task_weights(tc, 0.0) == {"interactive": 1.0, "referring": 0.0, "reasoning": 0.0}
    mid = task_weights(tc, 0.2)
    assert 0.7 < mid["interactive"] < 1.0 and mid["referring"] > mid["reasoning"] > 0
    end = task_weights(tc, 0.9)
    assert end["interactive"] == pytest.approx(0.7) and sum(end.values()) == pytest.approx(1.0)
    tc.progressive = False
    assert task_weights(tc, 0.0)["interactive"] == pytest.approx(1 / 3)


def test_losses_dice_only_on_targets_and_presence_on_all():
    tc = SimpleNamespace(bce_weight=1.0, dice_weight=1.0, no_target_weight=0.5, class_memory_weight=0.2,
                         mask_loss_on_empty=True)
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:6, 2:6] = 1
    batch = {"target": target, "empty": torch.tensor([False, True]), "category": torch.tensor([0, -1])}
    good = {"logits": (target * 20 - 10), "presence": torch.tensor([10.0, -10.0])}
    bad = {"logits": -(target * 20 - 10), "presence": torch.tensor([-10.0, 10.0])}
    lg, lb = compute_losses(good, batch, tc), compute_losses(bad, batch, tc)
    assert lg["total"] < 0.01 and lb["total"] > 5
    assert lg["dice"] < 1e-3 and lb["presence"] > 5
    # mask_loss_on_empty=False: a painted no-target row costs only its presence term
    painted = {"logits": torch.full_like(target, 10.0), "presence": torch.tensor([10.0, -10.0])}
    painted["logits"][0] = target[0] * 20 - 10
    on, off = compute_losses(painted, batch, tc), compute_losses(painted, batch, SimpleNamespace(
        **{**vars(tc), "mask_loss_on_empty": False}))
    assert on["bce"] > 4 and off["bce"] < 1e-3 and off["presence"] < 1e-3
    only_empty = {"target": target[1:], "empty": torch.tensor([True]), "category": torch.tensor([-1])}
    assert compute_losses({k: v[1:] for k, v in painted.items()}, only_empty,
                          SimpleNamespace(**{**vars(tc), "mask_loss_on_empty": False}))["bce"] == 0


@pytest.mark.parametrize("task", [0, 1, 2])
def test_a_training_step_under_bf16_autocast_matches_float32(task):
    """The GPU run trains under bf16 autocast, which CI cannot run on CUDA; CPU autocast takes the
    same casts through every module the shipped recipe uses, so a dtype clash or an overflow in
    the network or the losses shows here instead of on the first GPU step."""
    from geoseg.unified.build import build_model
    from geoseg.unified.config import ModelConfig, TrainConfig

    torch.manual_seed(0)
    mc = ModelConfig(channels=(8, 16, 24, 32), depths=(1, 1, 1, 1), fpn_dim=16, query_dim=32, tile_size=64,
                     input_size=64, classes=("water", "building", "road"), class_memory=True, semantic_aux=True,
                     relation_anchor=True, spatial_prior=True)
    model = build_model(mc).train()
    b = 4
    target = torch.zeros(b, 1, 64, 64)
    target[0, :, 8:30, 10:40] = 1
    target[1, :, 40:60, 5:20] = 1
    target[2, :, :, 30:34] = 1
    inputs = dict(tokens=torch.randn(b, 9, 384), token_mask=torch.ones(b, 9, dtype=torch.bool),
                  task=torch.full((b,), task), points=torch.rand(b, 3, 2),
                  point_labels=torch.tensor([[1, -1, -1]] * b), box=torch.tensor([[0.1, 0.1, 0.7, 0.6]] * b),
                  box_valid=torch.ones(b, dtype=torch.bool))
    batch = {"target": target, "empty": torch.tensor([False, False, False, True]),
             "category": torch.tensor([0, 1, 2, -1])}
    image = torch.randn(b, 3, 64, 64)
    tc = TrainConfig()

    def step(amp: bool) -> tuple[dict, list]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(image, **inputs)
        losses = compute_losses(out, batch, tc)
        losses["total"].backward()
        return losses, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref, g32 = step(False)
    low, g16 = step(True)
    assert set(low) == set(ref) and {"semantic", "aux", "class_mem"} <= set(low)
    for k in ref:
        assert low[k].dtype == torch.float32 and torch.isfinite(low[k])
        assert abs(low[k].item() - ref[k].item()) <= 0.05 * abs(ref[k].item()) + 1e-3, k
    assert len(g16) == len(g32) and all(torch.isfinite(g).all() for g in g16)


def test_semantic_loss_labels_only_target_pixels_with_their_category():
    from geoseg.unified.train import semantic_loss

    target = torch.zeros(3, 1, 8, 8)
    target[0, :, :4] = 1   # class 2 on the top half
    target[1, :, 4:] = 1   # class 0 on the bottom half
    target[2, :, :] = 1    # an empty-target row (flag) is never labelled
    category = torch.tensor([2, 0, 1])
    nonempty = torch.tensor([True, True, False])
    right = torch.full((3, 3, 8, 8), -10.0)
    right[0, 2, :4] = 10
    right[1, 0, 4:] = 10
    wrong = right.clone()
    wrong[2] = 0
    wrong[0, 2, :4], wrong[0, 1, :4] = -10, 10
    assert semantic_loss(right, target, category, nonempty) < 1e-3
    assert semantic_loss(wrong, target, category, nonempty) > 5
    # the third row is ignored: changing its logits does not move the loss
    other = right.clone()
    other[2] = torch.randn(3, 8, 8)
    same = semantic_loss(right, target, category, nonempty)
    assert torch.isclose(semantic_loss(other, target, category, nonempty), same)


def test_sampler_no_target_share_raises_the_share_of_empty_text_rows(tiny_shard):
    import random

    from geoseg.unified.data import load_rows
    from geoseg.unified.train import TASKS, TaskSampler

    rows = load_rows(tiny_shard, "train")
    ref = [r for r in rows if r["task"] == "referring"]
    natural = sum(r["empty_target"] for r in ref) / len(ref)
    assert 0 < natural < 0.5
    only_ref = {"interactive": 0.0, "referring": 1.0, "reasoning": 0.0}
    picks = TaskSampler(rows, seed=0, no_target_share=0.5).batch(4000, only_ref)
    share = sum(r["empty_target"] for r in picks) / len(picks)
    assert share == pytest.approx(0.5 + 0.5 * natural, abs=0.03)
    # share 0 keeps the old draw exactly (runs and resumes made before the option reproduce)
    mix = {"interactive": 0.4, "referring": 0.4, "reasoning": 0.2}
    got = [r["sample_id"] for r in TaskSampler(rows, seed=7).batch(64, mix)]
    rng = random.Random(7)
    by_task = {t: [r for r in rows if r["task"] == t] for t in TASKS}
    tasks = rng.choices(list(TASKS), weights=[mix[t] for t in TASKS], k=64)
    assert got == [rng.choice(by_task[t])["sample_id"] for t in tasks]


def test_val_shards_take_validation_from_another_build(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.data import load_rows
    from geoseg.unified.train import train

    from .conftest import _load_data_module

    other = _load_data_module().write_shard(tmp_path / "other", n_train=0, n_val=7, seed=3)
    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=2, val_shards=str(other))
    train(cfg, device="cpu", text_cache=str(text_cache_path))
    log = (tmp_path / "run" / "train.log").read_text()
    n_other, n_own = len(load_rows(other, "val")), len(load_rows(tiny_shard, "val"))
    assert n_other != n_own
    assert f", {n_other} val rows" in log


def test_select_on_tuned_picks_epochs_at_the_tuned_thresholds(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=2, steps_per_epoch=3, select_on="tuned", shadow_aug=0.5)
    summary = train(cfg, device="cpu", text_cache=str(text_cache_path))
    hist = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    tuned = [h["val_tuned"] for h in hist]
    assert len(tuned) == 2 and all(set(t["decision"]["mask_thresholds"]) == {"interactive", "referring", "reasoning"}
                                   for t in tuned)
    # tuning can only match or beat the fixed 0.5 rule on the same rows, and it is what selects
    fixed = [sum(h["val"][t]["gIoU"] for t in ("interactive", "referring", "reasoning")) / 3 for h in hist]
    assert all(t["score"] >= f - 0.01 for t, f in zip(tuned, fixed))  # the score is rounded to 0.01
    assert summary["best"] == pytest.approx(max(t["score"] for t in tuned), abs=0.01)
    best = read_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert best["val_tuned"]["score"] == pytest.approx(summary["best"], abs=0.01)
    assert "at the tuned thresholds" in (tmp_path / "run" / "train.log").read_text()


def test_ema_validates_and_saves_the_average_of_the_step_weights(tiny_shard, text_cache_path, tmp_path):
    """With train.ema the saved weights are torch's EMA of the weights after each step, raw ones kept for resume.

    One step from the same seed gives w1; two steps give raw w2 and, at decay 0.5, an average of
    0.5 w1 + 0.5 w2 (the average starts as a copy of the first step's weights).
    """
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import train

    train(tiny_config(tiny_shard, tmp_path / "one", epochs=1, steps_per_epoch=1), device="cpu",
          text_cache=str(text_cache_path))
    train(tiny_config(tiny_shard, tmp_path / "two", epochs=1, steps_per_epoch=2, ema=0.5), device="cpu",
          text_cache=str(text_cache_path))
    w1 = read_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    two = read_checkpoint(tmp_path / "two" / "last.pt")
    w2, avg = two["train_state"]["raw_state_dict"], two["state_dict"]
    floats = [k for k, v in w2.items() if v.is_floating_point()]
    assert any(not torch.equal(w1[k], w2[k]) for k in floats)
    for k in floats:  # parameters and BatchNorm statistics alike
        torch.testing.assert_close(avg[k], 0.5 * w1[k] + 0.5 * w2[k], rtol=1e-4, atol=1e-6, msg=k)
    best = read_checkpoint(tmp_path / "two" / "best.pt")["state_dict"]
    assert all(torch.equal(best[k], avg[k]) for k in floats)  # what was validated is what best.pt holds

    # resume continues from the raw weights with the average restored
    summary = train(tiny_config(tiny_shard, tmp_path / "two", epochs=2, steps_per_epoch=2, ema=0.5), resume=True,
                    device="cpu", text_cache=str(text_cache_path))
    assert summary["steps"] == 4
    again = read_checkpoint(tmp_path / "two" / "last.pt")
    w4 = again["train_state"]["raw_state_dict"]
    assert any(not torch.equal(again["state_dict"][k], w4[k]) for k in floats)


def test_freeze_keeps_the_named_modules_and_their_batchnorm_statistics(trained_run, tiny_shard, text_cache_path,
                                                                        tmp_path):
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import train

    src = trained_run["out"] / "best.pt"
    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=3, init_from=str(src),
                      freeze=("backbone",))
    train(cfg, device="cpu", text_cache=str(text_cache_path))
    before, after = read_checkpoint(src)["state_dict"], read_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    frozen = [k for k in after if k.startswith("backbone.")]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("decoder."))
    assert "frozen backbone: training" in (tmp_path / "run" / "train.log").read_text()


def test_freeze_of_an_unknown_module_is_a_clear_error(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=1, freeze=("backbon",))
    with pytest.raises(InputError, match="backbon.*backbone"):
        train(cfg, device="cpu", text_cache=str(text_cache_path))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "whole_model"])
def test_backbone_weights_load_user_encoder_weights(tiny_shard, text_cache_path, tmp_path, layout):
    """train.backbone_weights starts the image encoder from a user's file (three usual layouts); with
    freeze: [backbone] the trained checkpoint keeps exactly those weights."""
    from geoseg.unified.build import build_model
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=2, freeze=("backbone",))
    torch.manual_seed(123)
    donor = build_model(cfg.model)
    theirs = donor.backbone.state_dict()
    payload = {"bare": theirs, "state_dict": {"state_dict": theirs}, "whole_model": donor.state_dict()}[layout]
    torch.save(payload, tmp_path / "enc.pt")
    cfg.train.backbone_weights = str(tmp_path / "enc.pt")
    train(cfg, device="cpu", text_cache=str(text_cache_path))
    got = read_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    assert all(torch.equal(got[f"backbone.{k}"], v) for k, v in theirs.items())
    assert "loaded backbone weights" in (tmp_path / "run" / "train.log").read_text()


def test_backbone_weights_of_another_shape_is_a_clear_error(tiny_shard, text_cache_path, tmp_path):
    import dataclasses

    from geoseg.unified.build import build_model
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=1)
    other = build_model(dataclasses.replace(cfg.model, channels=(8, 16, 24, 32)))  # narrower encoder
    torch.save(other.backbone.state_dict(), tmp_path / "enc.pt")
    cfg.train.backbone_weights = str(tmp_path / "enc.pt")
    with pytest.raises(InputError, match="backbone_weights .* does not fit the configured backbone"):
        train(cfg, device="cpu", text_cache=str(text_cache_path))
    cfg.train.backbone_weights = str(tmp_path / "nothing.pt")
    with pytest.raises(InputError, match="does not exist"):
        train(cfg, device="cpu", text_cache=str(text_cache_path))


def test_map_image_path_replaces_the_longest_whole_component_prefix():
    from geoseg.unified.data import map_image_path

    m = {"/data": "/mnt/d", "/data/dubai/": "/fast/dubai"}
    assert map_image_path("/data/dubai/tile_1/a.jpg", m) == "/fast/dubai/tile_1/a.jpg"
    assert map_image_path("/data/other/b.tif", m) == "/mnt/d/other/b.tif"
    assert map_image_path("/database/c.tif", m) == "/database/c.tif"  # not a component boundary
    assert map_image_path("/elsewhere/c.tif", m) == "/elsewhere/c.tif"


def test_training_finds_moved_images_through_image_path_map(text_cache_path, tmp_path):
    import shutil

    from geoseg.unified.train import train

    from .conftest import _load_data_module

    before = _load_data_module().write_shard(tmp_path / "built", n_train=3, n_val=1, seed=5)
    after = tmp_path / "moved"
    shutil.move(str(before), str(after))
    with pytest.raises(InputError, match="image_path_map"):  # the rows still point at the old folder
        train(tiny_config(after, tmp_path / "run0", epochs=1, steps_per_epoch=1), device="cpu",
              text_cache=str(text_cache_path))
    cfg = tiny_config(after, tmp_path / "run1", epochs=1, steps_per_epoch=2, image_path_map={str(before): str(after)})
    summary = train(cfg, device="cpu", text_cache=str(text_cache_path))
    assert summary["steps"] == 2 and (tmp_path / "run1" / "best.pt").is_file()
