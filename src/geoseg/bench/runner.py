"""Run a segmenter over a benchmark with a resumable prediction cache, then score it.

Layout of a run folder ``DIR``:

* ``run.json`` — what is being run (model spec, weights digest and thresholds where the backend
  reports them, data, format, split); written first. A resumed run must match it.
* ``predictions.jsonl`` — the append-only cache: one line per sample
  ``{sample_id, prompt_digest, rle | unsupported | error, score, seconds}``. Each line is
  flushed as soon as it is predicted, so an interrupted run resumes where it stopped (a
  torn last line is ignored). Re-running with a cache in place only re-scores; changing
  the empty-target rule never re-predicts.
* ``per_sample.jsonl``, ``metrics.json``, ``report.md``, ``report.html`` — written by
  scoring (each atomically).

The segmenter's ``set_image`` is called once per image: samples are grouped by their
``image_key``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg._version import __version__
from geoseg.bench.baselines import EMPTY, ModelSpec
from geoseg.bench.metrics import (
    DEFAULT_EMPTY_RULE,
    Counts,
    check_rule,
    evaluate,
    mask_counts,
    per_sample_iou,
    rle_counts,
)
from geoseg.bench.readers.common import naming
from geoseg.bench.sample import BenchSample
from geoseg.errors import GeosegError, InputError
from geoseg.progress import progress
from geoseg.rle import rle_area, rle_decode, rle_encode

log = logging.getLogger(__name__)

CACHE_NAME = "predictions.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prompt_digest(sample: BenchSample) -> str:
    """A short hash of what a sample asks (so a changed benchmark invalidates its cached answer)."""
    blob = json.dumps([sample.prompt.to_dict(), sample.image_key], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def ids_digest(sample_ids: Sequence[str]) -> str:
    """Digest of the sorted sample ids: two runs with the same digest scored the same samples."""
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode()).hexdigest()[:16]


class PredictionCache:
    """Append-only JSON-lines cache of predictions keyed by sample id."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_text(encoding="utf-8")
        *complete, tail = data.split("\n")
        for n, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.records[rec["sample_id"]] = rec  # later lines win
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"line {n} of prediction cache {self.path} is corrupt ({exc})",
                                 "delete the file (or the line) and run again to re-predict") from exc
        if tail.strip():  # a last line without its newline: the run was interrupted while writing it
            log.warning("ignoring an incomplete last line in %s (interrupted run); it will be predicted again",
                        self.path)
            with open(self.path, "r+b") as f:
                f.truncate(len(data.encode("utf-8")) - len(tail.encode("utf-8")))

    def get(self, sample_id: str) -> dict | None:
        return self.records.get(sample_id)

    def append(self, records: Sequence[dict], sync: bool = False) -> None:
        """Append complete records (one line each) and flush them, so an interruption loses none."""
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
                self.records[rec["sample_id"]] = rec
            f.flush()
            if sync:
                os.fsync(f.fileno())


def _check_run_identity(out_dir: Path, info: dict, overwrite: bool) -> None:
    run_json = out_dir / "run.json"
    if run_json.exists() and not overwrite:
        try:
            old = json.loads(run_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{run_json} is corrupt ({exc})", "delete it or use --overwrite") from exc
        if old.get("model") != info["model"]:
            raise InputError(
                f"{out_dir} holds predictions of model {old.get('model')!r}, not {info['model']!r}",
                "use another -o folder, or --overwrite to discard the old predictions",
            )
        mine, theirs = info.get("weights") or {}, old.get("weights") or {}
        if "weights" not in info and theirs:  # re-scoring builds no model: keep what the predictions came from
            info["weights"] = theirs
        # a key only one side reports counts as None on the other (e.g. a run from before a
        # post-processing step existed, resumed by a version that applies it)
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)) if mine else []
        if changed:
            raise InputError(
                f"{out_dir} holds predictions of {info['model']!r} with other weights or thresholds "
                f"({', '.join(changed)} differ)",
                "use another -o folder, or --overwrite to discard the old predictions",
            )
    if overwrite and (out_dir / CACHE_NAME).exists():
        (out_dir / CACHE_NAME).unlink()
    atomic_write_text(run_json, json.dumps(info, indent=2))


