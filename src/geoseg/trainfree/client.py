"""Grounding client: ask any OpenAI-compatible multimodal LLM where the target is.

Works with vLLM, Ollama, llama.cpp's server, LM Studio or a hosted API: one
``POST {base_url}/chat/completions`` per image with the image as a base64 data-URL part
and a grounding prompt in the words the model family was trained on
(:mod:`geoseg.trainfree.conventions`). The answer is parsed
(:mod:`geoseg.trainfree.parsing`) and its coordinates are mapped back to the pixels of
the image the caller passed, whatever size it was.

Connection problems, time-outs, rate limits and 5xx answers are retried with a short
back-off; a rejected key or an answer without a box raises a one-line
:class:`~geoseg.errors.GeosegError` naming the fix.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from geoseg.errors import GeosegError, require
from geoseg.trainfree.conventions import (
    Family,
    Frame,
    fits_frame,
    frame_mismatch,
    get_family,
    guess_family,
    prepare_image,
    to_original,
)
from geoseg.trainfree.parsing import ParsedAnswer, parse_answer

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: longest wait a server's ``Retry-After`` header may ask for between two attempts (seconds)
MAX_RETRY_AFTER = 60.0


def redact_url(url: str) -> str:
    """``url`` without a password in its user-info part (``http://user:***@host/v1``), for messages and provenance."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def retry_after(value: str | None, limit: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), capped at ``limit``.

    ``None`` when the header is absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), limit)


class NoBoxError(GeosegError):
    """The model answered, but its answer holds no usable box or point."""


class FrameMismatchError(NoBoxError):
    """The answer's box is written in another coordinate frame than its model family's (a wrong ``--vlm-family``)."""


