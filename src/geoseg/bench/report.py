"""Human-readable reports of a benchmark run: Markdown and a self-contained HTML page.

The HTML report needs no network and no other file: tables per task, level and
category, IoU histograms (inline SVG) and a gallery of the best, median and worst
predictions drawn over their images (base64 PNG). Every report states the
empty-target rule it was scored with.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geoseg.bench.metrics import THRESHOLDS

COLUMNS: tuple[tuple[str, str], ...] = (
    ("gIoU", "gIoU"), ("cIoU", "cIoU"), *((f"Pr@{t:g}", f"Pr@{t:g}") for t in THRESHOLDS),
    ("Dice", "Dice"), ("no_target_acc", "no-target acc"), ("target_acc", "target acc"),
)


def fmt_pct(v) -> str:
    """A ratio as a percentage with one decimal (``–`` when undefined)."""
    return "–" if v is None else f"{100.0 * float(v):.1f}"


def table_rows(metrics: Mapping) -> list[tuple[str, str, Mapping]]:
    """``(section, label, summary)`` for the overall row and every breakdown."""
    rows = [("overall", "all", metrics["overall"])]
    for section, key in (("task", "per_task"), ("level", "per_level"), ("category", "per_category")):
        for label, summ in metrics.get(key, {}).items():
            rows.append((section, label, summ))
    return rows


def markdown_table(title: str, entries: Sequence[tuple[str, Mapping]]) -> str:
    head = f"| {title} | n | scored | " + " | ".join(c for _, c in COLUMNS) + " |"
    sep = "|" + "---|" * (len(COLUMNS) + 3)
    lines = [head, sep]
    for label, s in entries:
        lines.append(f"| {label} | {s['n']} | {s['n_scored']} | " + " | ".join(fmt_pct(s.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _sections(metrics: Mapping) -> list[tuple[str, list[tuple[str, Mapping]]]]:
    out = [("Overall", [("all", metrics["overall"])])]
    for title, key in (("Per task", "per_task"), ("Per level", "per_level"), ("Per category", "per_category")):
        if metrics.get(key):
            out.append((title, list(metrics[key].items())))
    return out


def weights_fact(run: Mapping) -> str | None:
    """Which weights answered: the backend's checkpoint file, architecture and digest, where it
    reports them (``--model sam`` alone does not say whether ViT-B or ViT-H ran)."""
    prov = (run.get("provenance") or {}).get("backend_provenance") or {}
    if not isinstance(prov, Mapping) or not prov.get("checkpoint"):
        return None
    extra = [str(prov["arch"])] if prov.get("arch") else []
    if prov.get("checkpoint_sha256"):
        extra.append(f"SHA-256 {prov['checkpoint_sha256']}")
    return str(prov["checkpoint"]) + (f" ({', '.join(extra)})" if extra else "")


def _header_facts(metrics: Mapping) -> list[tuple[str, str]]:
    run = metrics.get("run", {})
    weights = weights_fact(run)
    facts = [("model", str(run.get("model", ""))), *([("weights", weights)] if weights else []),
             ("protocol", str(run.get("protocol", ""))),
             ("data", f"{run.get('data', '')} (format {run.get('format', '')}"
                      f"{', split ' + str(run['split']) if run.get('split') else ''})"),
             *([("benchmark", str(run["benchmark"]))] if run.get("benchmark") else []),
             ("empty-target rule", f"{metrics['empty_rule']}: {metrics['empty_rule_meaning']}"),
             ("samples", f"{metrics['n_samples']} ({metrics['n_unsupported']} unsupported by the backend"
                         f"{': ' + ', '.join(f'{k} {v}' for k, v in metrics['unsupported_per_task'].items()) if metrics['unsupported_per_task'] else ''}"
                         f"; {metrics['n_failed']} failed, scored as empty)"),
             ("seconds per sample", "–" if metrics.get("seconds_per_sample") is None else f"{metrics['seconds_per_sample']:.3f}"),
             ("sample-set digest", str(metrics.get("sample_ids_digest", ""))),
             ("geoseg", str(run.get("geoseg_version", "")))]
    return facts


def markdown_report(metrics: Mapping) -> str:
    """The Markdown report (all numbers in %)."""
    parts = [f"# Benchmark report: {metrics.get('run', {}).get('model', '')}", ""]
    parts += [f"- **{k}**: {v}" for k, v in _header_facts(metrics)]
    parts.append("")
    parts.append("All figures in %. Pr@t counts samples with IoU strictly above t.")
    for title, entries in _sections(metrics):
        parts += ["", f"## {title}", "", markdown_table(title.split()[-1], entries)]
    return "\n".join(parts) + "\n"


# -- HTML ---------------------------------------------------------------------------------
def svg_histogram(values: Sequence[float], title: str, bins: int = 10, width: int = 320, height: int = 160) -> str:
    """An inline SVG histogram of IoU values in [0, 1]."""
    counts, _ = np.histogram(np.asarray(values, float), bins=bins, range=(0.0, 1.0))
    top = max(int(counts.max()) if counts.size else 0, 1)
    pad_l, pad_b, pad_t = 30, 22, 18
    bw = (width - pad_l - 6) / bins
    ph = height - pad_b - pad_t
    bars = []
    for i, c in enumerate(counts):
        h = ph * c / top
        x = pad_l + i * bw
        bars.append(f'<rect x="{x:.1f}" y="{pad_t + ph - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="#4c78a8">'
                    f"<title>IoU {i / bins:.1f}–{(i + 1) / bins:.1f}: {c}</title></rect>")
    ticks = "".join(f'<text x="{pad_l + i * bw:.1f}" y="{height - 6}" font-size="9">{i / bins:.1f}</text>'
                    for i in range(0, bins + 1, 2))
    return (f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'<text x="4" y="12" font-size="11" font-weight="bold">{html.escape(title)} (n={len(values)})</text>'
            f'<text x="2" y="{pad_t + 8}" font-size="9">{top}</text>'
            f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{width - 4}" y2="{pad_t + ph}" stroke="#333"/>'
            + "".join(bars) + ticks + "</svg>")


def focus_window(gt: np.ndarray, pred: np.ndarray, prompt=None, min_side: int = 128) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)``: the target, the prediction and the prompt with a margin (small targets stay visible)."""
    h, w = gt.shape
    any_ = gt | pred
    rows, cols = np.flatnonzero(any_.any(axis=1)), np.flatnonzero(any_.any(axis=0))
    ys = [float(rows[0]), float(rows[-1] + 1)] if rows.size else []
    xs = [float(cols[0]), float(cols[-1] + 1)] if cols.size else []
    if prompt is not None:
        if prompt.box is not None:
            xs += [prompt.box[0], prompt.box[2]]
            ys += [prompt.box[1], prompt.box[3]]
        xs += [p[0] for p in prompt.points]
        ys += [p[1] for p in prompt.points]
    if not xs:
        return 0, h, 0, w
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    side = max(min_side, 1.5 * (max(xs) - min(xs)), 1.5 * (max(ys) - min(ys)))
    r0 = int(np.clip(cy - side / 2, 0, max(h - side, 0)))
    c0 = int(np.clip(cx - side / 2, 0, max(w - side, 0)))
    return r0, min(h, int(r0 + side)), c0, min(w, int(c0 + side))


