"""A real OpenAI-compatible chat-completions server on loopback that "grounds" real targets.

It stands in for vLLM/Ollama serving a multimodal LLM: ``GET /v1/models`` and
``POST /v1/chat/completions`` with the protocol's request and response shapes, ``401`` with
OpenAI's error object on a wrong key, ``404`` for an unknown model, and switches for
delays and failures (retry and time-out tests).

Like a real model it only sees the request: it decodes the image part, finds which of its
known originals the image shows and how the client resized/padded it (by trimming a
uniform border and comparing thumbnails — a wrong channel order, a flip or a wrong image
gives no match), picks the target whose instruction appears in the prompt, optionally
applies a systematic bias, and writes the box in the family's documented format and
coordinate frame:

* ``qwen2-vl``: ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>``,
  integers on a 0–1000 grid (``strip_special_tokens`` emulates vLLM's default, which drops them)
* ``qwen2.5-vl``: a fenced JSON list of ``{"bbox_2d": [...], "label": ...}`` in absolute pixels of
  the input *after* Qwen's smart resize (with the model's shipped budget, min 3136 / max
  12845056 pixels, so a client that sends an unprepared image gets coordinates of another size)
* ``qwen3-vl``: the same JSON on a 0–1000 grid
* ``internvl``: ``<ref>label</ref><box>[[x0, y0, x1, y1]]</box>`` on a 0–1000 grid
* ``geopix``: ``{<x1><y1><x2><y2>}`` on a 0–100 grid
* ``gemini``: a fenced JSON list of ``{"box_2d": [ymin, xmin, ymax, xmax], "label": ...}``, 0–1000
* ``generic``: GeoSeg's ``{"bbox": [...], "prompt": ...}`` in [0, 1] (4 decimals)

``answer_frame = "pixels"`` makes every model answer GeoSeg's JSON in pixels of the image it
received instead, like a general chat model that ignores the frame it was asked for.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

#: served model ids -> the family each one emulates
MODELS: dict[str, str] = {
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2.5-vl",
    "qwen3-vl:8b": "qwen3-vl",
    "OpenGVLab/InternVL3-8B": "internvl",
    "GeoPix-ft-sior_rsicap": "geopix",
    "gemini-2.5-flash": "gemini",
    "gpt-4o-mini": "generic",
}


@dataclass
class Target:
    """One thing the server can find: an original image, its true box and the words naming it."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    instruction: str
    label: str = "building"


@dataclass
class Bias:
    """A systematic error in normalised coordinates: ``u' = scale * u + shift`` per (x0, y0, x1, y1)."""

    scale: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    shift: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def _smart_resize(h: int, w: int, factor: int = 28, min_pixels: int = 3136,
                  max_pixels: int = 12845056) -> tuple[int, int]:
    """Qwen2.5-VL's preprocessing as documented, with the budget its processor config ships.

    Sides rounded to multiples of 28 (14 px patches merged 2x2); when the pixel count leaves
    ``[min_pixels, max_pixels]`` both sides are scaled by the same factor first. Written here
    from the model card rather than imported, so the server shares no code with the client;
    ``test_parsing`` checks the client's version against transformers' implementation.
    """
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _thumb(img: np.ndarray, size: int = 48) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _edge(profile: np.ndarray, first: int, step: int) -> float:
    """Sub-pixel position (pixel-edge coordinates) of a blurred step in a column/row profile.

    ``first`` is the first index above the noise level walking in direction ``step``; the edge
    is where the profile crosses half the level found three pixels further inside (resampling
    kernels are symmetric, so the half level sits on the true edge).
    """
    n = len(profile)
    inside = profile[min(max(first + 4 * step, 0), n - 1)]
    half = inside / 2
    k = first
    while 0 <= k + step < n and profile[k] < half and abs(k - first) < 6:
        k += step
    j = k - step  # the last index below half, just outside
    if not 0 <= j < n:
        return float(k if step > 0 else k + 1)
    a, b = float(profile[j]), float(profile[k])
    frac = min(max((half - a) / (b - a), 0.0), 1.0) if b != a else 0.5
    return float(j + step * frac + 0.5)  # pixel centres sit at index + 0.5


