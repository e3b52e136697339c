"""Token embeddings of the training instructions, computed once by the frozen text encoder and kept on disk.

Training and its validation read every distinct instruction's MiniLM token embeddings from one file
(``--text-cache``): the encoder is frozen, so encoding each instruction once is exact and saves
most of a CPU step. The file is a ``{instruction: float16 tokens×dim}`` dict. A *packed* file
(:func:`save_packed`) holds the same embeddings as int8 with a float32 scale per token, about half the
size: what travels to a machine whose upload is capped (a lent GPU box) and that has no encoder
weights; it is read back by :func:`load_text_cache` like the plain one.
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


def pack(cache: dict[str, torch.Tensor], texts: Iterable[str] | None = None) -> dict:
    """The embeddings of ``texts`` (default all) as int8 with a per-token absmax scale."""
    keys = sorted(cache) if texts is None else sorted(set(texts))
    absent = [t for t in keys if t not in cache]
    if absent:
        raise InputError(f"{len(absent)} instructions are not in the text cache (first: {absent[0]!r})",
                         "encode them first: run geoseg train once with this --text-cache")
    rows = torch.cat([cache[t].float() for t in keys]) if keys else torch.zeros(0, 1)
    scale = rows.abs().amax(dim=1).clamp_min(1e-8) / 127.0
    q = torch.round(rows / scale[:, None]).to(torch.int8)
    return {"format": PACKED_FORMAT, "texts": keys, "lengths": torch.tensor([cache[t].shape[0] for t in keys]),
            "q": q, "scale": scale}


def unpack(packed: dict) -> dict[str, torch.Tensor]:
    """The ``{instruction: float16 tokens×dim}`` dict of a :func:`pack` result."""
    rows = (packed["q"].float() * packed["scale"].float()[:, None]).half()
    return dict(zip(packed["texts"], torch.split(rows, packed["lengths"].tolist()), strict=True))


def save_packed(cache: dict[str, torch.Tensor], path: str | Path, texts: Iterable[str] | None = None) -> Path:
    """Write :func:`pack` of ``cache`` to ``path`` (atomically)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(pack(cache, texts), tmp)
    tmp.replace(out)
    return out


def load_text_cache(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain or packed text cache file as ``{instruction: float16 tokens×dim}``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise InputError(f"cannot read text cache {path}: not a torch file this version can read ({reason(exc)})", "delete it; the next run writes it again") from exc
    if isinstance(data, dict) and data.get("format") == PACKED_FORMAT:
        return unpack(data)
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a text cache", "pass the file geoseg train --text-cache wrote")
    return data


def encode_texts(texts: list[str], cache_path: Path | None, encoder_path: str | None, max_tokens: int
                 ) -> dict[str, torch.Tensor]:
    """Token embeddings of every distinct instruction, reusing (and extending) an on-disk cache."""
    cache: dict[str, torch.Tensor] = {}
    if cache_path and cache_path.is_file():
        cache = load_text_cache(cache_path)
    missing = sorted(set(texts) - set(cache))
    if missing:
        from geoseg.unified.text_encoder import TextEncoder

        enc = TextEncoder(encoder_path, max_tokens=max_tokens, cache_size=len(missing) + 16)
        log.info("encoding %d distinct instructions with the frozen text encoder", len(missing))
        step = 128
        for i in progress(range(0, len(missing), step), desc="encode text", total=(len(missing) + step - 1) // step):
            chunk = missing[i: i + step]
            for t, e in zip(chunk, enc.encode(chunk)):
                cache[t] = e.half()
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            torch.save(cache, tmp)
            tmp.replace(cache_path)
    return cache


__all__ = ["encode_texts", "load_text_cache", "pack", "save_packed", "unpack"]
