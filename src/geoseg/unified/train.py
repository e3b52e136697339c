"""Training of the unified model: progressive multi-task schedule, BCE + Dice + no-target losses.

One call = one experiment (``configs/NAME.yaml``). The run

* reads train/val rows from the shards, decodes tiles once, encodes every distinct
  instruction once with the frozen text encoder (cached on disk for later runs);
* samples each batch's tasks from the progressive schedule: interactive only at
  first, referring and reasoning mixed in while the interactive weight decays to
  ``interactive_end`` (0.7) over the first ``ramp_frac`` of training;
* optimises BCE + Dice on the mask (Dice on non-empty targets only), BCE on the
  presence logit (no-target head), with the semantic head a per-pixel class loss on
  the target pixels, and with the class-wise memory an auxiliary pre-memory mask loss
  and a class-attention loss;
* uses autocast (bf16, else fp16 with a scaler) on CUDA, plain fp32 on the CPU;
* validates every epoch on a task-balanced val subset with the benchmark's metrics,
  keeps ``last.pt`` (with optimiser state, for ``--resume``) and ``best.pt``, and
  writes a readable ``train.log`` plus ``history.jsonl``; with ``ema`` set, what is
  validated and saved is an exponential moving average of the weights;
* honours a wall-clock budget (``max_minutes``): schedule and learning rate follow
  the larger of step progress and time progress, so a budgeted run still completes
  its whole schedule and ends with a validated checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from geoseg._version import __version__
from geoseg.device import resolve_device
from geoseg.errors import InputError, reason
from geoseg.folders import missing_folders, remove_empty_folders
from geoseg.models import TASK_IDS
from geoseg.unified.build import build_model
from geoseg.unified.checkpoint import save_checkpoint
from geoseg.unified.config import ExperimentConfig, ModelConfig, check_model, check_train
from geoseg.unified.config_checks import check_resume_train
from geoseg.unified.data import load_rows, load_val_rows, norm_stats, row_text, training_tiles
from geoseg.unified.decision import tune_with_presence
from geoseg.unified.encoder_id import in_use
from geoseg.unified.evaluate import EMPTY_RULE, balanced_subset, format_table, predict_rows, summarise
from geoseg.unified.export import export_checkpoint, tune_decision, val_records
from geoseg.unified.loader import BatchStream
from geoseg.unified.losses import compute_losses, dice_loss, forward_batch, semantic_loss
from geoseg.unified.run_folder import RUN_ARTEFACTS, check_out_dir, check_writable, write_history
from geoseg.unified.run_log import RunLog
from geoseg.unified.sampler import TaskSampler
from geoseg.unified.schedule import TASKS, lr_factor, task_weights
from geoseg.unified.start_weights import (
    ZERO_START_MODULES,
    as_float,
    check_arch,
    check_resume_encoder,
    freeze_modules,
    init_weights,
    load_backbone_weights,
    resume_checkpoint,
)
from geoseg.unified.text_cache import encode_texts_keyed

log = logging.getLogger(__name__)


def train(cfg: ExperimentConfig, resume: bool = False, device: str = "auto", text_cache: str | None = None,
          encoder_path: str | None = None) -> dict[str, Any]:
    """Run one experiment; returns a summary (paths, steps, minutes, best validation metrics).

    Every start-up check (settings, run folder, checkpoints to resume or start from, data)
    runs before the run folder is touched: a start that fails leaves the folder as it was
    (a fresh one is not created), and ``config.yaml`` / ``train.log`` are written only once
    training is about to begin.
    """
    tc, mc = cfg.train, cfg.model
    check_train(tc)  # again: a config built in code or changed by command-line overrides gets the same checks
    check_model(mc)
    out_dir = Path(tc.out_dir)
    check_out_dir(out_dir, resume)
    made = missing_folders(out_dir)  # folders a failed start must not leave
    started = False
    with RunLog() as run_log:  # start-up messages wait, and are shown and logged only if the start succeeds

        def begin(history: list[dict] | None) -> None:
            """All start-up checks passed: write the run folder's config.yaml and train.log (``history``
            rewrites history.jsonl to match the checkpoint resumed from)."""
            nonlocal started
            out_dir.mkdir(parents=True, exist_ok=True)
            # the settings this run used, its config's extends chain resolved (the checkpoints hold the same)
            (out_dir / "config.yaml").write_text(f"# resolved settings of experiment {cfg.name}, geoseg {__version__}\n"
                                                 + cfg.to_yaml())
            if history is not None:
                write_history(out_dir, history)
            run_log.begin(out_dir / "train.log", append=resume)
            started = True

        try:
            return _train(cfg, tc, mc, out_dir, resume, device, text_cache, encoder_path, begin)
        except BaseException:
            if not started and made:  # a failed start in a new folder leaves nothing behind
                if text_cache is None:
                    (out_dir / "text_cache.pt").unlink(missing_ok=True)
                remove_empty_folders(made)
            raise


def check_text_dim(texts: dict[str, torch.Tensor], mc: ModelConfig, cache_path: Path) -> None:
    """One line when the instruction embeddings are not ``model.text_dim`` wide (another text encoder, or a
    cache written by one): the first training step would fail in a matrix product otherwise."""
    dims = sorted({int(e.shape[-1]) for e in texts.values()})
    if dims and dims != [mc.text_dim]:
        raise InputError(f"model.text_dim = {mc.text_dim}, but the instruction embeddings (text encoder, cache "
                         f"{cache_path}) are {' / '.join(map(str, dims))} wide",
                         f"set model.text_dim to the encoder's width ({dims[-1]}), or use the text encoder and "
                         "cache this model was set up for")


def _train(cfg, tc, mc, out_dir: Path, resume: bool, device: str, text_cache: str | None,
           encoder_path: str | None, begin) -> dict[str, Any]:
    dev = resolve_device(device)
    if tc.threads and dev.type == "cpu":
        torch.set_num_threads(tc.threads)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    log.info("experiment %s: geoseg %s, device %s, %d threads", cfg.name, __version__, dev, torch.get_num_threads())

    # the network, and every checkpoint it continues or starts from, checked before the data is read and
    # decoded (minutes on a full run): a mismatch fails in seconds, with the run folder untouched
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    model = build_model(mc).to(dev)
    frozen = freeze_modules(model, tuple(tc.freeze))
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay)
    norm: dict | None = None
    payload: dict[str, Any] = {}
    st: dict[str, Any] = {}
    if resume:
        payload = resume_checkpoint(last_path, model, mc)
        check_resume_encoder(payload, last_path, in_use(encoder_path), "the text encoder in use")
        saved = (payload.get("meta") or {}).get("config") or {}
        if isinstance(saved.get("train"), dict):  # the train section the run was started with
            check_resume_train(saved["train"], tc, str(last_path))
        st = payload["train_state"]
        # with an EMA, state_dict holds the average (what was validated) and raw_state_dict the trained weights
        model.load_state_dict(as_float(st.get("raw_state_dict") or payload["state_dict"]))
        try:
            opt.load_state_dict(st["optimizer"])
        except (ValueError, KeyError) as exc:
            raise InputError(f"--resume: the optimiser state in {last_path} does not fit this run ({reason(exc)})",
                             "keep train.freeze as the run was started with, or start afresh in another "
                             "train.out_dir") from exc
        norm = payload["norm"]
    else:
        if tc.init_from:
            norm = init_weights(model, tc.init_from, mc)
        if tc.backbone_weights:
            load_backbone_weights(model, tc.backbone_weights)

    t0 = time.perf_counter()
    train_rows = load_rows(tc.shards, "train", path_map=tc.image_path_map)
    if not train_rows:
        raise InputError(f"the shards at {tc.shards} hold no train rows", "build them with geoseg data build")
    val_rows = balanced_subset(load_val_rows(tc)[0], tc.val_samples, seed=tc.seed)
    log.info("data: %d train rows %s, %d val rows", len(train_rows), dict(Counter(r["task"] for r in train_rows)),
             len(val_rows))
    tiles = training_tiles(train_rows + val_rows, mc.input_size, tc.tile_store)
    cache_path = Path(text_cache) if text_cache else out_dir / "text_cache.pt"
    texts, text_encoder = encode_texts_keyed([row_text(r) for r in train_rows + val_rows], cache_path, encoder_path,
                                             mc.max_tokens)
    check_text_dim(texts, mc, cache_path)
    if resume:  # again with the embeddings' own record: a machine without an encoder trains from the cache's
        check_resume_encoder(payload, last_path, text_encoder, f"the encoder of text cache {cache_path}")
    log.info("prepared %d tiles and %d instruction embeddings in %.0f s", len(tiles.tiles), len(texts),
             time.perf_counter() - t0)

    if norm is None:
        norm = norm_stats([tiles.get(r) for r in train_rows[:: max(1, len(train_rows) // 400)]])
    mean = torch.tensor(norm["mean"], dtype=torch.float32)
    std = torch.tensor(norm["std"], dtype=torch.float32)
    if frozen:
        log.info("frozen %s: training %d of %d parameters", ", ".join(tc.freeze), sum(q.numel() for q in trainable),
                 sum(q.numel() for q in model.parameters()))
    use_amp = tc.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    sampler = TaskSampler(train_rows, tc.seed, tc.no_target_share)
    aug_rng = np.random.default_rng(tc.seed)
    schedule = {"frac": 0.0}
    total_steps = tc.epochs * tc.steps_per_epoch
    budget_s = tc.max_minutes * 60
    # -inf: the first validated epoch is always best, even scored by minus its train loss (no val rows)
    step, epoch, elapsed_before, best = 0, 0, 0.0, -math.inf
    history: list[dict] = []
    if resume:
        step, epoch, elapsed_before, best = st["step"], st["epoch"], st["elapsed_s"], st["best"]
        sampler.set_state(st["sampler"])
        torch.set_rng_state(st["torch_rng"])
        if "aug_rng" in st:  # runs saved before it was kept restart their augmentation draws from the seed
            aug_rng.bit_generator.state = st["aug_rng"]
        history = st.get("history", [])
    # the weight average is validated and saved in place of the raw weights (torch's EMA, buffers included,
    # so BatchNorm statistics follow the averaged weights)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
           if tc.ema > 0 else None)
    if ema is not None and resume and "raw_state_dict" in st:
        ema.module.load_state_dict(as_float(payload["state_dict"]))
        ema.n_averaged.fill_(step)
    eval_model = ema.module if ema is not None else model

    begin(history if resume and "history" in st else None)  # start-up passed: the run folder is written from here
    if resume:
        log.info("resumed from %s at epoch %d, step %d", last_path, epoch, step)

    stream = BatchStream(
        train_rows, lambda: sampler.batch(tc.batch_size, task_weights(tc, schedule["frac"]), tc.prompts_per_image),
        tiles, texts, mc.classes, mean, std, tc.augment, tc.shadow_aug, tc.prompts_per_image, aug_rng,
        num_workers=tc.num_workers, seed=tc.seed, pin_memory=dev.type == "cuda",
        state=st.get("stream") if resume else None)  # runs saved before it was kept restart the jobs' seeds
    task_names = {v: k for k, v in TASK_IDS.items()}
    start = time.perf_counter()

    def frac_now() -> float:
        f = step / total_steps
        if budget_s > 0:
            f = max(f, (elapsed_before + time.perf_counter() - start) / budget_s)
        return min(f, 1.0)

    # what an epoch's score (and so "best") is: without val rows, minus the epoch's mean train loss
    best_of = ("val_tuned" if tc.select_on == "tuned" else "val") if val_rows else "train_loss"
    meta_base = {"experiment": cfg.name, "config": cfg.to_dict(), "shards": str(tc.shards),
                 "train_rows": len(train_rows), "empty_rule": EMPTY_RULE}
    summary: dict[str, Any] = {"out_dir": str(out_dir), "best": best, "best_of": best_of, "steps": step,
                               "epochs": epoch,
                               "last_metrics": history[-1]["val"] if history else {},
                               "minutes": round(elapsed_before / 60, 1)}
    if resume and not (epoch < tc.epochs and frac_now() < 1.0):
        log.info("the run already finished (epoch %d of %d, step %d): nothing to train; raise train.epochs or "
                 "train.max_minutes to continue it", epoch, tc.epochs, step)
    while epoch < tc.epochs and frac_now() < 1.0:
        model.train()
        for m in frozen:  # BatchNorm statistics stay those of the loaded weights
            m.eval()
        agg: dict[str, float] = Counter()
        seen = Counter()
        t_ep = time.perf_counter()
        n_ep = 0
        for _ in range(tc.steps_per_epoch):
            frac = frac_now()
            if frac >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = tc.lr * lr_factor(step, frac, tc.warmup_steps)
            schedule["frac"] = frac
            batch = stream.next()
            seen.update(task_names[int(t)] for t in batch["task"])
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                out = forward_batch(model, batch)
            losses = compute_losses(out, batch, tc)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            for k, v in losses.items():
                agg[k] += float(v.detach())
            step += 1
            n_ep += 1
            if step % tc.log_every == 0:
                w = task_weights(tc, frac)
                extra = "".join(f" {k} {agg[k] / n_ep:.3f}" for k in ("semantic", "aux", "class_mem") if k in agg)
                log.info("epoch %d step %d | loss %.3f (bce %.3f dice %.3f presence %.3f%s) | lr %.2e | "
                         "interactive weight %.2f | %.1f samples/s", epoch + 1, step, agg["total"] / n_ep,
                         agg["bce"] / n_ep, agg["dice"] / n_ep, agg["presence"] / n_ep, extra,
                         opt.param_groups[0]["lr"], w["interactive"], n_ep * tc.batch_size / (time.perf_counter() - t_ep))
        epoch += 1
        tuned_select = tc.select_on == "tuned" and bool(val_rows)
        records = predict_rows(eval_model, val_rows, tiles, texts, mc.classes, mean.to(dev), std.to(dev), dev,
                               batch_size=tc.batch_size, with_curves=tuned_select) if val_rows else []
        metrics = summarise(records) if records else {}
        task_g = [metrics[t]["gIoU"] for t in TASKS if t in metrics]
        score = float(np.mean(task_g)) if task_g else -float(agg["total"] / max(n_ep, 1))
        tuned: dict[str, Any] = {}
        if tuned_select:
            decision, report = tune_with_presence(records)
            tuned = {"score": round(float(np.mean([r["gIoU@threshold"] for r in report.values()])), 2),
                     "decision": decision.to_dict()}
            log.info("epoch %d: val mean task gIoU %.1f at thresholds 0.5, %.1f at the tuned thresholds %s "
                     "(presence %.2f): selection uses the tuned score", epoch, score, tuned["score"],
                     decision.mask_thresholds, decision.presence_threshold)
            score = tuned["score"]
        elapsed = elapsed_before + time.perf_counter() - start
        entry = {"epoch": epoch, "step": step, "minutes": round(elapsed / 60, 2),
                 "train_loss": round(agg["total"] / max(n_ep, 1), 4), "task_mix": dict(seen),
                 "val": {k: {m: (round(v, 2) if isinstance(v, float) else v) for m, v in d.items()}
                         for k, d in metrics.items()}}
        if tuned:
            entry["val_tuned"] = tuned
        history.append(entry)
        with open(out_dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        scored = (f"val {describe_score(score, best_of)}" + (" (0.5 thresholds)" if best_of == "val" else "")
                  if val_rows else "no val rows (the epoch is scored by its train loss)")
        log.info("epoch %d done at step %d (%.1f min): train loss %.3f, %s\n%s", epoch, step, elapsed / 60,
                 entry["train_loss"], scored, format_table(metrics) if metrics else "(no val rows)")
        meta = {**meta_base, "epoch": epoch, "step": step, "train_minutes": round(elapsed / 60, 1),
                "val_metrics": metrics, "device": str(dev), **({"val_tuned": tuned} if tuned else {})}
        state = {"optimizer": opt.state_dict(), "step": step, "epoch": epoch, "elapsed_s": elapsed,
                 "best": max(best, score), "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                 "aug_rng": aug_rng.bit_generator.state, "stream": stream.state(),
                 "history": history}
        if ema is not None:
            state["raw_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(last_path, eval_model, mc, norm, meta, train_state=state, text_encoder=text_encoder)
        if score > best:
            best = score
            save_checkpoint(best_path, eval_model, mc, norm, meta, text_encoder=text_encoder)
            log.info("new best (%s) saved to %s", describe_score(best, best_of), best_path)
        summary = {"out_dir": str(out_dir), "best": best, "best_of": best_of, "last_metrics": metrics, "steps": step,
                   "epochs": epoch, "minutes": round(elapsed / 60, 1)}
    stream.close()
    log.info("finished: %d steps, %d epochs, %.1f min, best %s", step, epoch, summary.get("minutes", 0.0),
             describe_score(best, best_of))
    return summary


def describe_score(score: float, best_of: str) -> str:
    """An epoch score in words: ``"mean task gIoU 41.3"`` (``" (tuned thresholds)"`` added with ``select_on:
    tuned``), or for a run without val rows, which scores an epoch by minus its train loss, ``"train loss 2.304
    (no val rows)"``; ``best_of`` is a run summary's ``"best_of"``."""
    if not math.isfinite(score):
        return "none (no epoch finished)"
    if best_of == "train_loss":
        return f"train loss {-score:.3f} (no val rows)"
    return f"mean task gIoU {score:.1f}" + (" (tuned thresholds)" if best_of == "val_tuned" else "")


# what the rest of geoseg, the tests and the benchmarks import from here: the pieces of a run now live
# in their own modules (schedule, losses, sampler, run_folder, start_weights, export)
__all__ = ["RUN_ARTEFACTS", "TASKS", "ZERO_START_MODULES", "TaskSampler", "check_arch", "check_out_dir",
           "check_text_dim", "describe_score", "check_writable", "compute_losses", "dice_loss", "export_checkpoint", "forward_batch",
           "freeze_modules", "init_weights", "load_backbone_weights", "lr_factor", "resume_checkpoint",
           "semantic_loss", "task_weights", "train", "tune_decision", "val_records"]