@dataclass
class Grounding:
    """Where the model put the target, in pixels of the original image.

    Attributes:
        box: ``(x0, y0, x1, y1)``, or ``None`` when the model gave points only.
        points: ``(x, y)`` points the model gave (often none).
        label: the short noun the model named the target with, when it gave one.
        raw: the model's answer, verbatim.
        family: the model family whose conventions were applied.
        convention: the coordinate convention the numbers were read in.
        boxes: every box of the answer that overlaps the image, first = ``box`` (for
            instructions naming several objects).
    """

    box: tuple[float, float, float, float] | None
    points: list[tuple[float, float]]
    label: str | None
    raw: str
    family: str
    convention: str = ""
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def _looks_unit(values: list[float]) -> bool:
    """Fractions in [0, 1] (at least one not a whole number): a model answering in [0, 1] anyway."""
    return bool(values) and all(0.0 <= v <= 1.0 for v in values) and any(v != int(v) for v in values)


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> str:
    """``image`` as a ``data:`` URL (JPEG by default: a tenth of PNG's size over the wire)."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
        mime = "image/png"
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class GroundingClient:
    """A multimodal LLM behind an OpenAI-compatible chat-completions endpoint, used as a grounder.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (a URL ending in ``/chat/completions``
            is accepted too); falls back to ``OPENAI_BASE_URL``.
        model: the served model's name; falls back to ``OPENAI_MODEL``, then to the only model
            the server lists at ``/models``.
        api_key: falls back to ``OPENAI_API_KEY``; local servers usually need none.
        family: ``auto`` (guessed from the model name) or one of
            :data:`geoseg.trainfree.conventions.FAMILIES`.
        timeout: seconds per request.
        retries: extra attempts after a failed request (connection error, time-out, 429, 5xx).
        max_pixels: overrides the family's image budget (pixels), for servers started with
            another ``max_pixels``.
        image_format: ``jpeg`` or ``png`` for the data URL.
        max_tokens: answer length limit sent with each request (a thinking model needs thousands:
            it reasons before it answers).
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 family: str = "auto", timeout: float = 60.0, retries: int = 2, max_pixels: int | None = None,
                 image_format: str = "jpeg", max_tokens: int = 512, backoff: float = 0.5) -> None:
        self._httpx = require("httpx", "trainfree")
        base = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base:
            raise GeosegError("no grounding endpoint given",
                              "pass --vlm-url (e.g. http://127.0.0.1:8000/v1) or set OPENAI_BASE_URL")
        base = base.rstrip("/")
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        if not base.startswith(("http://", "https://")):
            raise GeosegError(f"grounding endpoint {base!r} is not an http(s) URL",
                              "give it as http://HOST:PORT/v1")
        self.base_url = base
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.api_key = _check_key(key)
        try:
            self.timeout = float(timeout)
        except (TypeError, ValueError):
            raise GeosegError(f"grounding time-out {timeout!r} is not a number", "pass --vlm-timeout SECONDS, e.g. 60") from None
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise GeosegError(f"grounding time-out {timeout!r} must be a positive number of seconds",
                              "pass --vlm-timeout SECONDS, e.g. 60")
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) != max_pixels
                                       or max_pixels < 28 * 28):
            raise GeosegError(f"image budget --vlm-max-pixels {max_pixels!r} is not a pixel count of at least 784",
                              "give the server's max_pixels, e.g. 1003520, or leave the option out")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 16:
            raise GeosegError(f"answer length --vlm-max-tokens {max_tokens!r} is not a whole number of at least 16",
                              "give e.g. 512 (an instruct model) or 4096 (a thinking model), or leave it out")
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.image_format = image_format
        self.max_tokens = max_tokens
        if family != "auto":
            get_family(family)  # an unknown family fails here, not at the first image
        if image_format not in ("jpeg", "png"):
            raise GeosegError(f"unknown image format {image_format!r}", "use jpeg or png")
        self._family_name = family
        self._model = model or os.environ.get("OPENAI_MODEL") or None
        self._http = self._httpx.Client(timeout=self.timeout, headers=self._headers())

    # -- configuration -------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The base URL as shown in messages and provenance (a password in it replaced by ``***``)."""
        return redact_url(self.base_url)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def model(self) -> str:
        """The model name sent with each request (asked from ``/models`` when not given)."""
        if self._model is None:
            data = self._request("GET", "/models")
            ids = [str(m.get("id")) for m in (data.get("data") or []) if isinstance(m, dict) and m.get("id")]
            if not ids:
                raise GeosegError(f"the server at {self.display_url} lists no model", "pass --vlm-model")
            if len(ids) > 1:
                log.info("server lists %d models, using %s", len(ids), ids[0])
            self._model = ids[0]
        return self._model

    @property
    def family(self) -> Family:
        """The model family whose resize rule, prompt and coordinate convention are used."""
        name = self._family_name
        return get_family(name, self.model if name == "auto" else None)

    @property
    def backend_key(self) -> str:
        """The key calibration profiles of this grounder are stored under (the model name)."""
        from geoseg.trainfree.refine import profile_key

        return profile_key(self.model)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GroundingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One API call with retries; the decoded JSON answer."""
        httpx = self._httpx
        url = self.base_url + path
        last: str = ""
        fix = "start the server, check --vlm-url, or raise the timeout"
        wait: float | None = None
        where = self.display_url
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) if wait is None else max(wait, self.backoff))
            wait = None
            try:
                resp = self._http.request(method, url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
                fix = "raise --vlm-timeout (a large model on a busy or slow server takes its time), or check the server"
                log.info("grounding request timed out (attempt %d/%d)", attempt + 1, self.retries + 1)
                continue
            except httpx.HTTPError as exc:
                last = self._scrub(f"cannot connect ({exc.__class__.__name__}: {exc})")
                fix = "start the server, or check --vlm-url (host, port and the /v1 path)"
                log.info("grounding request failed: %s (attempt %d/%d)", last, attempt + 1, self.retries + 1)
                continue
            if resp.status_code in (401, 403):
                raise GeosegError(f"the server at {where} rejected the API key (HTTP {resp.status_code})",
                                  "pass the right key with --vlm-key or OPENAI_API_KEY")
            if resp.status_code in _RETRY_STATUS:
                last = self._scrub(f"HTTP {resp.status_code}: {_error_text(resp)}".rstrip(": "))
                wait = retry_after(resp.headers.get("Retry-After"))
                fix = ("the server limits how many requests it takes: wait a while and run again, or raise its rate limit"
                       if resp.status_code == 429 else
                       "the server failed on the request: check its log (out of GPU memory, a crashed worker)"
                       if resp.status_code >= 500 else "run again when the server is ready, or check its log")
                log.info("grounding request got %s (attempt %d/%d)", last, attempt + 1, self.retries + 1)
                continue
            if resp.status_code >= 400:
                fix = "check --vlm-model and that the model accepts images"
                if resp.status_code == 404 and not self.base_url.rstrip("/").endswith("/v1"):
                    fix = "OpenAI-compatible URLs usually end in /v1 (e.g. http://127.0.0.1:8000/v1); " + fix
                raise GeosegError(self._scrub(f"the server at {where} refused the request (HTTP {resp.status_code}: "
                                              f"{_error_text(resp)})"), fix)
            try:
                data = resp.json()
            except ValueError:
                raise GeosegError(f"the server at {where} did not answer JSON",
                                  "check that --vlm-url points at an OpenAI-compatible API (…/v1)") from None
            if not isinstance(data, dict):
                raise GeosegError(f"the server at {where} answered {type(data).__name__}, not an object",
                                  "check that --vlm-url points at an OpenAI-compatible API (…/v1)")
            return data
        raise GeosegError(f"the grounding server at {where} did not answer after {self.retries + 1} "
                          f"attempt(s): {last}", fix)

    def _scrub(self, text: str) -> str:
        """``text`` with the API key and the URL's password replaced by ``***`` (server and library messages may echo them)."""
        text = text.replace(self.base_url, self.display_url)
        for secret in (self.api_key, urlsplit(self.base_url).password):
            if secret:
                text = text.replace(secret, "***")
        return text

    def chat(self, image: np.ndarray, prompt: str) -> str:
        """Send one image and one prompt; the assistant's text."""
        return self._complete(image, prompt)[0]

    def _complete(self, image: np.ndarray, prompt: str) -> tuple[str, str | None]:
        """Send one image and one prompt; the assistant's text (its refusal when it gave one) and ``finish_reason``."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": encode_image(image, self.image_format)}},
                {"type": "text", "text": prompt},
            ]}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        data = self._request("POST", "/chat/completions", body)
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message["content"]
        except (KeyError, IndexError, TypeError):
            raise GeosegError(f"the server at {self.display_url} answered without choices[0].message.content",
                              "check that --vlm-url points at an OpenAI-compatible chat API") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not content and isinstance(message, dict) and isinstance(message.get("refusal"), str):
            content = message["refusal"]  # OpenAI puts a refusal here and leaves content empty
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        return str(content or ""), (str(finish) if finish else None)

    # -- grounding -----------------------------------------------------------------------------

    def ground(self, image: np.ndarray, instruction: str) -> Grounding:
        """Where ``instruction``'s target is in ``image`` (``H x W x 3`` uint8 RGB, any size).

        Raises:
            NoBoxError: the answer holds no box or point (the text is quoted).
            GeosegError: the server cannot be reached, rejects the key or the request.
        """
        if not instruction or not instruction.strip():
            raise GeosegError("the grounding instruction is empty", "give a text such as 'the largest building'")
        family = self.family
        sent, frame = prepare_image(np.asarray(image), family, self.max_pixels)
        raw, finish = self._complete(sent, family.prompt.format(instruction=instruction.strip()))
        parsed = parse_answer(raw)
        if parsed.empty and finish == "length":  # a thinking model spent the budget before it answered
            snippet = raw.strip().replace("\n", " ")[:80]
            raise NoBoxError(f"the model's answer was cut at the {self.max_tokens}-token limit before it gave a box: "
                             f"{snippet!r}", f"raise --vlm-max-tokens, e.g. to {max(4096, 4 * self.max_tokens)}, since "
                             "a thinking model reasons before it answers, or use an instruct model")
        return self.convert(parsed, raw, family, frame)

    def convert(self, parsed: ParsedAnswer, raw: str, family: Family, frame: Frame) -> Grounding:
        """Map a parsed answer to original-image pixels; :class:`NoBoxError` when it holds nothing."""
        if parsed.empty:
            snippet = raw.strip().replace("\n", " ")[:120]
            raise NoBoxError(f"the model's answer holds no box: {snippet!r}",
                             f"check that {self._model or 'the model'} can ground objects; its answer was read as "
                             f"family {family.name}, so pass --vlm-family if that guess is wrong")
        boxes: list[tuple[float, float, float, float]] = []
        convention = family.convention
        w, h = frame.orig_size
        for k, parsed_box in enumerate(parsed.boxes):
            coords = list(parsed_box.coords)
            if family.order == "yx":
                coords = [coords[1], coords[0], coords[3], coords[2]]
            conv = "unit" if family.convention != "unit" and _looks_unit(coords) else family.convention
            mismatch = frame_mismatch(coords, conv, family, frame)
            if mismatch is not None:  # read anyway, it would land off the image or, clamped, cover all of it
                if k == 0:
                    raise FrameMismatchError(*mismatch)
                log.info("dropped box %s of the answer: %s", parsed_box.coords, mismatch[0])
                continue
            (x0, y0), (x1, y1) = to_original([coords[:2], coords[2:]], conv, frame)
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                if k == 0:
                    written = ", ".join(f"{v:g}" for v in parsed_box.coords)
                    raise NoBoxError(f"the model's box [{written}] lies outside the {w}x{h} image when read as {conv}",
                                     "check the model family given with --vlm-family")
                continue
            if k == 0:
                convention = conv
            boxes.append((float(x0), float(y0), float(x1), float(y1)))
        box = boxes[0] if boxes else None
        points = []
        if parsed.points:
            pts = np.array([p.xy for p in parsed.points], float)
            if family.order == "yx":
                pts = pts[:, ::-1]
            pconv = "unit" if family.convention != "unit" and _looks_unit(pts.ravel().tolist()) else family.convention
            pts = pts[[fits_frame(p, pconv, frame) for p in pts]]  # a point in another frame is no point here
            points = [(float(x), float(y)) for x, y in to_original(pts, pconv, frame)]
            if box is None and not points:
                written = ", ".join(f"({p.xy[0]:g}, {p.xy[1]:g})" for p in parsed.points[:4])
                raise FrameMismatchError(f"the model's points {written} lie outside the coordinate frame family "
                                         f"{family.name} reads", "check --vlm-family against the model's documented "
                                         "answer format, see docs/trainfree.md")
        return Grounding(box, points, parsed.label, raw, family.name, convention, boxes)


def _check_key(key: str | None) -> str | None:
    """The API key with surrounding white space removed; a one-line error (never quoting it) when unusable.

    A key copied with a trailing newline or holding non-ASCII characters cannot go into an HTTP
    header; httpx would otherwise fail on every attempt with a message that prints the key.
    """
    if key is None:
        return None
    key = str(key).strip()
    if not key:
        return None
    if not key.isascii() or not key.isprintable():
        raise GeosegError("the API key holds characters an HTTP header cannot carry (non-ASCII or control characters)",
                          "pass the key exactly as issued with --vlm-key or OPENAI_API_KEY")
    return key


def _error_text(resp: object) -> str:
    try:
        data = resp.json()  # type: ignore[attr-defined]
        msg = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("error")
        return " ".join(str(msg or data.get("detail") or "").split())[:200]
    except (ValueError, AttributeError):
        return " ".join(str(getattr(resp, "text", "")).split())[:200]


__all__ = ["GroundingClient", "Grounding", "NoBoxError", "FrameMismatchError", "encode_image", "guess_family", "redact_url", "retry_after"]
