"""Fit a backend's coordinate correction from a few labelled samples.

The grounder is run over samples whose target mask is known; the true box is the mask's
bounding box. Per coordinate ``(x0, y0, x1, y1)`` a scale and an offset are fitted with
robust least squares: wild answers are set aside first by a pair consensus over whole boxes
(a loss alone does not stop a high-leverage box from tilting the line), then
``scipy.optimize.least_squares`` with a soft-L1 loss fits the rest, with 3-sigma re-admission
and rejection until stable. One wild answer among a handful does not drag the correction. Coordinates are fitted as fractions of
the image side: a model's drift lives in its own normalised frame, which makes one profile
valid for images of any size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.bench.baselines import gt_box as box_of_mask  # pixel-edge bounding box, None when empty
from geoseg.errors import GeosegError
from geoseg.progress import progress_enabled
from geoseg.trainfree.refine import Box, CalibrationProfile

if TYPE_CHECKING:
    from geoseg.trainfree.client import FrameMismatchError

log = logging.getLogger(__name__)

MIN_SAMPLES = 3
#: the robust loss's scale, in pixels: residuals beyond it count linearly, not quadratically;
#: a corner farther than 3x this from the consensus line marks its sample as a wild answer
F_SCALE_PX = 8.0


MAX_PAIRS = 3000


def consensus(p: np.ndarray, t: np.ndarray, threshold: float, seed: int = 0) -> np.ndarray:
    """Samples consistent with the best line pair-consensus (an exhaustive RANSAC over sample pairs).

    Every pair of samples defines one line per coordinate; a sample agrees with it when all
    four of its corners lie within ``threshold``. The pair with most agreeing samples wins
    (ties: the correction closest to identity, since models drift by little). A wild box
    disagrees on all four corners at once, so it is caught even among three samples.
    """
    n = len(p)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], int).reshape(-1, 2)
    if len(pairs) > MAX_PAIRS:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), MAX_PAIRS, replace=False)]
    best: tuple[tuple[int, float], np.ndarray] | None = None
    for i, j in pairs:
        dp = p[j] - p[i]
        if np.any(np.abs(dp) < 1e-6):
            continue
        s = (t[j] - t[i]) / dp
        if np.any(s <= 0):
            continue
        o = t[i] - s * p[i]
        agree = (np.abs(s * p + o - t) <= threshold).all(axis=1)
        rank = (int(agree.sum()), -float(np.abs(np.log(s)).sum()))
        if best is None or rank > best[0]:
            best = (rank, agree)
    return best[1] if best is not None else np.ones(n, bool)


def _fit_axis(p: np.ndarray, t: np.ndarray, loss: str, f_scale: float,
              start: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Robust ``t ≈ s * p + o`` from the samples in ``start``: ``(s, o, inlier mask)``.

    ``least_squares`` with ``loss`` on the current inliers, then every sample within 3
    robust sigmas (at least ``f_scale``) of the line is an inlier, and again until stable.
    ``loss="linear"`` is plain least squares on every sample. Offset only when the
    predictions do not vary.
    """
    from scipy.optimize import least_squares

    keep = start.copy()
    if loss == "linear":
        keep[:] = True
    if np.ptp(p[keep]) < 1e-9:
        o = least_squares(lambda v: p[keep] + v[0] - t[keep], x0=[float(np.median(t[keep] - p[keep]))], loss=loss,
                          f_scale=f_scale).x[0]
        return 1.0, float(o), keep
    x = np.polyfit(p[keep], t[keep], 1)
    if loss == "linear":
        return float(x[0]), float(x[1]), keep
    for _ in range(4):
        pk, tk = p[keep], t[keep]
        x = least_squares(lambda v, pk=pk, tk=tk: v[0] * pk + v[1] - tk, x0=x, loss=loss, f_scale=f_scale).x
        r = np.abs(x[0] * p + x[1] - t)
        sigma = 1.4826 * float(np.median(r[keep]))
        new_keep = r <= max(3.0 * sigma, f_scale)
        if new_keep.sum() < 2 or (new_keep == keep).all():
            break
        keep = new_keep
    return float(x[0]), float(x[1]), keep