def overlay_png(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, prompt=None, max_side: int = 288) -> str:
    """Base64 PNG of the region around the target: prediction in red, target outline in green, prompt in yellow."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    r0, r1, c0, c1 = focus_window(gt, pred, prompt)
    image, gt, pred = image[r0:r1, c0:c1], gt[r0:r1, c0:c1], pred[r0:r1, c0:c1]
    img = image.astype(np.float32).copy()
    red = np.array([255, 40, 40], np.float32)
    img[pred] = 0.55 * img[pred] + 0.45 * red
    scale = min(1.0, max_side / max(gt.shape))
    edge = gt & ~ndimage.binary_erosion(gt, iterations=max(1, round(1 / scale)))
    img[edge] = (40, 255, 40)
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    if scale < 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))))
    if prompt is not None:
        d = ImageDraw.Draw(pil)
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            d.rectangle([(x0 - c0) * scale, (y0 - r0) * scale, (x1 - c0) * scale, (y1 - r0) * scale],
                        outline=(255, 230, 0), width=2)
        for (x, y), lab in zip(prompt.points, prompt.labels):
            x, y = (x - c0) * scale, (y - r0) * scale
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 230, 0) if lab else (0, 160, 255), outline=(0, 0, 0))
    buf = io.BytesIO()  # a 256-colour palette keeps a report of a dozen examples near 1 MB
    pil.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def pick_gallery(rows: Sequence[Mapping], k: int) -> list[tuple[str, Mapping]]:
    """``k`` best, ``k`` median and ``k`` worst scored samples with a non-empty target."""
    scored = sorted((r for r in rows if r.get("iou") is not None and r.get("gt_area", 0) > 0),
                    key=lambda r: (r["iou"], r["sample_id"]))
    if not scored:
        return []
    n = len(scored)
    mid = max(0, n // 2 - k // 2)
    picks: list[tuple[str, Mapping]] = []
    seen: set[str] = set()
    for label, chunk in (("best", scored[::-1][:k]), ("median", scored[mid:mid + k]), ("worst", scored[:k])):
        for r in chunk:
            if r["sample_id"] not in seen:
                seen.add(r["sample_id"])
                picks.append((label, r))
    return picks


def _gallery_html(rows: Sequence[Mapping], samples: Mapping, predictions: Mapping, k: int) -> str:
    from geoseg.rle import rle_decode

    cards = []
    for label, r in pick_gallery(rows, k):
        s = samples.get(r["sample_id"])
        rec = predictions.get(r["sample_id"]) or {}
        if s is None:
            continue
        gt = s.load_mask()
        pred = rle_decode(rec["rle"]) if rec.get("rle") else np.zeros_like(gt)
        b64 = overlay_png(s.load_image(), gt, pred, s.prompt)
        cards.append(
            f'<figure class="card {label}"><img alt="{html.escape(r["sample_id"])}" src="data:image/png;base64,{b64}">'
            f"<figcaption><b>{label}</b> IoU {100 * r['iou']:.1f} · {html.escape(r['task'])}"
            f"{' · L' + str(r['level']) if r.get('level') not in ('', None) else ''} · {html.escape(r.get('category', ''))}"
            f"<br><code>{html.escape(r['sample_id'])}</code><br>{html.escape(r.get('instruction', '')[:160])}</figcaption></figure>"
        )
    return "".join(cards)


def _html_table(title: str, entries: Sequence[tuple[str, Mapping]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for _, c in COLUMNS)
    body = "".join(
        f"<tr><td>{html.escape(str(label))}</td><td>{s['n']}</td><td>{s['n_scored']}</td>"
        + "".join(f"<td>{fmt_pct(s.get(k))}</td>" for k, _ in COLUMNS) + "</tr>"
        for label, s in entries
    )
    return (f'<table data-section="{html.escape(title.lower())}"><thead><tr><th>{html.escape(title.split()[-1])}</th>'
            f"<th>n</th><th>scored</th>{head}</tr></thead><tbody>{body}</tbody></table>")


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}thead{background:#f0f0f0}.facts td{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.card{margin:0;width:330px;font-size:12px}
.card img{width:320px;height:auto}.card.best figcaption b{color:#2a7}.card.worst figcaption b{color:#c33}.hists{display:flex;flex-wrap:wrap;gap:12px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}"""