def _content_box(img: np.ndarray, tol: float = 10.0) -> tuple[float, float, float, float]:
    """The rectangle left after trimming a uniform border (padding), as x0, y0, x1, y1 with sub-pixel edges."""
    fill = img[0, 0].astype(np.float32)
    diff = np.abs(img.astype(np.float32) - fill).max(axis=2)
    rows = np.flatnonzero(diff.max(axis=1) > tol)
    cols = np.flatnonzero(diff.max(axis=0) > tol)
    h, w = diff.shape
    if not len(rows) or not len(cols) or (cols[0] == 0 and rows[0] == 0 and cols[-1] == w - 1 and rows[-1] == h - 1):
        return 0.0, 0.0, float(w), float(h)
    col_prof, row_prof = diff.mean(axis=0), diff.mean(axis=1)
    x0 = 0.0 if cols[0] == 0 else _edge(col_prof, int(cols[0]), 1)
    x1 = float(w) if cols[-1] == w - 1 else _edge(col_prof, int(cols[-1]), -1)
    y0 = 0.0 if rows[0] == 0 else _edge(row_prof, int(rows[0]), 1)
    y1 = float(h) if rows[-1] == h - 1 else _edge(row_prof, int(rows[-1]), -1)
    return x0, y0, x1, y1


@dataclass
class ServerState:
    """What the server knows and how it misbehaves (tests change these between requests)."""

    targets: list[Target] = field(default_factory=list)
    api_key: str | None = None
    delay_s: float = 0.0
    fail_statuses: list[int] = field(default_factory=list)
    reply_override: str | None = None
    answers: dict[int, str] = field(default_factory=dict)  # target index -> verbatim reply (outliers)
    bias: Bias = field(default_factory=Bias)
    strip_special_tokens: bool = False
    #: "pixels": every model writes GeoSeg's JSON in pixels of the image it received, whatever it was
    #: asked (a general chat model that ignores the requested frame); None: each family's own format
    answer_frame: str | None = None
    #: a thinking model: it spends this many tokens reasoning before it answers; a request whose
    #: max_tokens runs out first gets vLLM's answer for that (content null, finish_reason "length")
    thinking_tokens: int = 0
    #: OpenAI's refusal: content null, the text in message.refusal
    refusal: str | None = None
    #: Retry-After header sent with the simulated failures of ``fail_statuses``
    retry_after: str | None = None
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _thumbs: dict[int, np.ndarray] = field(default_factory=dict)

    def register(self, received: np.ndarray) -> tuple[int, tuple[float, float, float, float]] | None:
        """Which original ``received`` shows: its index and the mapping ``(sx, sy, ox, oy)`` original → received.

        Two readings are tried: the whole image is the original (resized), or a uniform border
        is padding around it; the reading and original with the closest thumbnail win.
        """
        h_r, w_r = received.shape[:2]
        readings = {(0.0, 0.0, float(w_r), float(h_r)), _content_box(received)}
        best: tuple[float, int, tuple[float, float, float, float]] | None = None
        for x0, y0, x1, y1 in readings:
            content = received[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))]
            if min(content.shape[:2]) < 4:
                continue
            seen = _thumb(content)
            for i, t in enumerate(self.targets):
                h, w = t.image.shape[:2]
                if abs((x1 - x0) / (y1 - y0) - w / h) > 0.1 * w / h:  # resize rules round sides
                    continue
                if id(t.image) not in self._thumbs:
                    self._thumbs[id(t.image)] = _thumb(t.image)
                err = float(np.abs(seen - self._thumbs[id(t.image)]).mean())
                if best is None or err < best[0]:
                    best = (err, i, (x0, y0, x1, y1))
        if best is None or best[0] > 12.0:
            return None
        _, i, (x0, y0, x1, y1) = best
        h, w = self.targets[i].image.shape[:2]
        return i, ((x1 - x0) / w, (y1 - y0) / h, x0, y0)


