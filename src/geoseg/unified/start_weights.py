"""The weights a run starts from: a checkpoint to resume or fine-tune, user backbone weights, frozen modules.

Each is checked against the configured model before any data is read, so a mismatch fails in
seconds as one line instead of deep in ``load_state_dict`` (or as a half-loaded network).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import InputError
from geoseg.unified.checkpoint import read_checkpoint
from geoseg.unified.config import ModelConfig

log = logging.getLogger(__name__)


#: modules a fine-tune may add to a checkpoint's network: training-only heads, or outputs that start at zero
ZERO_START_MODULES = ("decoder.semantic_head.", "decoder.spatial_prior.", "decoder.anchor.")


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
    model.backbone.load_state_dict(as_float(state))
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


def as_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    state = as_float(payload["state_dict"])
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
    state = as_float(st.get("raw_state_dict") or payload["state_dict"])
    misfit = _misfit(model.state_dict(), state)
    if misfit:
        raise InputError(f"--resume: {path} does not fit the configured model ({misfit})", fix)
    return payload


def check_resume_encoder(payload: dict[str, Any], path: Path, encoder: dict | None, where: str) -> None:
    """One line when ``--resume`` would continue, with the text encoder ``encoder`` (its record;
    ``where`` says what chose it), a run trained with another one (a ``last.pt`` without a record was
    trained with all-MiniLM-L6-v2)."""
    from geoseg.unified.encoder_id import describe, differ, env_hint, legacy_record

    trained = payload.get("text_encoder") or legacy_record()
    if differ(trained, encoder):
        raise InputError(f"--resume: the run in {path.parent} was trained with text encoder {describe(trained)}, but "
                         f"{where} is {describe(encoder)}",
                         f"resume with the run's encoder ({env_hint()}), or start a fresh run in another "
                         "train.out_dir")


__all__ = ["ZERO_START_MODULES", "as_float", "check_arch", "check_resume_encoder", "freeze_modules", "init_weights",
           "load_backbone_weights", "resume_checkpoint"]
