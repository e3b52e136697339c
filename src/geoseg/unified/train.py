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

import dataclasses
import json
import logging
import logging.handlers
import math
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from geoseg._version import __version__
from geoseg.device import resolve_device
from geoseg.errors import GeosegError, InputError, reason
from geoseg.models import TASK_IDS
from geoseg.unified.build import build_model
from geoseg.unified.checkpoint import read_checkpoint, save_checkpoint
from geoseg.unified.config import ExperimentConfig, ModelConfig, check_train
from geoseg.unified.data import (
    MODEL_INPUTS,
    load_rows,
    load_val_rows,
    norm_stats,
    orientation_free,
    row_text,
    tile_key,
    training_tiles,
)
from geoseg.unified.decision import Decision, tune_with_presence
from geoseg.unified.evaluate import EMPTY_RULE, balanced_subset, format_table, predict_rows, summarise
from geoseg.unified.loader import BatchStream
from geoseg.unified.text_cache import encode_texts

log = logging.getLogger(__name__)

TASKS = tuple(TASK_IDS)
#: modules a fine-tune may add to a checkpoint's network: training-only heads, or outputs that start at zero
ZERO_START_MODULES = ("decoder.semantic_head.", "decoder.spatial_prior.", "decoder.anchor.")
#: files that make a folder a run: a fresh start there would overwrite them (``--resume`` continues them)
RUN_ARTEFACTS = ("last.pt", "best.pt", "history.jsonl")


def task_weights(cfg_train, frac: float) -> dict[str, float]:
    """Sampling weight of each task at training progress ``frac`` in [0, 1]."""
    if not cfg_train.progressive:
        return {t: 1 / 3 for t in TASKS}
    r = min(1.0, frac / max(cfg_train.ramp_frac, 1e-9))
    w_int = cfg_train.interactive_start + (cfg_train.interactive_end - cfg_train.interactive_start) * r
    rest = 1.0 - w_int
    return {"interactive": w_int, "referring": rest * (1 - cfg_train.reasoning_share),
            "reasoning": rest * cfg_train.reasoning_share}