def predict_missing(model: ModelSpec, samples: Sequence[BenchSample], cache: PredictionCache) -> int:
    """Predict every sample the cache lacks (one ``set_image`` per image); returns how many were run."""
    todo = [s for s in samples if (r := cache.get(s.sample_id)) is None or r.get("prompt_digest") != prompt_digest(s)]
    if not todo:
        return 0
    groups: dict[str, list[BenchSample]] = {}
    for s in todo:
        groups.setdefault(s.image_key, []).append(s)
    seg = model.segmenter
    bar = progress(range(len(todo)), desc=f"bench {model.spec}", total=len(todo), unit="sample")
    for key, group in groups.items():
        image = None
        t_img = 0.0
        for s in group:
            rec: dict = {"sample_id": s.sample_id, "prompt_digest": prompt_digest(s)}
            prompt = model.transform(s, seg)
            if prompt is None:
                rec["unsupported"] = f"{model.backend} cannot use this {s.task} prompt"
            elif isinstance(prompt, str) and prompt == EMPTY:
                h, w = s.load_mask().shape
                rec.update(rle=rle_encode(np.zeros((h, w), bool)), score=1.0, seconds=0.0)
            elif isinstance(prompt, np.ndarray):  # the protocol answers itself (no model)
                rec.update(rle=rle_encode(prompt.astype(bool)), score=1.0, seconds=0.0)
            else:
                if image is None:
                    t0 = time.perf_counter()
                    with naming(s.sample_id, s.source_file):
                        image = s.load_image()
                    seg.set_image(image)
                    t_img = time.perf_counter() - t0
                t0 = time.perf_counter()
                try:
                    pred = seg.predict(prompt)
                except GeosegError as exc:
                    rec["error"] = str(exc)
                    log.warning("sample %s: %s", s.sample_id, exc)
                else:
                    rec.update(rle=rle_encode(pred.mask), score=float(pred.score))
                rec["seconds"] = round(time.perf_counter() - t0 + t_img, 4)
                t_img = 0.0  # the image's encoding time is charged to its first sample
            cache.append([rec], sync=s is group[-1])  # each answer is on disk as soon as it exists
            next(bar, None)
        log.debug("image %s: %d samples predicted", key, len(group))
    for _ in bar:  # close the bar
        pass
    return len(todo)


def score(samples: Sequence[BenchSample], cache: PredictionCache, rule: str = DEFAULT_EMPTY_RULE) -> list[dict]:
    """Per-sample counts of every supported sample (predictions decoded, checked, compared to the target)."""
    rows = []
    for s in progress(samples, desc="scoring", total=len(samples), unit="sample"):
        rec = cache.get(s.sample_id)
        if rec is None:
            raise InputError(f"sample {s.sample_id}: no prediction in {cache.path}",
                             "run without --rescore-only to predict the missing samples")
        row = {"sample_id": s.sample_id, **s.labels(), "image_key": s.image_key, "instruction": s.instruction}
        if "unsupported" in rec:
            rows.append({**row, "unsupported": True})
            continue
        inter, union, pa, ga = sample_counts(s, rec, cache.path)
        rows.append({**row, "inter": int(inter), "union": int(union), "pred_area": int(pa), "gt_area": int(ga),
                     "score": rec.get("score"), "seconds": rec.get("seconds"), "failed": "error" in rec})
    counts = counts_of(rows)
    for r, iou in zip((r for r in rows if not r.get("unsupported")), per_sample_iou(counts, rule)):
        r["iou"] = None if np.isnan(iou) else float(iou)
    return rows


def sample_counts(s: BenchSample, rec: dict, cache_path: Path) -> tuple[int, int, int, int]:
    """``(I, U, |P|, |G|)`` of one cached answer against its target (checked for size).

    When the target is stored as RLE (shards, the benchmark split) the counts are taken on
    the runs (:func:`geoseg.bench.metrics.rle_counts`, no decoding); otherwise both masks
    are decoded and counted. A failed prediction (``error``) is an empty mask.
    """
    gt_rle = s.mask_rle
    if gt_rle is not None:
        h, w = (int(v) for v in gt_rle["size"])
    else:
        gt = s.load_mask()
        h, w = gt.shape
    if "error" in rec:
        ga = rle_area(gt_rle) if gt_rle is not None else int(np.count_nonzero(gt))
        return 0, ga, 0, ga
    try:
        pred_rle = rec["rle"]
        ph, pw = (int(v) for v in pred_rle["size"])
        pred = None if gt_rle is not None else rle_decode(pred_rle)
    except Exception as exc:
        raise InputError(f"sample {s.sample_id}: unreadable prediction in {cache_path} ({exc})",
                         "delete its line to re-predict it") from exc
    if (ph, pw) != (h, w):
        raise InputError(
            f"sample {s.sample_id}: prediction of size {ph}x{pw} in {cache_path} "
            f"does not match its {h}x{w} target ({s.source_file})",
            "predictions must be at the image's resolution; delete the line to re-predict",
        )
    if gt_rle is not None:
        try:
            return rle_counts(pred_rle, gt_rle)
        except Exception as exc:
            raise InputError(f"sample {s.sample_id}: unreadable prediction in {cache_path} ({exc})",
                             "delete its line to re-predict it") from exc
    return tuple(int(v) for v in mask_counts(pred, gt))  # type: ignore[return-value]


