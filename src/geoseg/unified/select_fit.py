"""Fit the instance selector of a trained unified model and tune when to use it.

``geoseg train --fit-selector`` runs this before exporting: the (frozen) network answers every
referring and reasoning row of the run's ``train`` split; each answer is cut into components
(:mod:`geoseg.unified.selection`), each component is labelled by its overlap with the row's
target, and :class:`geoseg.models.selector.InstanceSelector` learns to score them from the
instruction (binary cross-entropy, a few seconds per epoch). The selection threshold is then
chosen per task on the ``val`` split by gIoU — including "off" when selecting does not help
there — so the benchmark is never looked at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.device import resolve_device
from geoseg.errors import GeosegError, InputError
from geoseg.models.selector import InstanceSelector
from geoseg.progress import progress
from geoseg.unified.data import TileCache, load_rows, load_val_rows, row_text, training_tiles
from geoseg.unified.decision import Decision
from geoseg.unified.evaluate import iter_outputs, sample_iou
from geoseg.unified.selection import (
    Components,
    apply_selection,
    component_features,
    feature_dim,
    split_components,
    target_labels,
)

log = logging.getLogger(__name__)

TEXT_TASKS = ("referring", "reasoning")
TAU_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class Example:
    """One row's answer cut into components, ready for the selector."""

    row: dict
    text: np.ndarray  # sentence embedding
    comps: Components
    feats: np.ndarray
    decided: np.ndarray  # the answer before selection
    gt: np.ndarray


def sentence_vector(tokens: torch.Tensor) -> np.ndarray:
    """Mean of an instruction's token embeddings (the sentence embedding the selector reads)."""
    return tokens.float().mean(0).numpy()


@torch.no_grad()
def iter_examples(model: torch.nn.Module, rows: Sequence[dict], tiles: TileCache, texts: dict[str, torch.Tensor],
                  classes: Sequence[str], mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                  decision: Decision, batch_size: int = 16, desc: str = "components") -> Iterator[Example]:
    """Answer every row with the network and its decision rule, and cut each answer into components."""
    for r, logit, presence, gt, sem in iter_outputs(model, rows, tiles, texts, classes, mean, std, device,
                                                    batch_size, desc, semantic=True):
        prob = torch.sigmoid(logit).cpu().numpy()
        decided = prob >= decision.mask_threshold(r["task"])
        if presence < decision.presence_threshold:
            decided[:] = False
        comps = split_components(decided)
        yield Example(r, sentence_vector(texts[row_text(r)]), comps, component_features(comps, prob, sem), decided, gt)


