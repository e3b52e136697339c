"""Unified-model checkpoints: weights + the config that rebuilds them + normalisation + provenance.

A checkpoint is a ``torch.save``'d dict::

    format          "geoseg.unigeoseg"         what kind of file this is
    format_version  1                           bumped when the layout or the network changes incompatibly
    geoseg_version  "0.1.0"                     the geoseg that wrote it
    model_config    ModelConfig as a dict       rebuilds the network (arch name + hyper-parameters)
    norm            {"mean": [...], "std": [...]}  per-channel statistics of 0..255 RGB input
    state_dict      the weights (float16 in shipped bundles)
    meta            free provenance: experiment name, data, steps, metrics, training time
    text_encoder    (optional) {"name", "digest"}: the text encoder it was trained with
    train_state     (optional) optimiser/scheduler/step state for ``--resume``

Loading refuses, with a one-line error naming the mismatch, a file that is not such a
checkpoint, a format or geoseg version it cannot read, an unknown architecture,
weights that do not fit the recorded architecture, or (:func:`load_model`) a text encoder in
use whose files differ from those it was trained with (:mod:`geoseg.unified.encoder_id`; a
checkpoint without the record, such as the shipped ``unigeoseg_default.pt``, was trained with
all-MiniLM-L6-v2).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from geoseg._version import __version__
from geoseg.errors import GeosegError, InputError, reason
from geoseg.models import UniGeoSeg
from geoseg.unified.build import build_model
from geoseg.unified.config import ModelConfig, model_config_from_dict

FORMAT = "geoseg.unigeoseg"
FORMAT_VERSION = 1
IMAGENET_NORM = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def _major_minor(v: str) -> tuple[int, int]:
    parts = (v.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def save_checkpoint(path: str | Path, model: UniGeoSeg, cfg: ModelConfig, norm: dict[str, list[float]] | None = None,
                    meta: dict[str, Any] | None = None, train_state: dict[str, Any] | None = None,
                    half: bool = False, selector: dict[str, Any] | None = None,
                    text_encoder: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then ``os.replace``).

    Args:
        half: store floating weights as float16 (shipped bundles; halves the size).
        selector: a fitted instance selector (:func:`geoseg.unified.select_fit.selector_payload`).
        text_encoder: the record of the text encoder the weights were trained with
            (:mod:`geoseg.unified.encoder_id`); None writes none (read as all-MiniLM-L6-v2).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "geoseg_version": __version__,
        "model_config": asdict(cfg),
        "norm": norm or IMAGENET_NORM,
        "state_dict": state,
        "meta": meta or {},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    if selector is not None:
        payload["selector"] = selector
    if text_encoder is not None:
        payload["text_encoder"] = dict(text_encoder)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is meant to be shared and packaged
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint's dict (no network built yet)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist", "pass the path of a .pt file written by geoseg train")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise InputError(f"cannot read checkpoint {path} ({reason(exc)})",
                         "pass a .pt file written by geoseg train") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a geoseg unified-model checkpoint",
                         "pass a file written by geoseg train (SAM weights go to --backend sam)")
    fv = payload.get("format_version")
    if fv != FORMAT_VERSION:
        raise GeosegError(f"checkpoint {path} has format version {fv}; this geoseg ({__version__}) reads "
                          f"version {FORMAT_VERSION}",
                          f"use geoseg {payload.get('geoseg_version', '?')} or retrain with this version")
    ck_ver = str(payload.get("geoseg_version", "0"))
    if _major_minor(ck_ver)[0] != _major_minor(__version__)[0] or _major_minor(ck_ver) > _major_minor(__version__):
        raise GeosegError(f"checkpoint {path} was written by geoseg {ck_ver}, which this geoseg ({__version__}) "
                          "cannot read", f"install geoseg {ck_ver} or retrain with this version")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu", text_encoder: str | None = None
               ) -> tuple[UniGeoSeg, ModelConfig, dict[str, Any]]:
    """Rebuild the network recorded in a checkpoint and load its weights (float32, eval mode).

    Args:
        text_encoder: the encoder the model will be run with (default: ``GEOSEG_TEXT_ENCODER``, else the
            installed package); one whose files differ from those the checkpoint was trained with is
            refused in one line (see :func:`geoseg.unified.encoder_id.check_checkpoint`).

    Returns:
        ``(model, model_config, payload)``.
    """
    from geoseg.unified.encoder_id import check_checkpoint

    payload = read_checkpoint(path)
    check_checkpoint(payload, path, text_encoder)
    try:
        cfg = model_config_from_dict(payload["model_config"])
    except GeosegError as exc:
        raise GeosegError(f"checkpoint {path} describes an architecture this geoseg does not know ({exc.problem})",
                          "upgrade geoseg or retrain") from exc
    model = build_model(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{name}: {', '.join(keys[:3])}{'...' if len(keys) > 3 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                           if keys)
        raise GeosegError(f"the weights in {path} do not fit architecture {cfg.arch!r} ({detail})",
                          "the checkpoint comes from another architecture or geoseg version: retrain or use the "
                          "matching geoseg")
    model.load_state_dict(state)
    model.to(device).eval()
    return model, cfg, payload