def lr_factor(step: int, frac: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % following training progress."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice over the rows in ``keep`` (zero when none)."""
    if not keep.any():
        return logits.sum() * 0
    p = torch.sigmoid(logits[keep]).flatten(1)
    t = target[keep].flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def semantic_loss(sem: torch.Tensor, target: torch.Tensor, category: torch.Tensor, nonempty: torch.Tensor
                  ) -> torch.Tensor:
    """Cross-entropy of the per-pixel class head on each sample's target pixels, labelled with its category.

    Every row (interactive ones too) names the category of its target, so the pixels inside
    the target mask are labelled pixels of that class: a partial semantic-segmentation
    signal that teaches the backbone what water, buildings or roads look like.
    """
    t = F.interpolate(target, size=sem.shape[-2:], mode="area")[:, 0] > 0.5  # B×h×w
    ok = nonempty & (category >= 0)
    labels = torch.full(t.shape, -100, dtype=torch.long, device=sem.device)
    labels[t & ok[:, None, None]] = category[:, None, None].expand_as(t)[t & ok[:, None, None]]
    if not (labels >= 0).any():
        return sem.sum() * 0
    return F.cross_entropy(sem.float(), labels, ignore_index=-100)


def forward_batch(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training forward pass of a :func:`collate` batch: each tile encoded once, its pyramid
    shared by the rows ``image_of`` maps to it, every row decoded."""
    pyramid = [f[batch["image_of"]] for f in model.encode_image(batch["image"])]
    return model.decode(pyramid, *[batch[k] for k in MODEL_INPUTS])


def compute_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg_train) -> dict[str, torch.Tensor]:
    """All loss terms (and their weighted ``total``) for one batch."""
    target = batch["target"]
    nonempty = ~batch["empty"]
    logits = F.interpolate(out["logits"].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    if cfg_train.mask_loss_on_empty:
        bce = F.binary_cross_entropy_with_logits(logits, target)
    elif nonempty.any():  # no-target rows train the presence head only; their masks are left to it
        bce = F.binary_cross_entropy_with_logits(logits[nonempty], target[nonempty])
    else:
        bce = logits.sum() * 0
    losses = {
        "bce": bce,
        "dice": dice_loss(logits, target, nonempty),
        "presence": F.binary_cross_entropy_with_logits(out["presence"].float(), nonempty.float()),
    }
    total = cfg_train.bce_weight * losses["bce"] + cfg_train.dice_weight * losses["dice"] \
        + cfg_train.no_target_weight * losses["presence"]
    if "semantic_logits" in out:
        losses["semantic"] = semantic_loss(out["semantic_logits"], target, batch["category"], nonempty)
        total = total + cfg_train.semantic_weight * losses["semantic"]
    if "aux_logits" in out:
        aux = F.interpolate(out["aux_logits"].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        losses["aux"] = F.binary_cross_entropy_with_logits(aux, target) + dice_loss(aux, target, nonempty)
        att = out["class_attention"].float()  # B×K×h×w, sums to 1 over K
        t8 = F.interpolate(target, size=att.shape[-2:], mode="area")[:, 0] > 0.5
        cat = batch["category"]
        ok = nonempty & (cat >= 0)
        if ok.any():
            sel = att[ok, cat[ok]]  # n×h×w
            m = t8[ok]
            losses["class_mem"] = -(sel.clamp_min(1e-6).log() * m).sum() / m.sum().clamp_min(1)
        else:
            losses["class_mem"] = att.sum() * 0
        total = total + 0.5 * losses["aux"] + cfg_train.class_memory_weight * losses["class_mem"]
    losses["total"] = total
    return losses


class TaskSampler:
    """Draws batches whose task mix follows the schedule; rows uniformly within a task.

    With ``no_target_share`` > 0 a text-task pick comes from that task's no-target rows with this
    probability (they are 1-4 % of the engine's rows; too few and the presence head learns that
    a qualified instruction, "the leftmost body of water", always has a target).
    """

    def __init__(self, rows: list[dict], seed: int, no_target_share: float = 0.0) -> None:
        self.by_task = {t: [r for r in rows if r["task"] == t] for t in TASKS}
        self.empty = {t: [r for r in v if r["empty_target"]] for t, v in self.by_task.items() if t != "interactive"}
        self.no_target_share = no_target_share
        self.rng = random.Random(seed)
        self._by_tile: dict[tuple, dict[str, list[dict]]] | None = None  # (tile, flip-free only) → task → rows

    def _draw(self, rows: list[dict], empty: list[dict] | None) -> dict:
        """One of ``rows``, or with probability ``no_target_share`` one of their no-target ``empty`` rows."""
        if self.no_target_share > 0 and empty and self.rng.random() < self.no_target_share:
            return self.rng.choice(empty)
        return self.rng.choice(rows)

    def _pick(self, task: str) -> dict:
        return self._draw(self.by_task[task], self.empty.get(task))

    def _tasks(self, weights: dict[str, float], by_task: dict[str, list[dict]]) -> tuple[list[str], list[float]]:
        tasks = [t for t in TASKS if by_task.get(t) and weights.get(t, 0) > 0]
        if not tasks:
            tasks = [t for t in TASKS if by_task.get(t)]
        return tasks, [weights.get(t, 0) or 1e-9 for t in tasks]

    def _tile_pool(self, row: dict) -> dict[str, list[dict]]:
        """The rows of ``row``'s tile by task; only those without position words when ``row`` has none."""
        if self._by_tile is None:
            self._by_tile = defaultdict(dict)
            for task, rows in self.by_task.items():
                for r in rows:
                    for free in {False, orientation_free(r)}:
                        self._by_tile[(tile_key(r), free)].setdefault(task, []).append(r)
        return self._by_tile[(tile_key(row), orientation_free(row))]

    def batch(self, n: int, weights: dict[str, float], prompts_per_image: int = 1) -> list[dict]:
        """``n`` rows; with ``prompts_per_image`` = k > 1, ``n // k`` runs of k rows from one tile each.

        A run starts from a row drawn as usual; the other k − 1 come from the same tile, their task
        drawn by the same weights (and a no-target pick at the same share). When the first row's
        instruction allows flips, so must the rest (the group shares one augmented image).
        """
        tasks, w = self._tasks(weights, self.by_task)
        k = prompts_per_image
        if k <= 1:
            return [self._pick(t) for t in self.rng.choices(tasks, weights=w, k=n)]
        out: list[dict] = []
        for t in self.rng.choices(tasks, weights=w, k=n // k):
            first = self._pick(t)
            pool = self._tile_pool(first)
            group_tasks, gw = self._tasks(weights, pool)
            out.append(first)
            for t2 in self.rng.choices(group_tasks, weights=gw, k=k - 1):
                empty = [r for r in pool[t2] if r["empty_target"]] if t2 != "interactive" else None
                out.append(self._draw(pool[t2], empty))
        return out

    def state(self) -> Any:
        return self.rng.getstate()

    def set_state(self, s: Any) -> None:
        self.rng.setstate(_tuplify(s))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def check_writable(path: str | Path, what: str) -> None:
    """One line, before any work, when the file ``path`` (``what``: "--export", "train.out_dir") could not be written.

    :func:`geoseg.raster.writer.check_writable_folder` (an ancestor that is a file, a folder without
    write permission), then a real test: a nameless temporary file in the nearest existing folder,
    which catches what permission bits do not show (root in /proc, a read-only mount) and leaves nothing.
    """
    from geoseg.raster.writer import check_writable_folder

    check_writable_folder(str(path))
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise GeosegError(f"cannot write {what} {path}: {folder} takes no new files ({reason(exc)})",
                          "give a path in a folder you can write to") from exc


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse, in one line and before any work, a run folder this run cannot or must not write.

    It must be a folder this process can create or write in; a fresh start must not land in a
    folder that already holds a run (its checkpoints would be overwritten and ``history.jsonl``
    would mix two runs), and ``--resume`` needs the run's ``last.pt``. A folder with no run
    artefacts (say ``train.log`` of a start stopped before its first epoch) may be started in.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"train.out_dir {out_dir} is a file, not a folder", "set train.out_dir (or --out) to a folder")
    check_writable(out_dir / "last.pt", "train.out_dir")
    last = out_dir / "last.pt"
    if resume and not last.is_file():
        raise InputError(f"--resume given but {last} does not exist", "drop --resume to start afresh")
    found = [n for n in RUN_ARTEFACTS if (out_dir / n).exists()]
    if not resume and found:
        raise InputError(f"{out_dir} already holds a run ({' / '.join(found)})",
                         "use --resume to continue it, or another train.out_dir (--out)")


def _log_file(out_dir: Path, resume: bool) -> logging.Handler:
    h = logging.FileHandler(out_dir / "train.log", mode="a" if resume else "w")
    h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    h.setLevel(logging.INFO)
    return h


def _write_history(out_dir: Path, history: list[dict]) -> None:
    """``history.jsonl`` rewritten (atomically) to hold exactly ``history``."""
    tmp = out_dir / "history.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in history))
    os.replace(tmp, out_dir / "history.jsonl")


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
    out_dir = Path(tc.out_dir)
    check_out_dir(out_dir, resume)
    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # folders a failed start must not leave
    unified = logging.getLogger("geoseg.unified")
    # start-up messages wait here, and reach train.log only if the start succeeds
    held = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1)
    held.setLevel(logging.INFO)
    unified.addHandler(held)
    unified.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [held]
    started = False

    def begin(history: list[dict] | None) -> None:
        """All start-up checks passed: write the run folder's config.yaml and train.log (``history``
        rewrites history.jsonl to match the checkpoint resumed from)."""
        nonlocal started
        out_dir.mkdir(parents=True, exist_ok=True)
        # the settings this run used, its config's extends chain resolved (the checkpoints hold the same)
        (out_dir / "config.yaml").write_text(f"# resolved settings of experiment {cfg.name}, geoseg {__version__}\n"
                                             + cfg.to_yaml())
        if history is not None:
            _write_history(out_dir, history)
        fh = _log_file(out_dir, resume)
        held.setTarget(fh)
        held.flush()
        unified.removeHandler(held)
        unified.addHandler(fh)
        handlers.append(fh)
        started = True

    try:
        return _train(cfg, tc, mc, out_dir, resume, device, text_cache, encoder_path, begin)
    except BaseException:
        if not started and made:  # a failed start in a new folder leaves nothing behind
            if text_cache is None:
                (out_dir / "text_cache.pt").unlink(missing_ok=True)
            for d in made:
                try:
                    d.rmdir()
                except OSError:
                    break
        raise
    finally:
        for h in handlers:
            unified.removeHandler(h)
            h.close()


def freeze_modules(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    """Stop gradients into the modules ``names`` (``model.named_modules()`` names); return those
    modules, which training keeps in eval mode so their BatchNorm statistics stay fixed too.

    A name that is no module is an error: a typo would otherwise train everything.
    """
    named = dict(model.named_modules())
    unknown = [n for n in names if n not in named]
    if unknown:
        tops = sorted(n for n in named if n and "." not in n)
        raise InputError(f"train.freeze names no module of the model: {unknown}",
                         f"use module names such as {', '.join(tops)}")
    frozen = [named[n] for n in names]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def load_backbone_weights(model: torch.nn.Module, path: str) -> int:
    """Load user-supplied image-encoder weights into ``model.backbone``; return the number of tensors.

    Why: the backbone is trained from scratch here (no weights can be downloaded), but a user
    with pretrained weights for the same architecture should start from them, e.g. with
    ``freeze: [backbone]``. The file holds the backbone's state dict bare, under a ``state_dict``
    or ``model`` key, or inside a whole-model state dict (``backbone.*`` keys). Every tensor must
    fit: a half-loaded encoder is an error, not a warning.
    """
    from geoseg.segmenters.sam import load_weights_file  # the project's safe (tensors-only) weights reader

    p = Path(path)
    state = load_weights_file(p, "train.backbone_weights", "save it with torch.save(backbone.state_dict(), path)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"train.backbone_weights {p} holds no state dict", "save backbone.state_dict() to it")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    misfit = _misfit(model.backbone.state_dict(), state)
    if misfit:
        raise InputError(f"train.backbone_weights {p} does not fit the configured backbone ({misfit})",
                         "use weights saved from a backbone with the same model.arch, channels and depths")
    model.backbone.load_state_dict(_as_float(state))
    log.info("loaded backbone weights from %s (%d tensors)", p, len(state))
    return len(state)


def _misfit(own: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], may_miss: tuple[str, ...] = ()) -> str:
    """What keeps ``theirs`` from loading into a module with state ``own`` ("" when it fits);
    keys starting with ``may_miss`` may be absent from ``theirs``."""
    missing = sorted(k for k in set(own) - set(theirs) if not k.startswith(may_miss))
    unexpected = sorted(set(theirs) - set(own))
    wrong = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if not (missing or unexpected or wrong):
        return ""
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"


def _as_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with floating tensors in float32 (checkpoints may store float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def init_weights(model: torch.nn.Module, path: str, mc) -> dict:
    """Load a checkpoint's weights into ``model`` to fine-tune it; return the checkpoint's normalisation.

    Only heads used in training alone (the semantic auxiliary head, which exported bundles
    drop) and additions whose output starts at zero (spatial prior, relation anchor) may be missing from
    the file; any other difference in architecture is an error, so a fine-tune never
    silently starts from a half-loaded network.
    """
    from geoseg.unified.config import model_config_from_dict

    payload = read_checkpoint(path)
    theirs = model_config_from_dict(payload["model_config"])
    check_arch(theirs, mc, f"train.init_from {path}")
    state = _as_float(payload["state_dict"])
    misfit = _misfit(model.state_dict(), state, ZERO_START_MODULES)
    if misfit:
        raise InputError(f"train.init_from {path} does not fit the configured model ({misfit})",
                         "use the model section the checkpoint was trained with")
    model.load_state_dict(state, strict=False)
    log.info("initialised from %s (%d tensors; optimiser and schedule start afresh)", path, len(state))
    return payload["norm"]


def check_arch(theirs: ModelConfig, mc: ModelConfig, what: str,
               fix: str = "set model.arch to the checkpoint's architecture or start from scratch") -> None:
    """One line when the checkpoint ``what`` (model config ``theirs``) holds another architecture than ``mc``."""
    if theirs.arch != mc.arch:
        raise InputError(f"{what} holds a {theirs.arch!r} model, the config builds {mc.arch!r}", fix)


def resume_checkpoint(path: Path, model: torch.nn.Module, mc: ModelConfig) -> dict[str, Any]:
    """Read the run's ``last.pt`` for ``--resume`` and check that it continues the configured model.

    The model section must be the one the run was started with: a changed architecture or
    width would otherwise fail deep in ``load_state_dict`` (a screenful of size mismatches), and
    any other changed model setting would silently make a checkpoint that mixes two experiments.
    """
    from geoseg.unified.config import model_config_from_dict

    payload = read_checkpoint(path)
    if not isinstance(payload.get("train_state"), dict):
        raise InputError(f"--resume: {path} holds no training state (an exported bundle?)",
                         "resume from the last.pt a run wrote, or start afresh in another train.out_dir")
    fix = (f"resume with the model section the run was started with (see {path.parent / 'config.yaml'}), "
           "or train the changed model into another train.out_dir")
    theirs = model_config_from_dict(payload["model_config"])
    check_arch(theirs, mc, f"--resume: {path}", fix)
    differ = [f.name for f in dataclasses.fields(mc) if getattr(theirs, f.name) != getattr(mc, f.name)]
    if differ:
        k, more = differ[0], f" (and {len(differ) - 1} more model setting(s): {', '.join(differ[1:])})" \
            if len(differ) > 1 else ""
        raise InputError(f"--resume: {path} was trained with model.{k} = {getattr(theirs, k)!r}, the config gives "
                         f"{getattr(mc, k)!r}{more}", fix)
    st = payload["train_state"]
    state = _as_float(st.get("raw_state_dict") or payload["state_dict"])
    misfit = _misfit(model.state_dict(), state)
    if misfit:
        raise InputError(f"--resume: {path} does not fit the configured model ({misfit})", fix)
    return payload


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
        st = payload["train_state"]
        # with an EMA, state_dict holds the average (what was validated) and raw_state_dict the trained weights
        model.load_state_dict(_as_float(st.get("raw_state_dict") or payload["state_dict"]))
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
    texts = encode_texts([row_text(r) for r in train_rows + val_rows], cache_path, encoder_path, mc.max_tokens)
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
    step, epoch, elapsed_before, best = 0, 0, 0.0, -1.0
    history: list[dict] = []
    if resume:
        step, epoch, elapsed_before, best = st["step"], st["epoch"], st["elapsed_s"], st["best"]
        sampler.set_state(st["sampler"])
        torch.set_rng_state(st["torch_rng"])
        history = st.get("history", [])
    # the weight average is validated and saved in place of the raw weights (torch's EMA, buffers included,
    # so BatchNorm statistics follow the averaged weights)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
           if tc.ema > 0 else None)
    if ema is not None and resume and "raw_state_dict" in st:
        ema.module.load_state_dict(_as_float(payload["state_dict"]))
        ema.n_averaged.fill_(step)
    eval_model = ema.module if ema is not None else model

    begin(history if resume and "history" in st else None)  # start-up passed: the run folder is written from here
    if resume:
        log.info("resumed from %s at epoch %d, step %d", last_path, epoch, step)

    stream = BatchStream(
        train_rows, lambda: sampler.batch(tc.batch_size, task_weights(tc, schedule["frac"]), tc.prompts_per_image),
        tiles, texts, mc.classes, mean, std, tc.augment, tc.shadow_aug, tc.prompts_per_image, aug_rng,
        num_workers=tc.num_workers, seed=tc.seed, pin_memory=dev.type == "cuda")
    task_names = {v: k for k, v in TASK_IDS.items()}
    start = time.perf_counter()

    def frac_now() -> float:
        f = step / total_steps
        if budget_s > 0:
            f = max(f, (elapsed_before + time.perf_counter() - start) / budget_s)
        return min(f, 1.0)

    meta_base = {"experiment": cfg.name, "config": cfg.to_dict(), "shards": str(tc.shards),
                 "train_rows": len(train_rows), "empty_rule": EMPTY_RULE}
    summary: dict[str, Any] = {}
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
        log.info("epoch %d done at step %d (%.1f min): train loss %.3f, val mean task gIoU %.1f (%s thresholds)\n%s",
                 epoch, step, elapsed / 60, entry["train_loss"], score, "tuned" if tuned else "0.5",
                 format_table(metrics) if metrics else "(no val rows)")
        meta = {**meta_base, "epoch": epoch, "step": step, "train_minutes": round(elapsed / 60, 1),
                "val_metrics": metrics, "device": str(dev), **({"val_tuned": tuned} if tuned else {})}
        state = {"optimizer": opt.state_dict(), "step": step, "epoch": epoch, "elapsed_s": elapsed,
                 "best": max(best, score), "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                 "history": history}
        if ema is not None:
            state["raw_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(last_path, eval_model, mc, norm, meta, train_state=state)
        if score > best:
            best = score
            save_checkpoint(best_path, eval_model, mc, norm, meta)
            log.info("new best (%.1f) saved to %s", best, best_path)
        summary = {"out_dir": str(out_dir), "best": best, "last_metrics": metrics, "steps": step, "epochs": epoch,
                   "minutes": round(elapsed / 60, 1)}
    stream.close()
    log.info("finished: %d steps, %d epochs, %.1f min, best mean task gIoU %.1f", step, epoch,
             summary.get("minutes", 0.0), best)
    return summary


def export_checkpoint(src: str | Path, dst: str | Path, decision: Decision | None = None,
                      selector: dict[str, Any] | None = None) -> Path:
    """Copy a run's checkpoint without optimiser state and in float16 (the shipped bundle).

    Args:
        decision: per-task thresholds (from :func:`tune_decision`) stored in the bundle's
            ``meta["decision"]``; None keeps whatever the source carries.
        selector: a fitted instance selector (:func:`geoseg.unified.select_fit.fit_for_checkpoint`);
            None keeps the source's, if any.
    """
    from geoseg.unified.checkpoint import load_model

    model, cfg, payload = load_model(src)
    meta = dict(payload.get("meta", {}))
    if decision is not None:
        meta["decision"] = decision.to_dict()
    if selector is None:
        selector = payload.get("selector")
    return save_checkpoint(dst, model, cfg, payload["norm"], meta, half=True, selector=selector)


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
    texts = encode_texts([row_text(r) for r in rows], Path(text_cache) if text_cache else None, None, mc.max_tokens)
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


__all__ = ["compute_losses", "export_checkpoint", "task_weights", "train", "tune_decision", "val_records"]
