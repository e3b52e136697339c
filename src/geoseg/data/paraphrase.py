"""Optional rewording of text instructions through any OpenAI-compatible chat endpoint.

Off by default: the engine's rule-based instructions are complete without it. When a
build config has ``paraphrase: {url: ...}``, a share of the referring/reasoning
instructions is sent to ``{url}/chat/completions`` and replaced by the reply when the reply
passes simple checks (one line, not empty, not much longer than the original). The original
text and the model are kept in the row's ``attributes`` (``original_instruction``,
``paraphrase``), so every rewrite is traceable. A failed call keeps the original and is
counted (``paraphrase_failed``); an endpoint that cannot be reached at all stops the build
before any work is done. Interactive instructions are never sent: their coordinates must
stay exact.

The API key is read from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``), never from the config, so it cannot end up in a manifest.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from geoseg.errors import InputError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You rewrite instructions for segmenting objects in satellite and aerial images. Rewrite the "
    "instruction you are given so it reads naturally and differently, with exactly the same meaning: keep "
    "every object, attribute, position and relation word, add nothing, remove nothing. Reply with the "
    "rewritten instruction only, on one line."
)


@dataclass(frozen=True)
class ParaphraseConfig:
    """Settings of the optional paraphraser (``url`` unset = off).

    Attributes:
        url: base URL of an OpenAI-compatible API (e.g. ``http://127.0.0.1:8000/v1``).
        model: model name sent with each request.
        api_key_env: environment variable holding the API key (may be unset for local servers).
        share: share of eligible instructions to rewrite (chosen per sample, reproducibly).
        tasks: tasks whose instructions may be rewritten.
        timeout_s: per-request timeout.
        max_ratio: a reply longer than this many times the original is rejected.
    """

    url: str | None = None
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"
    share: float = 1.0
    tasks: tuple[str, ...] = ("referring", "reasoning")
    timeout_s: float = 30.0
    max_ratio: float = 3.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @classmethod
    def from_dict(cls, d: dict | None) -> ParaphraseConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown paraphrase settings {sorted(unknown)}", f"use {sorted(cls.__dataclass_fields__)}")
        if "interactive" in (d.get("tasks") or ()):
            raise InputError("interactive instructions cannot be paraphrased (their coordinates must stay exact)",
                             "list only referring and reasoning in paraphrase.tasks")
        if "tasks" in d:
            d["tasks"] = tuple(str(t) for t in d["tasks"])
        return cls(**d)


class Paraphraser:
    """A client of the chat endpoint (stdlib HTTP, so the engine needs no extra package)."""

    def __init__(self, cfg: ParaphraseConfig) -> None:
        if not cfg.url:
            raise InputError("the paraphraser has no URL", "set paraphrase.url (or --paraphrase-url)")
        self.cfg = cfg
        base = cfg.url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.key = os.environ.get(cfg.api_key_env, "")

    def provenance(self) -> dict:
        return {"model": self.cfg.model, "endpoint": self.endpoint.split("?", 1)[0]}

    def _post(self, instruction: str, task: str) -> str:
        body = json.dumps({
            "model": self.cfg.model,
            "temperature": 0,
            "seed": 0,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": f"Task: {task}.\nInstruction: {instruction}"}],
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:  # noqa: S310 (configured URL)
            data = json.loads(resp.read().decode("utf-8"))
        return str(data["choices"][0]["message"]["content"])

    def check(self) -> None:
        """One request before the build starts: a clear error instead of thousands of failed calls."""
        try:
            self._post("Segment the largest building.", "referring")
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise InputError(f"the paraphraser at {self.endpoint} does not answer ({exc})",
                             "start the endpoint, fix paraphrase.url/model, or drop the paraphrase settings") from exc

    def rewrite(self, instruction: str, task: str) -> str | None:
        """The reworded instruction, or ``None`` when the call fails or the reply is unusable."""
        try:
            text = self._post(instruction, task)
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.debug("paraphrase failed for %r: %s", instruction, exc)
            return None
        text = text.strip().strip('"').strip()
        if not text or "\n" in text or len(text) > self.cfg.max_ratio * max(len(instruction), 20):
            return None
        return text
