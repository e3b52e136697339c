"""Images the server holds, each with its cached embedding, and the masks predicted on them.

The backend's weights are loaded once (the *prototype* segmenter). Each image gets
a shallow copy of the prototype on which ``set_image`` is called once: the copy
shares the weights and keeps its own cached embedding, so prompts on several
open images never recompute an embedding. This relies on the segmenter contract:
``_set_image`` *assigns* its cached state to attributes (it does not mutate
shared buffers in place). Memory is bounded: the least recently used image is
dropped beyond ``max_images``, and each image keeps its last ``max_masks`` masks.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.segmenters import Prediction, Segmenter
from geoseg.serve.images import ImageRecord

log = logging.getLogger(__name__)


#: how much of an unknown id an error message repeats (ids the server makes are 12-16 characters)
ECHO_CHARS = 64


def echo_id(value: str, limit: int = ECHO_CHARS) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters (a client may send anything)."""
    return repr(value) if len(value) <= limit else repr(value[:limit] + "…")


def _cut(text: str, limit: int = 120) -> str:
    """``text`` on one line, cut to ``limit`` characters (a prompt quoted in an error message)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


#: how many ids of dropped or closed images the server remembers, to say why an id is unknown
GONE_IDS = 1024


class UnknownImageError(GeosegError):
    """An image id the server does not hold (never uploaded, deleted or evicted)."""

    code = "unknown_image"


class DroppedImageError(UnknownImageError):
    """An image the server dropped because more images were opened after it than it keeps."""

    code = "image_dropped"


class ClosedImageError(UnknownImageError):
    """An image a client closed (``DELETE``)."""

    code = "image_closed"


class UnknownMaskError(GeosegError):
    """A mask id the server does not hold for this image."""

    code = "unknown_mask"


class DroppedMaskError(UnknownMaskError):
    """A mask the server dropped because more masks were predicted on its image after it (answered 410 Gone)."""

    code = "mask_dropped"


@dataclass
class StoredMask:
    mask_id: str
    mask: np.ndarray
    score: float
    prompt: Prompt
    provenance: dict


@dataclass
class Session:
    """One open image: its pixels, its segmenter copy (holding the embedding) and recent masks."""

    record: ImageRecord
    segmenter: Segmenter | None = None
    embed_count: int = 0
    embed_ms: float = 0.0
    predict_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    masks: OrderedDict[str, StoredMask] = field(default_factory=OrderedDict)
    #: masks dropped for newer ones: mask id -> the prompt that made it, to say how to get it again
    dropped_masks: OrderedDict[str, str] = field(default_factory=OrderedDict)
    #: how many requests opened this image (uploads, opens by path, band changes); see :meth:`SessionStore.release`
    opens: int = 1


class SessionStore:
    """Thread-safe LRU of :class:`Session` keyed by image id."""

    def __init__(self, segmenter_factory: Callable[[], Segmenter], max_images: int = 8, max_masks: int = 16,
                 on_drop: Callable[[ImageRecord], None] | None = None) -> None:
        self._factory = segmenter_factory
        self._on_drop = on_drop
        self._prototype: Segmenter | None = None
        self._proto_lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()  # id -> "dropped" / "closed", newest last
        self._lock = threading.Lock()
        self.max_images = max_images
        self.max_masks = max_masks

    # -- the backend ------------------------------------------------------------------
    @property
    def prototype(self) -> Segmenter:
        """The backend with its weights, built on first use and shared by every image."""
        with self._proto_lock:
            if self._prototype is None:
                t0 = time.perf_counter()
                self._prototype = self._factory()
                log.info("loaded backend %s in %.2fs", self._prototype.name, time.perf_counter() - t0)
            return self._prototype

    # -- images -----------------------------------------------------------------------
    def add(self, record: ImageRecord, embed: bool = True, replaces: str | None = None) -> Session:
        """Hold ``record`` (or return the session that already holds the same image id).

        ``replaces``: an image the opener is done with (see :meth:`release`), released before the
        least recently used images are dropped, so the new one takes its place rather than another's.
        """
        with self._lock:
            sess = self._sessions.get(record.image_id)
            self._gone.pop(record.image_id, None)  # opened again
            if sess is None:
                sess = Session(record=record)
                self._sessions[record.image_id] = sess
            else:
                sess.opens += 1
            self._sessions.move_to_end(record.image_id)
            dropped = []
            if replaces is not None and replaces != record.image_id:
                old = self._release_locked(replaces, record.image_id)
                dropped += [old.record] if old is not None else []
            while len(self._sessions) > self.max_images:
                old_id, old = self._sessions.popitem(last=False)
                dropped.append(old.record)
                self._forget(old_id, "dropped")
                log.info("dropped image %s (more than %d open)", old_id, self.max_images)
        for rec in dropped:
            self._drop(rec)
        if embed:
            self.ensure_embedding(sess)
        return sess

    def _forget(self, image_id: str, why: str) -> None:
        """Remember why ``image_id`` is gone (under ``self._lock``), for the error a later request gets."""
        self._gone[image_id] = why
        self._gone.move_to_end(image_id)
        while len(self._gone) > GONE_IDS:
            self._gone.popitem(last=False)

    def _unknown(self, image_id: str, fix: str) -> UnknownImageError:
        why = self._gone.get(image_id)
        if why == "dropped":
            return DroppedImageError(
                f"image {echo_id(image_id)} was dropped: the server keeps the {self.max_images} most recently used "
                "images and more were opened after it", "open it again: upload the file with POST /api/images, or "
                "start the server with a higher --max-images")
        if why == "closed":
            return ClosedImageError(f"image {echo_id(image_id)} was closed", "open it again with POST /api/images")
        if why and why.startswith("replaced:"):
            return ClosedImageError(
                f"image {echo_id(image_id)} was closed when its file was shown with other bands as image "
                f"{why.split(':', 1)[1]!r}", "use that image, or open this one again with POST /api/images")
        return UnknownImageError(f"unknown image id {echo_id(image_id)}", fix)

    def get(self, image_id: str) -> Session:
        with self._lock:
            sess = self._sessions.get(image_id)
            if sess is None:
                raise self._unknown(image_id, f"upload the image with POST /api/images first; the server keeps "
                                              f"the {self.max_images} most recently used images")
            self._sessions.move_to_end(image_id)
            return sess

    def remove(self, image_id: str) -> None:
        with self._lock:
            sess = self._sessions.pop(image_id, None)
            if sess is None:
                raise self._unknown(image_id, "list open images with GET /api/images")
            self._forget(image_id, "closed")
        self._drop(sess.record)

    def reopen(self, image_id: str) -> Session:
        """The open image ``image_id``, counted as opened once more (see :meth:`release`)."""
        sess = self.get(image_id)
        with self._lock:
            sess.opens += 1
        return sess

    def release(self, image_id: str, replaced_by: str) -> bool:
        """One opener is done with ``image_id`` (it now shows ``replaced_by``): close it when nobody else opened it.

        An image opened by one request only (the page that now shows its file with other bands) is
        closed, its upload removed; one opened more than once (the same file uploaded from another tab
        or by another client) is kept for the others. Returns whether it was closed.
        """
        with self._lock:
            sess = self._release_locked(image_id, replaced_by)
        if sess is None:
            return False
        self._drop(sess.record)
        return True

    def _release_locked(self, image_id: str, replaced_by: str) -> Session | None:
        """:meth:`release` under ``self._lock``; the session closed (its file still to drop), if it was."""
        sess = self._sessions.get(image_id)
        if sess is None:
            return None
        sess.opens -= 1
        if sess.opens > 0:
            return None
        del self._sessions[image_id]
        self._forget(image_id, "replaced:" + replaced_by)
        log.info("closed image %s: its file is shown with other bands as %s", image_id, replaced_by)
        return sess

    def _drop(self, record: ImageRecord) -> None:
        if self._on_drop is not None:
            try:
                self._on_drop(record)
            except OSError as exc:  # never fail a request because a file could not be removed
                log.warning("could not clean up image %s: %s", record.image_id, exc)

    def list(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    # -- embedding and prediction -----------------------------------------------------
    def ensure_embedding(self, sess: Session) -> bool:
        """Run ``set_image`` for the session once; return whether it was already cached."""
        with sess.lock:
            if sess.segmenter is not None:
                return True
            twin = self._twin(sess)
            if twin is not None:  # the same pixels under another name: share its embedding
                sess.segmenter = copy.copy(twin.segmenter)
                sess.embed_ms = twin.embed_ms
                log.info("image %s reuses the embedding of %s (same file and bands)", sess.record.image_id,
                         twin.record.image_id)
                return True
            seg = copy.copy(self.prototype)
            t0 = time.perf_counter()
            seg.set_image(sess.record.model_rgb())
            sess.embed_ms = (time.perf_counter() - t0) * 1000
            sess.embed_count += 1
            sess.segmenter = seg
            log.info("embedded image %s in %.0f ms", sess.record.image_id, sess.embed_ms)
            return False

    def _twin(self, sess: Session) -> Session | None:
        """An open image with the same file and bands as ``sess`` whose embedding is computed."""
        key = sess.record.content_key
        if not key[0]:
            return None
        with self._lock:
            others = list(self._sessions.values())
        return next((o for o in others if o is not sess and o.segmenter is not None
                     and o.record.content_key == key), None)

    def predict(self, sess: Session, prompt: Prompt) -> tuple[StoredMask, bool, float]:
        """Answer ``prompt`` on the session's image; return the stored mask, cache hit, predict ms."""
        cached = self.ensure_embedding(sess)
        with sess.lock:
            t0 = time.perf_counter()
            pred: Prediction = sess.segmenter.predict(prompt)
            ms = (time.perf_counter() - t0) * 1000
            sess.predict_count += 1
            valid = sess.record.valid
            mask = pred.mask if valid is None else pred.mask & valid  # nodata is never part of an answer
            provenance = {**sess.segmenter.provenance(), "prompt": prompt.to_dict()}
            read_as = getattr(sess.segmenter, "read_as", None)  # a bare class name asked as the class's question
            asked = read_as(prompt).text if read_as is not None else prompt.text
            if asked != prompt.text:
                provenance["read_as"] = asked
            stored = StoredMask(
                mask_id=uuid.uuid4().hex[:12], mask=mask, score=float(pred.score), prompt=prompt,
                provenance=provenance,
            )
            sess.masks[stored.mask_id] = stored
            while len(sess.masks) > self.max_masks:
                old_id, old = sess.masks.popitem(last=False)
                sess.dropped_masks[old_id] = _cut(old.prompt.describe())
                while len(sess.dropped_masks) > GONE_IDS:
                    sess.dropped_masks.popitem(last=False)
        return stored, cached, ms

    def get_mask(self, sess: Session, mask_id: str) -> StoredMask:
        with sess.lock:
            stored = sess.masks.get(mask_id)
            dropped = sess.dropped_masks.get(mask_id)
        if dropped is not None:
            raise DroppedMaskError(
                f"mask {echo_id(mask_id)} of image {sess.record.image_id!r} was dropped: the server keeps the last "
                f"{self.max_masks} masks of each image and more were predicted on this image after it",
                f"predict it again with the same prompt ({dropped}) and download the new mask",
            )
        if stored is None:
            raise UnknownMaskError(
                f"unknown mask id {echo_id(mask_id)} for image {sess.record.image_id!r}",
                f"predict again; the server keeps the last {self.max_masks} masks per image",
            )
        return stored
