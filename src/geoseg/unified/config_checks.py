"""Kind and range checks of an experiment's ``model`` and ``train`` sections.

Run when a config is loaded (:func:`geoseg.unified.config.load_config`) and again by
``train()``, so a bad value fails in a second with one line naming the key, the value, the
allowed range and a fix, not as a torch or numpy traceback minutes into a run (a negative
width, heads that do not divide it, λ = 3, ``epochs: -1`` "training" 0 steps).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.unified.config import ModelConfig, TrainConfig

SELECT_ON = ("fixed", "tuned")

#: the one text encoder training, the instruction cache and inference use (``model.text_encoder``)
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_TEXT_ENCODER_NAMES = (DEFAULT_TEXT_ENCODER, f"sentence-transformers/{DEFAULT_TEXT_ENCODER}")

#: kind, allowed range (``lo``/``hi``, None = open; ``lo_open``/``hi_open`` exclude the end) and the fix
_NUM = tuple[type, float | None, float | None, bool, bool, str]
TRAIN_NUMBERS: dict[str, _NUM] = {
    "seed": (int, 0, 2**32 - 1, False, False, "use a whole number, e.g. 0"),
    "batch_size": (int, 1, None, False, False, "use a whole number of rows per step, e.g. 16"),
    "prompts_per_image": (int, 1, None, False, False, "use a whole number that divides the batch, e.g. 4, or 1"),
    "epochs": (int, 1, None, False, False, "use a whole number of epochs, e.g. 6"),
    "steps_per_epoch": (int, 1, None, False, False, "use a whole number of steps, e.g. 400"),
    "warmup_steps": (int, 0, None, False, False, "use a whole number of steps, e.g. 100, or 0 for no warm-up"),
    "val_samples": (int, 0, None, False, False, "use a whole number of rows, e.g. 240, or 0 for all"),
    "threads": (int, 0, None, False, False, "use a whole number, or 0 for torch's default"),
    "num_workers": (int, 0, None, False, False, "use a whole number of processes, or 0 to build batches in the loop"),
    "log_every": (int, 1, None, False, False, "use a whole number of steps, e.g. 20"),
    "lr": (float, 0.0, None, True, False, "use a positive learning rate, e.g. 0.001"),
    "weight_decay": (float, 0.0, None, False, False, "use a decay >= 0, e.g. 0.0001"),
    "interactive_start": (float, 0.0, 1.0, False, False, "use a task weight in [0, 1], e.g. 1.0"),
    "interactive_end": (float, 0.0, 1.0, False, False, "use a task weight in [0, 1], e.g. 0.7"),
    "ramp_frac": (float, 0.0, 1.0, False, False, "use a share of the run in [0, 1], e.g. 0.4"),
    "reasoning_share": (float, 0.0, 1.0, False, False, "use a share in [0, 1], e.g. 0.4"),
    "shadow_aug": (float, 0.0, 1.0, False, False, "use a share in [0, 1], e.g. 0.3"),
    "no_target_weight": (float, 0.0, None, False, False, "use a loss weight >= 0, e.g. 0.5"),
    "no_target_share": (float, 0.0, 1.0, False, True, "use a probability in [0, 1), e.g. 0.15"),
    "dice_weight": (float, 0.0, None, False, False, "use a loss weight >= 0, e.g. 1.0"),
    "bce_weight": (float, 0.0, None, False, False, "use a loss weight >= 0, e.g. 1.0"),
    "class_memory_weight": (float, 0.0, None, False, False, "use a loss weight >= 0, e.g. 0.2"),
    "semantic_weight": (float, 0.0, None, False, False, "use a loss weight >= 0, e.g. 0.5"),
    "ema": (float, 0.0, 1.0, False, True,
            "use a decay in [0, 1), e.g. 0.998, or 0 to train without a weight average"),
    "max_minutes": (float, 0.0, None, False, False, "use minutes >= 0, e.g. 60, or 0 for no budget"),
}
TRAIN_SWITCHES = ("progressive", "augment", "mask_loss_on_empty", "amp")
TRAIN_PATHS = ("shards", "val_shards", "tile_store", "out_dir", "init_from", "backbone_weights")

MODEL_NUMBERS: dict[str, _NUM] = {
    "fpn_dim": (int, 1, None, False, False, "use a whole number of channels, e.g. 64"),
    "query_dim": (int, 1, None, False, False, "use a whole number of channels, e.g. 128"),
    "heads": (int, 1, None, False, False, "use a whole number of attention heads, e.g. 4"),
    "decoder_layers": (int, 0, None, False, False, "use a whole number of layers, e.g. 2"),
    "latent_memory": (int, 0, None, False, False, "use a whole number of latents, e.g. 4, or 0 for no memory"),
    "memory_lambda": (float, 0.0, 1.0, False, False, "use a mixing weight in [0, 1], e.g. 0.2"),
    "class_memory_slots": (int, 1, None, False, False, "use a whole number of slots per class, e.g. 4"),
    "text_dim": (int, 1, None, False, False, "use the text encoder's width, 384 for all-MiniLM-L6-v2"),
    "max_tokens": (int, 1, None, False, False, "use a whole number of word pieces, e.g. 128"),
    "tile_size": (int, 1, None, False, False, "use the training tiles' size in pixels, e.g. 512"),
    "input_size": (int, 32, None, False, False, "use a multiple of 32 pixels, e.g. 256"),
}
MODEL_SWITCHES = ("tate", "prompt_map", "class_memory", "semantic_aux", "spatial_prior", "relation_anchor")
#: sequences of four stage widths / depths: the smallest value each entry may take, and the fix
MODEL_STAGES: dict[str, tuple[int, str]] = {
    "channels": (2, "use four whole numbers >= 2, e.g. [32, 64, 128, 192]"),
    "depths": (0, "use four whole numbers >= 0, e.g. [1, 2, 2, 1]"),
}


def _allowed(kind: type, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """The allowed range in words: "a whole number >= 1", "a number in [0, 1)", "a number > 0"."""
    what = "a whole number" if kind is int else "a number"

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{num(lo)}, {num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {num(lo)}"
    return what


def _number(key: str, value: Any, spec: _NUM, loc: str) -> int | float:
    """``value`` of ``key`` ("train.lr") checked against ``spec``; a float key takes an int or a numeric
    string (YAML reads 1e-3 as one)."""
    kind, lo, hi, lo_open, hi_open, fix = spec
    allowed = _allowed(kind, lo, hi, lo_open, hi_open)
    v: Any = value
    if kind is float and isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise InputError(f"{key} = {value!r}{loc} is not {allowed}", fix)
    v = float(v) if kind is float else v
    ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) \
        and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        raise InputError(f"{key} = {value!r}{loc} is out of range: allowed is {allowed}", fix)
    return v


def _switches(section: str, obj: Any, keys: tuple[str, ...], loc: str) -> None:
    for key in keys:
        if not isinstance(getattr(obj, key), bool):
            raise InputError(f"{section}.{key} = {getattr(obj, key)!r}{loc} is not true or false",
                             f"write {key}: true or {key}: false")


def check_train(train: TrainConfig, where: str = "") -> TrainConfig:
    """Check every value of a train section (kinds and ranges) and return it, floats made floats.

    ``where`` names the file (``"configs/x.yaml"``) in the messages.
    """
    loc = f" in {where}" if where else ""
    for key, spec in TRAIN_NUMBERS.items():
        setattr(train, key, _number(f"train.{key}", getattr(train, key), spec, loc))
    _switches("train", train, TRAIN_SWITCHES, loc)
    for key in TRAIN_PATHS:
        v = getattr(train, key)
        if not isinstance(v, str) or (key in ("shards", "out_dir") and not v.strip()):
            raise InputError(f"train.{key} = {v!r}{loc} is not a path",
                             f"write {key}: as a path" + ("" if key in ("shards", "out_dir") else ", or leave it out"))
    if not isinstance(train.image_path_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in train.image_path_map.items()):
        raise InputError(f"train.image_path_map{loc} must map path prefixes to path prefixes",
                         "write it as a mapping, e.g. image_path_map: {/old/data: /new/data}")
    if train.select_on not in SELECT_ON:
        raise InputError(f"train.select_on = {train.select_on!r}{loc} is not one of {', '.join(SELECT_ON)}",
                         "use fixed (thresholds 0.5) or tuned (thresholds tuned on the val rows each epoch)")
    if isinstance(train.freeze, list):
        train.freeze = tuple(train.freeze)
    if not isinstance(train.freeze, tuple) or not all(isinstance(m, str) for m in train.freeze):
        raise InputError(f"train.freeze{loc} must be a list of module names",
                         "write it as a list, e.g. freeze: [backbone]")
    if train.batch_size % train.prompts_per_image:
        raise InputError(f"train.prompts_per_image = {train.prompts_per_image!r}{loc} does not divide batch_size "
                         f"{train.batch_size}", "use a whole number that divides the batch, e.g. 4 for batch_size 16, "
                                                "or 1")
    return train


def check_arch_name(arch: Any, where: str = "") -> None:
    """One line when ``arch`` names no registered architecture (:data:`geoseg.unified.build.ARCHITECTURES`)."""
    from geoseg.unified.build import ARCHITECTURES  # late: build imports the config module

    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        loc = f" in {where}" if where else ""
        raise InputError(f"model.arch = {arch!r}{loc} is not a known architecture",
                         f"use one of {', '.join(sorted(ARCHITECTURES))}")


def _stages(key: str, value: Any, least: int, fix: str, loc: str) -> tuple[int, ...]:
    """Four whole numbers >= ``least`` (the backbone has four stages, strides 4 to 32), as a tuple."""
    ok = isinstance(value, list | tuple) and len(value) == 4 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value)
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise InputError(f"model.{key} = {shown!r}{loc} is not four whole numbers >= {least} (one per backbone "
                         "stage)", fix)
    return tuple(value)


def check_model(model: ModelConfig, where: str = "") -> ModelConfig:
    """Check every value of a model section (kinds, ranges, and what the network needs of them together)
    and return it, floats made floats and lists tuples.

    Why: the network is built from these numbers, and torch reports a bad one as a traceback from deep
    inside a layer ("negative dimension", "embed_dim must be divisible by num_heads"), or not at all (a
    λ of 3 trains). ``where`` names the file in the messages.
    """
    loc = f" in {where}" if where else ""
    check_arch_name(model.arch, where)
    for key, (least, fix) in MODEL_STAGES.items():
        setattr(model, key, _stages(key, getattr(model, key), least, fix, loc))
    for key, spec in MODEL_NUMBERS.items():
        setattr(model, key, _number(f"model.{key}", getattr(model, key), spec, loc))
    _switches("model", model, MODEL_SWITCHES, loc)
    for width in ("query_dim", "fpn_dim"):  # multi-head attention splits each width evenly between the heads
        if getattr(model, width) % model.heads:
            raise InputError(f"model.heads = {model.heads!r}{loc} does not divide model.{width} "
                             f"{getattr(model, width)}", f"use heads that divide both fpn_dim {model.fpn_dim} and "
                                                         f"query_dim {model.query_dim}, e.g. 4")
    if model.input_size % 32:
        raise InputError(f"model.input_size = {model.input_size!r}{loc} is not a multiple of 32 (the backbone's "
                         "coarsest stride)", f"use e.g. {max(32, round(model.input_size / 32) * 32)}")
    classes = model.classes
    if not isinstance(classes, list | tuple) or not classes or not all(isinstance(c, str) and c.strip()
                                                                        for c in classes):
        raise InputError(f"model.classes = {classes!r}{loc} is not a list of class names",
                         "write it as a list, e.g. classes: [land, water, building, vegetation, road]")
    doubled = sorted({c for c in classes if list(classes).count(c) > 1})
    if doubled:
        raise InputError(f"model.classes = {list(classes)!r}{loc} names {', '.join(doubled)} more than once",
                         "list each class once")
    model.classes = tuple(classes)
    if not isinstance(model.text_encoder, str) or not model.text_encoder.strip():
        raise InputError(f"model.text_encoder = {model.text_encoder!r}{loc} is not a text encoder name",
                         "write e.g. text_encoder: all-MiniLM-L6-v2")
    if model.text_encoder.strip() not in _TEXT_ENCODER_NAMES:
        # training, the instruction cache and inference all encode with the shipped
        # MiniLM: another name would train on MiniLM embeddings while the config said otherwise
        raise InputError(f"model.text_encoder = {model.text_encoder!r}{loc} is not supported: geoseg encodes "
                         f"instructions with {DEFAULT_TEXT_ENCODER} only (training, text cache and inference)",
                         f"leave text_encoder out, or write text_encoder: {DEFAULT_TEXT_ENCODER}")
    return model


#: the train settings ``--resume`` may change: how long the run goes on (the rest of the schedule is laid over
#: the new length from the step reached), and where and how fast it runs (folders, threads, workers, precision,
#: logging). ``init_from`` / ``backbone_weights`` are read by a fresh start only. Every other key shapes the
#: schedule, the data, the objective or the validation, and must stay as the run was started.
RESUME_MAY_CHANGE = ("epochs", "max_minutes", "out_dir", "image_path_map", "tile_store", "threads", "num_workers",
                     "amp", "log_every", "init_from", "backbone_weights")


def _same(key: str, old: Any, new: Any) -> bool:
    """Whether a train value saved in a checkpoint and the configured one are the same setting."""
    if key in TRAIN_PATHS and isinstance(old, str) and isinstance(new, str):
        return (os.path.normpath(old) if old else "") == (os.path.normpath(new) if new else "")
    if key in TRAIN_NUMBERS and all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new)):
        return float(old) == float(new)
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return list(old) == list(new)
    return old == new


def resume_changes(saved: dict[str, Any], train: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(key, started with, configured now)`` of every train setting a resume must not change.

    ``saved`` is the train section recorded in the run's ``last.pt``; a key it lacks (a run started before the
    setting existed) ran with the setting's default.
    """
    from dataclasses import fields

    from geoseg.unified.config import TrainConfig  # late: config imports this module

    default = TrainConfig()
    out = []
    for f in fields(TrainConfig):
        if f.name in RESUME_MAY_CHANGE:
            continue
        old, new = saved.get(f.name, getattr(default, f.name)), getattr(train, f.name)
        if not _same(f.name, old, new):
            out.append((f.name, old, new))
    return out