def fit_profile(pred_boxes: Sequence[Box], true_boxes: Sequence[Box], key: str,
                sizes: Sequence[tuple[int, int]] | None = None, loss: str = "soft_l1",
                meta: dict | None = None) -> CalibrationProfile:
    """Fit ``true ≈ scale * pred + offset`` per coordinate.

    Args:
        pred_boxes: the grounder's boxes (original-image pixels).
        true_boxes: the true boxes, same order.
        key: the backend the profile belongs to.
        sizes: ``(width, height)`` of each sample's image; the fit is then done in fractions
            of the image side (``space="normalized"``). Without sizes it is done in pixels.
        loss: a ``scipy.optimize.least_squares`` loss (``soft_l1``, ``huber``, ``cauchy``, ``linear``).
    """
    pred = np.asarray(pred_boxes, float).reshape(-1, 4)
    true = np.asarray(true_boxes, float).reshape(-1, 4)
    if len(pred) != len(true):
        raise GeosegError(f"{len(pred)} predicted but {len(true)} true boxes", "give one true box per prediction")
    if len(pred) < MIN_SAMPLES:
        raise GeosegError(f"calibration needs at least {MIN_SAMPLES} grounded samples, got {len(pred)}",
                          "use more samples (--limit) or a split whose targets the model finds")
    if sizes is not None:
        norm = np.asarray([[w, h, w, h] for w, h in sizes], float)
        if norm.shape != pred.shape:
            raise GeosegError(f"{len(norm)} image sizes for {len(pred)} boxes", "give one (width, height) per box")
        space, f_scale = "normalized", F_SCALE_PX / float(np.median(norm))
    else:
        norm, space, f_scale = np.ones_like(pred), "pixels", F_SCALE_PX
    p, t = pred / norm, true / norm
    start = np.ones(len(p), bool) if loss == "linear" else consensus(p, t, 3.0 * f_scale)
    fits = [_fit_axis(p[:, c], t[:, c], loss, f_scale, start) for c in range(4)]
    scale = tuple(s for s, _, _ in fits)
    offset = tuple(o for _, o, _ in fits)
    inlier = np.all([k for _, _, k in fits], axis=0)
    corrected = (np.array(scale) * p + np.array(offset)) * norm
    before, after = np.abs(pred - true)[inlier], np.abs(corrected - true)[inlier]
    residuals = {
        "outliers": int((~inlier).sum()),
        "mean_abs_before": round(float(before.mean()), 3),
        "mean_abs_after": round(float(after.mean()), 3),
        "median_abs_after": round(float(np.median(after)), 3),
        "max_abs_after": round(float(after.max()), 3),
        "rms_after": [round(float(v), 3) for v in np.sqrt((after ** 2).mean(axis=0))],
        "unit": "px (samples kept by the fit)",
    }
    return CalibrationProfile(key=key, scale=scale, offset=offset, n=len(pred),  # type: ignore[arg-type]
                              residuals=residuals, space=space, loss=loss, meta=dict(meta or {}))


def _questions_left(left: int, asked: int, limit: int | None) -> int:
    """How many more questions the model will be asked: the usable samples left, at most what ``limit`` leaves."""
    return left if limit is None else max(0, min(left, limit - asked))


def _instruction(sample: Any) -> str | None:
    text = getattr(sample, "instruction", "") or getattr(getattr(sample, "prompt", None), "text", None)
    return str(text).strip() if text and str(text).strip() else None


def _grounder(client_or_grounder: Any) -> Callable[[np.ndarray, str], Box | None]:
    ground = getattr(client_or_grounder, "ground", client_or_grounder)
    if not callable(ground):
        raise GeosegError("the calibration grounder is neither a GroundingClient nor a callable",
                          "pass a GroundingClient or a function (image, instruction) -> box")

    def run(image: np.ndarray, instruction: str) -> Box | None:
        out = ground(image, instruction)
        box = getattr(out, "box", out)
        return None if box is None else tuple(float(v) for v in box)  # type: ignore[return-value]

    return run


def _ask(ground: Callable[[np.ndarray, str], Box | None], image: np.ndarray, text: str, sample: Any,
         skipped: dict[str, int], wrong_frame: list[FrameMismatchError]) -> Box | None:
    """The grounder's box for one sample, or ``None`` (counted in ``skipped``; wrong-frame answers kept)."""
    from geoseg.trainfree.client import FrameMismatchError, NoBoxError

    try:
        pred = ground(image, text)
    except NoBoxError as exc:
        log.info("no box for %s: %s", getattr(sample, "sample_id", "?"), exc)
        skipped["no_box"] += 1
        if isinstance(exc, FrameMismatchError):
            wrong_frame.append(exc)
        return None
    if pred is None:
        skipped["no_box"] += 1
    return pred


