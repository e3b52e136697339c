"""Token embeddings of the training instructions, computed once by the frozen text encoder and kept on disk.

Training and its validation read every distinct instruction's MiniLM token embeddings from one file
(``--text-cache``): the encoder is frozen, so encoding each instruction once is exact and saves
most of a CPU step. The file holds the ``{instruction: float16 tokens×dim}`` embeddings and the
record of the encoder that made them (:mod:`geoseg.unified.encoder_id`): a run whose encoder is
another (by digest of its files: another folder, ``GEOSEG_TEXT_ENCODER``) is refused in one line
instead of training on embeddings that do not match its encoder. A file written before the record
was kept (a bare ``{instruction: tensor}`` dict) is taken as MiniLM's, with a warning: it is used
when MiniLM is the encoder in use and refused otherwise. A *packed* file (:func:`save_packed`) holds
the same embeddings as int8 with a float32 scale per token, about half the size: what travels to a
machine whose upload is capped (a lent GPU box) and that has no encoder weights; it is read back
by :func:`load_text_cache` like the plain one, and records the encoder too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from geoseg.errors import InputError, reason
from geoseg.progress import progress

log = logging.getLogger(__name__)

PACKED_FORMAT = "geoseg.text_cache.int8/1"
PLAIN_FORMAT = "geoseg.text_cache/2"


def pack(cache: dict[str, torch.Tensor], texts: Iterable[str] | None = None, encoder: dict | None = None) -> dict:
    """The embeddings of ``texts`` (default all) as int8 with a per-token absmax scale (``encoder``: the
    record of the encoder that made them, :mod:`geoseg.unified.encoder_id`)."""
    keys = sorted(cache) if texts is None else sorted(set(texts))
    absent = [t for t in keys if t not in cache]
    if absent:
        raise InputError(f"{len(absent)} instructions are not in the text cache (first: {absent[0]!r})",
                         "encode them first: run geoseg train once with this --text-cache")
    rows = torch.cat([cache[t].float() for t in keys]) if keys else torch.zeros(0, 1)
    scale = rows.abs().amax(dim=1).clamp_min(1e-8) / 127.0
    q = torch.round(rows / scale[:, None]).to(torch.int8)
    return {"format": PACKED_FORMAT, "texts": keys, "lengths": torch.tensor([cache[t].shape[0] for t in keys]),
            "q": q, "scale": scale, **({"encoder": encoder} if encoder else {})}


def unpack(packed: dict) -> dict[str, torch.Tensor]:
    """The ``{instruction: float16 tokens×dim}`` dict of a :func:`pack` result."""
    rows = (packed["q"].float() * packed["scale"].float()[:, None]).half()
    return dict(zip(packed["texts"], torch.split(rows, packed["lengths"].tolist()), strict=True))


def save_packed(cache: dict[str, torch.Tensor], path: str | Path, texts: Iterable[str] | None = None,
                encoder: dict | None = None) -> Path:
    """Write :func:`pack` of ``cache`` to ``path`` (atomically)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(pack(cache, texts, encoder), tmp)
    tmp.replace(out)
    return out


def read_text_cache(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A plain or packed text cache file: its ``{instruction: float16 tokens×dim}`` embeddings and the record
    of the encoder that wrote them (``None`` for a file written before records were kept)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise InputError(f"cannot read text cache {path}: not a torch file this version can read ({reason(exc)})", "delete it; the next run writes it again") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a text cache", "pass the file geoseg train --text-cache wrote")
    if data.get("format") == PACKED_FORMAT:
        return unpack(data), data.get("encoder")
    if data.get("format") == PLAIN_FORMAT:
        return data["texts"], data.get("encoder")
    if not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"{path} is not a text cache this geoseg can read", "delete it; the next run writes it again")
    return data, None


def load_text_cache(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain or packed text cache file as ``{instruction: float16 tokens×dim}``."""
    return read_text_cache(path)[0]


def _written_by(path: Path, recorded: dict | None, used: dict | None) -> dict | None:
    """The encoder of the cache at ``path``; refuses one that is not ``used`` (the encoder of this run)."""
    from geoseg.unified.encoder_id import describe, differ, env_hint, legacy_record

    if recorded is None:
        recorded = legacy_record()
        if differ(recorded, used):
            raise InputError(f"text cache {path} records no text encoder (an older geoseg wrote it, so it is taken as "
                             f"all-MiniLM-L6-v2's), and this run encodes with {describe(used)}",
                             "delete it (the next run writes it again with this encoder) or pass another "
                             "--text-cache")
        log.warning("text cache %s records no text encoder (an older geoseg wrote it): taken as all-MiniLM-L6-v2's; "
                    "delete it if another encoder wrote it", path)
        return recorded
    if differ(recorded, used):
        raise InputError(f"text cache {path} was written with text encoder {describe(recorded)}, but this run "
                         f"encodes with {describe(used)}",
                         f"delete it (the next run writes it again with this encoder), pass another --text-cache, "
                         f"or use the encoder it was written with ({env_hint()})")
    return recorded


def encode_texts_keyed(texts: list[str], cache_path: Path | None, encoder_path: str | None, max_tokens: int
                       ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """:func:`encode_texts`, and the record of the encoder the embeddings come from (the encoder in use, or on
    a machine without one, the cache's record; ``None`` only when neither can be told)."""
    from geoseg.unified.encoder_id import identify, in_use

    used = in_use(encoder_path)  # None: no encoder here, the cache must hold every instruction
    cache: dict[str, torch.Tensor] = {}
    written_by = None
    if cache_path and cache_path.is_file():
        cache, recorded = read_text_cache(cache_path)
        written_by = _written_by(cache_path, recorded, used)
    missing = sorted(set(texts) - set(cache))
    if missing:
        from geoseg.unified.text_encoder import TextEncoder

        enc = TextEncoder(encoder_path, max_tokens=max_tokens, cache_size=len(missing) + 16)
        if used is None or not used["digest"]:  # a hub name is in the local cache once loaded
            used = identify(enc.path)
            if cache:
                _written_by(cache_path, written_by, used)
        log.info("encoding %d distinct instructions with the frozen text encoder", len(missing))
        step = 128
        for i in progress(range(0, len(missing), step), desc="encode text", total=(len(missing) + step - 1) // step):
            chunk = missing[i: i + step]
            for t, e in zip(chunk, enc.encode(chunk)):
                cache[t] = e.half()
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            torch.save({"format": PLAIN_FORMAT, "encoder": used, "texts": cache}, tmp)
            tmp.replace(cache_path)
    return cache, (used if used and used["digest"] else written_by or used)


def encode_texts(texts: list[str], cache_path: Path | None, encoder_path: str | None, max_tokens: int
                 ) -> dict[str, torch.Tensor]:
    """Token embeddings of every distinct instruction, reusing (and extending) an on-disk cache written by
    the same encoder (one written by another is refused: see the module docstring)."""
    return encode_texts_keyed(texts, cache_path, encoder_path, max_tokens)[0]


__all__ = ["encode_texts", "encode_texts_keyed", "load_text_cache", "pack", "read_text_cache", "save_packed", "unpack"]