def counts_of(rows: Sequence[dict]) -> Counts:
    """The :class:`Counts` of the supported rows of a ``per_sample`` list."""
    return Counts.from_records([r for r in rows if not r.get("unsupported")])


def metrics_of(rows: Sequence[dict], rule: str, run_info: dict) -> dict:
    """The ``metrics.json`` record: run info, the rule, overall/per-task/level/category, coverage."""
    ev = evaluate(counts_of(rows), rule)
    unsupported: dict[str, int] = {}
    for r in rows:
        if r.get("unsupported"):
            unsupported[r["task"]] = unsupported.get(r["task"], 0) + 1
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return {
        "run": run_info,
        **ev,
        "n_samples": len(rows),
        "n_unsupported": sum(unsupported.values()),
        "unsupported_per_task": unsupported,
        "n_failed": sum(1 for r in rows if r.get("failed")),
        "seconds_per_sample": float(np.mean(secs)) if secs else None,
        "sample_ids_digest": ids_digest([r["sample_id"] for r in rows]),
    }


def run_benchmark(model: ModelSpec, samples: Sequence[BenchSample], out_dir: str | Path, *,
                  empty_rule: str = DEFAULT_EMPTY_RULE, data: str = "", fmt: str = "", split: str | None = None,
                  rescore_only: bool = False, overwrite: bool = False, report: bool = True,
                  gallery_size: int = 4) -> dict:
    """Predict (what the cache lacks), score and report; returns the metrics record.

    Args:
        model: the resolved ``--model`` (see :func:`geoseg.bench.baselines.resolve_model`).
        samples: the benchmark (see :func:`geoseg.bench.readers.load_benchmark`).
        out_dir: the run folder (created; an existing one of the same model is resumed).
        empty_rule: ``unigeoseg`` | ``zero`` | ``skip`` (see :mod:`geoseg.bench.metrics`).
        rescore_only: never run the model; a sample without a cached prediction is an error.
        overwrite: discard an existing cache in ``out_dir``.
        report: also write ``report.md`` and ``report.html``.
        gallery_size: best / median / worst examples each in the HTML gallery.
    """
    check_rule(empty_rule)
    out = Path(out_dir)
    info = {"model": model.spec, "protocol": model.description, "data": str(data), "format": fmt, "split": split,
            "geoseg_version": __version__}
    bench_ids = {s.meta.get("benchmark") for s in samples} - {None}
    if len(bench_ids) == 1:  # a versioned benchmark (the project's split) names itself
        info["benchmark"] = bench_ids.pop()
    if not rescore_only:  # the checkpoint behind a name (e.g. the shipped default) may have changed
        info["weights"] = model.weights_identity()
    out.mkdir(parents=True, exist_ok=True)  # after the model is known to load: a bad one leaves no folder
    _check_run_identity(out, info, overwrite)
    cache = PredictionCache(out / CACHE_NAME)
    if not rescore_only:
        t0 = time.perf_counter()
        n = predict_missing(model, samples, cache)
        log.info("predicted %d samples in %.1f s (%d cached)", n, time.perf_counter() - t0, len(samples) - n)
        info["predicted_now"] = n
    info["provenance"] = model.provenance()
    rows = score(samples, cache, empty_rule)
    metrics = metrics_of(rows, empty_rule, info)
    atomic_write_text(out / "per_sample.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    if report:
        from geoseg.bench.report import write_reports

        write_reports(out, metrics, rows, {s.sample_id: s for s in samples}, gallery_size=gallery_size)
    return metrics