def html_report(metrics: Mapping, rows: Sequence[Mapping], samples: Mapping | None = None,
                predictions: Mapping | None = None, gallery_size: int = 4) -> str:
    """The self-contained HTML report."""
    title = f"Benchmark report: {metrics.get('run', {}).get('model', '')}"
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _header_facts(metrics))
    tables = "".join(f"<h2>{html.escape(t)}</h2>" + _html_table(t, e) for t, e in _sections(metrics))
    hists = [svg_histogram([r["iou"] for r in rows if r.get("iou") is not None], "all samples")]
    for task in metrics.get("per_task", {}):
        hists.append(svg_histogram([r["iou"] for r in rows if r.get("iou") is not None and r["task"] == task], task))
    gallery = _gallery_html(rows, samples or {}, predictions or {}, gallery_size) if samples else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<table class="facts">{facts}</table>
<p>All figures in %. Pr@t counts samples with IoU strictly above t. gIoU is the mean per-sample IoU, cIoU = ΣI/ΣU.</p>
{tables}
<h2>IoU histograms</h2><div class="hists">{''.join(hists)}</div>
<h2>Gallery: best, median and worst predictions</h2>
<p class="legend"><span style="background:#ff2828"></span>prediction<span style="background:#28ff28"></span>target outline
<span style="background:#ffe600"></span>prompt</p>
<div class="gallery">{gallery or '<p>(no scored sample with a target)</p>'}</div>
</body></html>
"""


def write_reports(out_dir: str | Path, metrics: Mapping, rows: Sequence[Mapping], samples: Mapping | None = None,
                  gallery_size: int = 4) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` (atomically); returns their paths."""
    from geoseg.bench.runner import CACHE_NAME, PredictionCache, atomic_write_text

    out = Path(out_dir)
    preds = PredictionCache(out / CACHE_NAME).records if (out / CACHE_NAME).exists() else {}
    md, page = out / "report.md", out / "report.html"
    atomic_write_text(md, markdown_report(metrics))
    atomic_write_text(page, html_report(metrics, rows, samples, preds, gallery_size))
    return md, page
