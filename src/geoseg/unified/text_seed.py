"""The shipped seed of the text-embedding cache: what point/box prompts need, without the text encoder.

A point or box prompt reaches the unified model as a templated instruction whose numbers
are masked (``canonical_instruction``): "… the box x#,y#=[#,#], …", "… the points [#, #],
[#, #].". There are only a few such texts (one for a box, one per number of points), and
the encoder is frozen, so their token embeddings are fixed facts of the encoder. Shipping
them (``weights/interactive_text.pt``, under 1 MB) lets ``geoseg segment --box/--point``,
``geoseg serve`` and batch workers answer without importing ``transformers`` or loading
MiniLM, about half of a point/box run's start-up time and a few hundred MB.

The seed is used only for the encoder it was made from: it records a digest of that
encoder's files (configuration, vocabulary, weights), and any other encoder — another
folder, another version — ignores it and encodes as before. Regenerate it with
``python -m geoseg.unified.text_seed`` (a test checks that it matches the installed
encoder's live output).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SEED_FILE = Path(__file__).resolve().parents[1] / "weights" / "interactive_text.pt"
SEED_FORMAT = "geoseg-text-seed/1"
#: point prompts with up to this many points are seeded (more points load the encoder)
MAX_POINTS = 8
#: the files whose bytes decide what an encoder folder outputs
_ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.txt", "model.safetensors", "pytorch_model.bin")


#: digests already computed in this process, by folder and the size and time of each file hashed
_DIGESTS: dict[tuple, str] = {}


def encoder_digest(path: str) -> str | None:
    """sha256 over an encoder folder's configuration, vocabulary and weights; ``None`` for anything else.

    Hashing MiniLM's files takes about 0.2 s; the seed, the text cache and the checkpoint checks
    (:mod:`geoseg.unified.encoder_id`) all ask, so a folder whose files are unchanged is hashed once
    per process.
    """
    if not os.path.isdir(path):
        return None
    from geoseg.digest import sha256_file

    files = [(name, os.path.join(path, name)) for name in _ENCODER_FILES if os.path.isfile(os.path.join(path, name))]
    key = (os.path.realpath(path), *((name, os.stat(f).st_size, os.stat(f).st_mtime_ns) for name, f in files))
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for name, file in files:
            h.update(f"{name} {sha256_file(file)}\n".encode())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def seed_texts(max_points: int = MAX_POINTS) -> list[str]:
    """The instructions geometry-only prompts become: one for a box, one per number of points."""
    from geoseg.prompts import Prompt
    from geoseg.unified.segmenter import interactive_template
    from geoseg.unified.text_encoder import canonical_instruction

    prompts = [Prompt(box=(1.0, 1.0, 2.0, 2.0))]
    prompts += [Prompt(points=((1.0, 1.0),) * n, labels=(1,) * n) for n in range(1, max_points + 1)]
    return [canonical_instruction(interactive_template(p, 4, 4), True) for p in prompts]


def load_seed(encoder_path: str, seed_file: Path = SEED_FILE) -> dict[str, torch.Tensor]:
    """The seeded embeddings when ``seed_file`` was made from this encoder, else ``{}``."""
    if not seed_file.is_file():
        return {}
    try:
        data = torch.load(seed_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged seed only costs the encoder load it would have saved
        log.warning("ignoring the text seed %s: %s", seed_file, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != SEED_FORMAT:
        log.warning("ignoring the text seed %s: not a %s file", seed_file, SEED_FORMAT)
        return {}
    digest = encoder_digest(encoder_path)
    if digest is None or digest != data.get("encoder"):
        log.debug("the text seed was made from another encoder than %s; encoding live", encoder_path)
        return {}
    return {str(t): e.float() for t, e in data["texts"].items()}


def write_seed(out: Path = SEED_FILE, encoder_path: str | None = None) -> Path:
    """Encode :func:`seed_texts` with the encoder (default: the installed one) and save the seed."""
    from geoseg.unified.text_encoder import TextEncoder

    enc = TextEncoder(encoder_path, seed=False)
    texts = seed_texts()
    embeddings = enc.encode(texts)
    payload = {"format": SEED_FORMAT, "encoder": encoder_digest(enc.path),
               "texts": {t: e.clone() for t, e in zip(texts, embeddings)}}  # clone: not views of one batch
    tmp = out.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


if __name__ == "__main__":  # pragma: no cover - the maintainer's regeneration step
    print(write_seed(Path(sys.argv[1]) if len(sys.argv) > 1 else SEED_FILE))