def check_resume_train(saved: dict[str, Any], train: TrainConfig, last: str) -> None:
    """One line when ``--resume`` would continue the run in ``last`` (its ``last.pt``) with other train settings.

    Why: the step, the sampler and the optimiser come back from the checkpoint, but the schedule, the batches,
    the losses and the validation are rebuilt from the config: a changed ``lr``, ``steps_per_epoch``,
    ``batch_size``, ``seed``, schedule setting or ``shards`` would make the learning rate or the task mix jump,
    or mix two data sets into one run, without a word. Only :data:`RESUME_MAY_CHANGE` may differ.
    """
    changed = resume_changes(saved, train)
    if not changed:
        return
    folder = os.path.dirname(last) or "."
    what = ", ".join(f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in changed)
    raise InputError(f"--resume: the run in {folder} was started with other train settings ({what})",
                     f"put them back as in {os.path.join(folder, 'config.yaml')} (a resume may change only "
                     f"{', '.join(RESUME_MAY_CHANGE[:2])} and where or how fast it runs), or start a fresh run "
                     f"in another train.out_dir, with init_from: {last} to begin at its weights")


def _shown(v: Any) -> str:
    """A saved or configured value as the message shows it (lists as YAML writes them)."""
    return repr(list(v)) if isinstance(v, tuple) else repr(v)