def calibrate(client_or_grounder: Any, samples: Iterable[Any], key: str | None = None,
              tasks: Sequence[str] = ("referring", "reasoning"), loss: str = "soft_l1",
              meta: dict | None = None, limit: int | None = None) -> CalibrationProfile:
    """Run the grounder over labelled samples and fit its profile.

    Args:
        client_or_grounder: a :class:`~geoseg.trainfree.client.GroundingClient` (or anything
            with ``ground(image, instruction)`` returning an object with ``box``), or a
            callable ``(image, instruction) -> box``.
        samples: benchmark samples (:class:`geoseg.bench.sample.BenchSample` or anything with
            ``load_image``, ``load_mask``, ``instruction``/``prompt.text`` and ``task``).
        key: the backend key; defaults to the client's ``backend_key``.
        tasks: only samples of these tasks are used (interactive instructions carry their
            own coordinates and say nothing about a grounder).
        limit: ask the model about at most this many *usable* samples (of ``tasks``, with an
            instruction and a non-empty target); samples skipped before the model is asked do
            not count, so a split with empty targets still yields ``limit`` questions.

    Samples with an empty target, another task, or an answer without a box are skipped and
    counted in ``profile.meta``; an unreachable server stops the run with its error.

    The progress bar counts the questions the model is asked (the slow part): its total is the
    samples of ``tasks`` with an instruction, at most ``limit``, less the empty targets found on
    the way, so it ends full whether or not the limit stops the run.
    """
    from tqdm.auto import tqdm

    if key is None:
        key = getattr(client_or_grounder, "backend_key", None)
        if not key:
            raise GeosegError("no backend key for the calibration profile", "pass key=... (e.g. the model name)")
    ground = _grounder(client_or_grounder)
    samples = list(samples)
    preds, trues, sizes = [], [], []
    skipped = {"empty_target": 0, "other_task": 0, "no_text": 0, "no_box": 0}
    asked = 0  # usable samples the model was asked about (what ``limit`` counts)
    seen = 0  # samples looked at, usable or not
    cache: tuple[Any, np.ndarray] | None = None
    wrong_frame: list[FrameMismatchError] = []  # answers in another coordinate frame: a wrong --vlm-family
    # samples that may be asked about, known without reading any pixels (empty targets are found on the way)
    left = sum(1 for s in samples if not (tasks and getattr(s, "task", None) not in tasks) and _instruction(s))
    bar = tqdm(total=_questions_left(left, 0, limit), desc="calibrating", unit="question",
               disable=not progress_enabled(), leave=False)
    with bar:
        for s in samples:
            if limit is not None and asked >= limit:
                break
            seen += 1
            if tasks and getattr(s, "task", None) not in tasks:
                skipped["other_task"] += 1
                continue
            text = _instruction(s)
            if text is None:
                skipped["no_text"] += 1
                continue
            left -= 1
            true = box_of_mask(np.asarray(s.load_mask()))
            if true is None:
                skipped["empty_target"] += 1
                bar.total = asked + _questions_left(left, asked, limit)  # one question fewer than expected
                bar.refresh()
                continue
            img_key = getattr(s, "image_key", None) or id(s)
            if cache is None or cache[0] != img_key:
                cache = (img_key, np.asarray(s.load_image()))
            asked += 1
            answer = _ask(ground, cache[1], text, s, skipped, wrong_frame)
            bar.update(1)
            if answer is not None:
                preds.append(answer)
                trues.append(true)
                sizes.append((cache[1].shape[1], cache[1].shape[0]))
    if len(preds) < MIN_SAMPLES:
        problem = (f"only {len(preds)} of {seen} samples could be used for calibration "
                   f"(skipped: {', '.join(f'{k} {v}' for k, v in skipped.items() if v) or 'none'})")
        if wrong_frame:  # the family is wrong, not the samples: say so, with the family that reads the answers
            first = wrong_frame[0]
            raise GeosegError(f"{problem}; {len(wrong_frame)} answer(s) in another coordinate frame, e.g. "
                              f"{first.problem}", first.fix)
        fix = f"give at least {MIN_SAMPLES} referring/reasoning samples whose targets the model finds"
        if limit is not None and asked >= limit:
            fix = f"raise --limit above {limit}, or {fix}"
        raise GeosegError(problem, fix)
    if wrong_frame:
        log.warning("%d answer(s) were in another coordinate frame than family %s reads and were left out, e.g. %s",
                    len(wrong_frame), (meta or {}).get("family", "?"), wrong_frame[0])
    info = {"samples": seen, "skipped": skipped, **(meta or {})}
    return fit_profile(preds, trues, key, sizes=sizes, loss=loss, meta=info)