def _answer(state: ServerState, family: str, received: np.ndarray, prompt: str) -> str:
    if state.reply_override is not None:
        return state.reply_override
    reg = state.register(received)
    if reg is None:
        return "I am sorry, I cannot find that in the image."
    idx, (sx, sy, ox, oy) = reg
    ref = state.targets[idx].image
    hits = [t for t in state.targets if t.image is ref and t.instruction.lower() in prompt.lower()]
    if not hits:
        return "I am sorry, I cannot find that in the image."
    t = hits[0]
    idx = next(i for i, x in enumerate(state.targets) if x is t)
    if idx in state.answers:
        return state.answers[idx]
    h, w = t.image.shape[:2]
    u = np.array(t.box, float) / np.array([w, h, w, h])
    u = np.array(state.bias.scale) * u + np.array(state.bias.shift)
    # the biased box in pixels of the image the "model" received
    rx = u[[0, 2]] * w * sx + ox
    ry = u[[1, 3]] * h * sy + oy
    rh, rw = received.shape[:2]
    label = t.label
    if state.answer_frame == "pixels":
        return "```json\n" + json.dumps({"bbox": [round(rx[0]), round(ry[0]), round(rx[1]), round(ry[1])],
                                          "prompt": label}) + "\n```"
    if family == "qwen2.5-vl":
        mh, mw = _smart_resize(rh, rw)
        box = [round(rx[0] * mw / rw), round(ry[0] * mh / rh), round(rx[1] * mw / rw), round(ry[1] * mh / rh)]
        return "```json\n[\n\t" + json.dumps({"bbox_2d": box, "label": label}) + "\n]\n```"
    gx = [round(v / rw * 1000) for v in rx]
    gy = [round(v / rh * 1000) for v in ry]
    if family == "qwen2-vl":
        if state.strip_special_tokens:
            return f"{label}({gx[0]},{gy[0]}),({gx[1]},{gy[1]})"
        return (f"<|object_ref_start|>{label}<|object_ref_end|>"
                f"<|box_start|>({gx[0]},{gy[0]}),({gx[1]},{gy[1]})<|box_end|>")
    if family == "qwen3-vl":
        return "```json\n[\n\t" + json.dumps({"bbox_2d": [gx[0], gy[0], gx[1], gy[1]], "label": label}) + "\n]\n```"
    if family == "gemini":
        return "```json\n" + json.dumps([{"box_2d": [gy[0], gx[0], gy[1], gx[1]], "label": label}]) + "\n```"
    if family == "internvl":
        return f"<ref>{label}</ref><box>[[{gx[0]}, {gy[0]}, {gx[1]}, {gy[1]}]]</box>"
    if family == "geopix":
        p = [round(rx[0] / rw * 100), round(ry[0] / rh * 100), round(rx[1] / rw * 100), round(ry[1] / rh * 100)]
        return f"Sure, the {label} is at {{<{p[0]}><{p[1]}><{p[2]}><{p[3]}>}}."
    return json.dumps({"bbox": [round(rx[0] / rw, 4), round(ry[0] / rh, 4), round(rx[1] / rw, 4),
                                round(ry[1] / rh, 4)], "prompt": label})


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out tests)
            pass

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
                   headers)

    def _authorised(self) -> bool:
        key = self.server.state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, f"no route {self.path}", "not_found")
            return
        self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "test"}
                                                    for m in MODELS]})

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        state = self.server.state
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with state.lock:
            status = state.fail_statuses.pop(0) if state.fail_statuses else None
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "status": status})
        if state.delay_s:
            time.sleep(state.delay_s)
        if not self._authorised():
            return
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "not_found")
            return
        if status is not None:
            self._error(status, "Rate limit reached" if status == 429 else "simulated failure", "server_error",
                        {"Retry-After": state.retry_after} if state.retry_after is not None else None)
            return
        try:
            body = json.loads(body_bytes)
            model = body["model"]
            parts = body["messages"][-1]["content"]
            text = " ".join(p["text"] for p in parts if p.get("type") == "text")
            urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._error(400, "malformed chat-completions request", "invalid_request")
            return
        if model not in MODELS:
            self._error(404, f"The model `{model}` does not exist.", "model_not_found")
            return
        if len(urls) != 1 or not urls[0].startswith("data:image/"):
            self._error(400, "expected exactly one image as a base64 data URL", "invalid_image")
            return
        raw = base64.b64decode(urls[0].split(",", 1)[1])
        received = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        with state.lock:
            state.requests[-1].update(model=model, prompt=text, size=(received.shape[1], received.shape[0]),
                                      mime=urls[0].split(";", 1)[0][5:], max_tokens=body.get("max_tokens"))
        content = _answer(state, MODELS[model], received, text)
        n_prompt = max(1, math.ceil(len(text) / 4)) + received.shape[0] * received.shape[1] // (28 * 28)
        n_out = max(1, math.ceil(len(content) / 4))
        message: dict = {"role": "assistant", "content": content}
        finish = "stop"
        if state.thinking_tokens:
            message["reasoning_content"] = "Let me look at the image. " * (state.thinking_tokens // 6)
            if (body.get("max_tokens") or math.inf) < state.thinking_tokens + n_out:
                message["content"], finish = None, "length"
            n_out += state.thinking_tokens
        if state.refusal is not None:
            message.update(content=None, refusal=state.refusal)
        self._send(200, {
            "id": f"chatcmpl-{len(state.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        })


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class OpenAIServer:
    """The server, running in a thread on a free loopback port (``with OpenAIServer(...) as srv``)."""

    def __init__(self, targets: list[Target] | None = None, api_key: str | None = None) -> None:
        self.state = ServerState(targets=list(targets or []), api_key=api_key)
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.state = self.state
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def reset(self) -> None:
        """Back to honest behaviour (between tests sharing one server)."""
        s = self.state
        s.api_key, s.delay_s, s.fail_statuses, s.reply_override = None, 0.0, [], None
        s.bias, s.strip_special_tokens, s.requests, s.answers = Bias(), False, [], {}
        s.answer_frame, s.thinking_tokens, s.refusal, s.retry_after = None, 0, None, None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
