"""After training: a checkpoint's validation records, its tuned decision thresholds, the shipped bundle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from geoseg.device import resolve_device
from geoseg.errors import InputError
from geoseg.unified.checkpoint import save_checkpoint
from geoseg.unified.config import ExperimentConfig
from geoseg.unified.data import load_val_rows, row_text, training_tiles
from geoseg.unified.decision import Decision, tune_with_presence
from geoseg.unified.evaluate import predict_rows
from geoseg.unified.text_cache import encode_texts_keyed

log = logging.getLogger(__name__)


def export_checkpoint(src: str | Path, dst: str | Path, decision: Decision | None = None,
                      selector: dict[str, Any] | None = None) -> Path:
    """Copy a run's checkpoint without optimiser state and in float16 (the shipped bundle).

    Args:
        decision: per-task thresholds (from :func:`tune_decision`) stored in the bundle's
            ``meta["decision"]``; None keeps whatever the source carries.
        selector: a fitted instance selector (:func:`geoseg.unified.select_fit.fit_for_checkpoint`);
            None keeps the source's, if any.

    A source trained with another text encoder than the one in use is refused in one line (by
    :func:`~geoseg.unified.checkpoint.load_model`); the bundle keeps the source's encoder record.
    """
    from geoseg.unified.checkpoint import load_model

    model, cfg, payload = load_model(src)
    meta = dict(payload.get("meta", {}))
    if decision is not None:
        meta["decision"] = decision.to_dict()
    if selector is None:
        selector = payload.get("selector")
    return save_checkpoint(dst, model, cfg, payload["norm"], meta, half=True, selector=selector,
                           text_encoder=payload.get("text_encoder"))


def check_texts(payload: dict[str, Any], checkpoint: str | Path, encoder: dict | None, text_cache: str | None) -> None:
    """One line when the instruction embeddings (``encoder``: their record, e.g. a packed cache's on a machine
    without the encoder) come from another encoder than the checkpoint was trained with."""
    from geoseg.unified.encoder_id import describe, differ, legacy_record

    trained = payload.get("text_encoder") or legacy_record()
    if differ(trained, encoder):
        raise InputError(f"checkpoint {checkpoint} was trained with text encoder {describe(trained)}, but the "
                         f"instruction embeddings (text cache {text_cache}) come from {describe(encoder)}",
                         "pass the text cache written with the checkpoint's encoder")


def val_records(cfg: ExperimentConfig, checkpoint: str | Path, device: str = "auto",
                text_cache: str | None = None, desc: str = "validate") -> tuple[list[dict], str]:
    """Predict every validation row of the run's shards with ``checkpoint``; each record carries
    its IoU curve over the decision grid (see :func:`geoseg.unified.evaluate.predict_rows`).

    Why all rows and curves: one pass serves threshold tuning and row-by-row comparisons of
    models, each at its own thresholds (:func:`geoseg.unified.decision.record_ious`).

    Returns:
        the records and a description of the rows (``"N val rows of SHARDS"``).
    """
    from geoseg.unified.checkpoint import load_model

    tc = cfg.train
    dev = resolve_device(device)
    if tc.threads and dev.type == "cpu":
        torch.set_num_threads(tc.threads)
    model, mc, payload = load_model(checkpoint, dev)
    rows, val_shards = load_val_rows(tc)
    if not rows:
        raise InputError(f"the shards at {val_shards} hold no val rows to validate on",
                         "build them with geoseg data build (it writes a val split)")
    tiles = training_tiles(rows, mc.input_size, tc.tile_store)
    texts, encoder = encode_texts_keyed([row_text(r) for r in rows], Path(text_cache) if text_cache else None, None,
                                        mc.max_tokens)
    check_texts(payload, checkpoint, encoder, text_cache)
    mean = torch.tensor(payload["norm"]["mean"], dtype=torch.float32).to(dev)
    std = torch.tensor(payload["norm"]["std"], dtype=torch.float32).to(dev)
    records = predict_rows(model, rows, tiles, texts, mc.classes, mean, std, dev, batch_size=tc.batch_size,
                           with_curves=True, desc=desc)
    return records, f"{len(rows)} val rows of {val_shards}"


def tune_decision(cfg: ExperimentConfig, checkpoint: str | Path, device: str = "auto",
                  text_cache: str | None = None) -> tuple[Decision, dict[str, dict[str, float]]]:
    """Tune the per-task mask thresholds and the presence threshold of ``checkpoint`` on every
    validation row of the run's shards.

    The benchmark is never looked at: the rows are the shards' ``val`` split (for the default
    model, Dubai ``tile_6``). See :mod:`geoseg.unified.decision` for why.

    Returns:
        the decision and a per-task report (gIoU at 0.5 and at the chosen thresholds, no-target accuracy).
    """
    records, where = val_records(cfg, checkpoint, device, text_cache, desc="tune decision")
    decision, report = tune_with_presence(records, tuned_on=where)
    for task, r in report.items():
        log.debug("decision %s: mask threshold %.2f, presence %.2f (val gIoU %.1f at 0.5 -> %.1f, %d rows)", task,
                 r["threshold"], r["presence_threshold"], r["gIoU@0.5"], r["gIoU@threshold"], r["n"])
    return decision, report


__all__ = ["check_texts", "export_checkpoint", "tune_decision", "val_records"]