def _pad(examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    n = max(max(len(f) for _, f, _ in examples), 1)
    d = examples[0][1].shape[1]
    text = torch.from_numpy(np.stack([t for t, _, _ in examples]))
    feats = torch.zeros(len(examples), n, d)
    labels = torch.zeros(len(examples), n)
    valid = torch.zeros(len(examples), n, dtype=torch.bool)
    for i, (_, f, y) in enumerate(examples):
        feats[i, : len(f)] = torch.from_numpy(f)
        labels[i, : len(f)] = torch.from_numpy(y)
        valid[i, : len(f)] = True
    return text, feats, labels, valid


def fit_selector(train: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int, epochs: int = 30,
                 batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> tuple[InstanceSelector, dict]:
    """Train a selector on ``(sentence vector, component features, component labels)`` triples.

    Feature scales are standardised with the training set's mean and spread, stored in the
    returned config so inference applies the same.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    allf = np.concatenate([f for _, f, _ in train])
    mu, sd = allf.mean(0), allf.std(0) + 1e-6
    data = [(t, (f - mu) / sd, y) for t, f, y in train]
    net = InstanceSelector(text_dim=data[0][0].shape[0], feat_dim=feature_dim(num_classes))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * ((len(data) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for epoch in progress(range(epochs), desc="fit selector"):
        order = torch.randperm(len(data), generator=g).tolist()
        total = 0.0
        for i in range(0, len(order), batch_size):
            text, feats, labels, valid = _pad([data[k] for k in order[i: i + batch_size]])
            logits = net(text, feats, valid)
            loss = F.binary_cross_entropy_with_logits(logits[valid], labels[valid])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(text)
        log.debug("selector epoch %d: loss %.4f", epoch + 1, total / len(data))
    net.eval()
    cfg = {"text_dim": int(data[0][0].shape[0]), "num_classes": int(num_classes),
           "feat_mean": mu.tolist(), "feat_std": sd.tolist()}
    return net, cfg


@torch.no_grad()
def score_components(net: InstanceSelector, cfg: dict, text: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Selection probabilities of one answer's components."""
    if len(feats) == 0:
        return np.zeros(0, np.float32)
    f = (feats - np.asarray(cfg["feat_mean"], np.float32)) / np.asarray(cfg["feat_std"], np.float32)
    logits = net(torch.from_numpy(text[None]).float(), torch.from_numpy(f[None]).float(),
                 torch.ones(1, len(f), dtype=torch.bool))
    return torch.sigmoid(logits[0]).numpy()


def tune_selection(net: InstanceSelector, cfg: dict, val: Sequence[Example], grid: Sequence[float] = TAU_GRID
                   ) -> tuple[dict[str, float | None], dict[str, dict]]:
    """Per task, the selection threshold with the best val gIoU, or None (off) when no threshold
    beats answering without selection."""
    choice: dict[str, float | None] = {}
    report: dict[str, dict] = {}
    for task in TEXT_TASKS:
        ex = [e for e in val if e.row["task"] == task]
        if not ex:
            continue
        base = np.array([sample_iou(e.decided, e.gt)[0] for e in ex])
        scores = [score_components(net, cfg, e.text, e.feats) for e in ex]
        per_tau = {}
        for tau in grid:
            ious = [sample_iou(apply_selection(e.comps, s, tau, e.decided), e.gt)[0] for e, s in zip(ex, scores)]
            per_tau[tau] = float(np.mean(ious))
        best = max(per_tau, key=per_tau.get)
        use = per_tau[best] > float(base.mean())
        choice[task] = best if use else None
        report[task] = {"n": len(ex), "gIoU_off": 100 * float(base.mean()), "gIoU_by_threshold":
                        {t: 100 * v for t, v in per_tau.items()}, "threshold": choice[task]}
    return choice, report


def selector_payload(net: InstanceSelector, cfg: dict, thresholds: dict[str, float | None], report: dict,
                     trained_on: str) -> dict[str, Any]:
    """What a checkpoint stores under ``"selector"``: weights, feature scaling, per-task thresholds
    (None = not used for that task) and how it was fitted and tuned."""
    return {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "config": dict(cfg),
            "thresholds": dict(thresholds), "report": report, "trained_on": trained_on}


def load_selector(data: dict[str, Any], source: str | Path = "checkpoint") -> tuple[InstanceSelector, dict, dict]:
    """Rebuild a stored selector: ``(network, config, thresholds)``; a malformed entry is an error."""
    try:
        cfg = data["config"]
        net = InstanceSelector(text_dim=int(cfg["text_dim"]), feat_dim=feature_dim(int(cfg["num_classes"])))
        net.load_state_dict({k: v.float() for k, v in data["state_dict"].items()})
        thresholds = {t: (None if v is None else float(v)) for t, v in data["thresholds"].items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise GeosegError(f"the instance selector stored in {source} is malformed ({type(exc).__name__}: {exc})",
                          "re-export the checkpoint with geoseg train --export-only --fit-selector") from exc
    net.eval()
    return net, cfg, thresholds


def fit_for_checkpoint(cfg: Any, checkpoint: str | Path, decision: Decision, device: str = "auto",
                       text_cache: str | None = None, epochs: int = 30) -> tuple[dict[str, Any], dict]:
    """Fit a selector for ``checkpoint`` on the run's ``train`` rows and tune it on its ``val`` rows.

    Args:
        cfg: the run's experiment config (shards, ``val_shards``, path map, batch size, threads).
        decision: the decision rule the exported bundle will answer with (candidates are cut from it).

    Returns:
        the bundle entry (:func:`selector_payload`) and the per-task tuning report.
    """
    from geoseg.unified.checkpoint import load_model
    from geoseg.unified.text_cache import encode_texts

    tc = cfg.train
    dev = resolve_device(device)
    if tc.threads and dev.type == "cpu":
        torch.set_num_threads(tc.threads)
    model, mc, payload = load_model(checkpoint, dev)
    if getattr(model.decoder, "semantic_head", None) is None:
        raise InputError(f"{checkpoint} has no semantic head, which the instance selector reads",
                         "fit the selector on a model trained with semantic_aux: true")
    train_rows = [r for r in load_rows(tc.shards, "train", path_map=tc.image_path_map)
                  if r["task"] in TEXT_TASKS and not r["empty_target"]]
    if not train_rows:
        raise InputError(f"the shards at {tc.shards} hold no referring or reasoning train rows with a target",
                         "build them with geoseg data build (tasks referring and reasoning)")
    val_rows = [r for r in load_val_rows(tc)[0] if r["task"] in TEXT_TASKS]
    mean = torch.tensor(payload["norm"]["mean"], dtype=torch.float32).to(dev)
    std = torch.tensor(payload["norm"]["std"], dtype=torch.float32).to(dev)
    num_classes = len(mc.classes)

    def examples(rows: list[dict], desc: str) -> Iterator[Example]:
        tiles = training_tiles(rows, mc.input_size, tc.tile_store)
        texts = encode_texts([row_text(r) for r in rows], Path(text_cache) if text_cache else None, None,
                             mc.max_tokens)
        yield from iter_examples(model, rows, tiles, texts, mc.classes, mean, std, dev, decision,
                                 tc.batch_size, desc)

    train = [(e.text, e.feats, target_labels(e.comps, e.gt)) for e in examples(train_rows, "selector train rows")
             if e.comps.count]
    if not train:
        raise InputError("the model answered no train row with a non-empty mask, so there is nothing to select from",
                         "fit the selector on a trained model")
    net, scfg = fit_selector(train, num_classes, epochs=epochs, seed=tc.seed)
    val = list(examples(val_rows, "selector val rows"))
    thresholds, report = tune_selection(net, scfg, val)
    where = f"fitted on {len(train)} train rows of {tc.shards}, tuned on {len(val)} val rows"
    return selector_payload(net, scfg, thresholds, report, where), report


__all__ = ["Example", "fit_for_checkpoint", "fit_selector", "iter_examples", "load_selector", "score_components",
           "selector_payload", "sentence_vector", "tune_selection"]
