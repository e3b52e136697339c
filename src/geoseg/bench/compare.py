"""Several runs side by side (``geoseg bench compare DIR1 DIR2 ...``).

Runs are re-scored from their ``per_sample.jsonl`` counts under *one* empty-target rule,
so the table never mixes rules. Runs scored on different sample sets are flagged.

Every run after the first also gets its paired gIoU difference to the first run, per task,
with a 95 % bootstrap interval over the samples both runs scored: on a 400-sample task a
1-point gap is often noise, and the table alone cannot say which.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.bench.metrics import DEFAULT_EMPTY_RULE, EMPTY_RULES, check_rule, per_sample_iou
from geoseg.bench.report import fmt_pct
from geoseg.bench.runner import atomic_write_text, counts_of, ids_digest, metrics_of
from geoseg.errors import InputError

COMPARE_COLUMNS = ("gIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9", "Dice", "no_target_acc")
BOOTSTRAP_RESAMPLES = 2000


def load_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    """``(metrics.json, per_sample rows)`` of a run folder."""
    d = Path(run_dir)
    mfile, pfile = d / "metrics.json", d / "per_sample.jsonl"
    for f in (mfile, pfile):
        if not f.exists():
            raise InputError(f"{f} does not exist", f"run 'geoseg bench run ... -o {d}' first")
    try:
        metrics = json.loads(mfile.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in pfile.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputError(f"corrupt run file in {d} ({exc})", "re-run the benchmark into that folder") from exc
    return metrics, rows


def _ious(rows: Sequence[dict], rule: str) -> dict[str, tuple[str, float]]:
    """``sample_id -> (task, IoU under rule)`` of the supported, scored rows."""
    kept = [r for r in rows if not r.get("unsupported")]
    iou = per_sample_iou(counts_of(kept), rule)
    return {r["sample_id"]: (r["task"], float(v)) for r, v in zip(kept, iou, strict=True) if not np.isnan(v)}


def paired_difference(base: dict[str, tuple[str, float]], other: dict[str, tuple[str, float]],
                      seed: int = 0) -> dict[str, dict]:
    """gIoU of ``other`` minus ``base`` on their common samples, overall and per task.

    Returns ``{group: {n, diff, low, high}}`` with a percentile bootstrap 95 % interval
    (``BOOTSTRAP_RESAMPLES`` resamples of the paired per-sample differences, seeded).
    """
    rng = np.random.default_rng(seed)
    common = sorted(set(base) & set(other))
    out: dict[str, dict] = {}
    for group in ["all", *sorted({base[k][0] for k in common})]:
        ids = [k for k in common if group == "all" or base[k][0] == group]
        d = np.array([other[k][1] - base[k][1] for k in ids])
        boots = d[rng.integers(0, len(d), (BOOTSTRAP_RESAMPLES, len(d)))].mean(1)
        out[group] = {"n": len(d), "diff": float(d.mean()), "low": float(np.percentile(boots, 2.5)),
                      "high": float(np.percentile(boots, 97.5))}
    return out


def compare_runs(run_dirs: Sequence[str | Path], rule: str = DEFAULT_EMPTY_RULE) -> dict:
    """Re-score every run under ``rule``; returns ``{rule, runs: [{name, dir, metrics, vs_first}], same_samples}``.

    ``vs_first`` (runs after the first): :func:`paired_difference` to the first run.
    """
    check_rule(rule)
    runs, base = [], None
    for d in run_dirs:
        metrics, rows = load_run(d)
        m = metrics_of(rows, rule, metrics.get("run", {}))
        run = {"name": metrics.get("run", {}).get("model", Path(d).name), "dir": str(d), "metrics": m,
               "digest": ids_digest([r["sample_id"] for r in rows])}
        ious = _ious(rows, rule)
        if base is None:
            base = ious
        elif set(base) & set(ious):
            run["vs_first"] = paired_difference(base, ious)
        runs.append(run)
    return {"empty_rule": rule, "empty_rule_meaning": EMPTY_RULES[rule], "runs": runs,
            "same_samples": len({r["digest"] for r in runs}) <= 1}


def _paired_cell(run: dict, group: str) -> str:
    p = run.get("vs_first", {}).get(group)
    if p is None:
        return "–"
    return f"{100 * p['diff']:+.1f} [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"


def _paired_groups(cmp: dict) -> list[str]:
    groups = {g for r in cmp["runs"][1:] for g in r.get("vs_first", {})}
    return ["all", *sorted(groups - {"all"})] if groups else []


def _groups(cmp: dict) -> list[tuple[str, str]]:
    keys = [("overall", "all")]
    seen = set()
    for section in ("per_task", "per_level"):
        for r in cmp["runs"]:
            for k in r["metrics"].get(section, {}):
                if (section, k) not in seen:
                    seen.add((section, k))
                    keys.append((section, k))
    return keys


def _cell(run: dict, section: str, key: str, col: str) -> str:
    m = run["metrics"]
    summ = m["overall"] if section == "overall" else m.get(section, {}).get(key)
    if summ is None:
        n_uns = m.get("unsupported_per_task", {}).get(key) if section == "per_task" else None
        return "n/a" if n_uns else "–"
    return fmt_pct(summ.get(col))


def markdown_compare(cmp: dict) -> str:
    """One table per metric column group: rows = overall/task/level, columns = runs."""
    names = [r["name"] for r in cmp["runs"]]
    out = [f"# Comparison ({len(names)} runs)", "", f"Empty-target rule: **{cmp['empty_rule']}** ({cmp['empty_rule_meaning']}).",
           "All figures in %. n/a = the backend cannot take that task's prompts."]
    if not cmp["same_samples"]:
        out.append("\n**Warning: the runs were scored on different sample sets; rows are not comparable.**")
    for col in COMPARE_COLUMNS:
        out += ["", f"## {col}", "", "| group | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for section, key in _groups(cmp):
            label = "all" if section == "overall" else f"{section.removeprefix('per_')} {key}"
            out.append(f"| {label} | " + " | ".join(_cell(r, section, key, col) for r in cmp["runs"]) + " |")
    groups = _paired_groups(cmp)
    if groups:
        others = cmp["runs"][1:]
        out += ["", f"## gIoU difference to {names[0]} (paired, 95 % bootstrap interval)", "",
                "Points of gIoU on the samples both runs scored; an interval that contains 0 is not a difference.",
                "", "| group | " + " | ".join(r["name"] for r in others) + " |", "|---|" + "---|" * len(others)]
        out += [f"| {g} | " + " | ".join(_paired_cell(r, g) for r in others) + " |" for g in groups]
    return "\n".join(out) + "\n"


def html_compare(cmp: dict) -> str:
    names = [r["name"] for r in cmp["runs"]]
    parts = []
    for col in COMPARE_COLUMNS:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = ""
        for section, key in _groups(cmp):
            label = "all" if section == "overall" else f"{section.removeprefix('per_')} {key}"
            body += f"<tr><td>{html.escape(label)}</td>" + "".join(
                f"<td>{_cell(r, section, key, col)}</td>" for r in cmp["runs"]) + "</tr>"
        parts.append(f"<h2>{html.escape(col)}</h2><table><thead><tr><th>group</th>{head}</tr></thead><tbody>{body}</tbody></table>")
    groups = _paired_groups(cmp)
    if groups:
        others = cmp["runs"][1:]
        head = "".join(f"<th>{html.escape(r['name'])}</th>" for r in others)
        body = "".join(f"<tr><td>{html.escape(g)}</td>" + "".join(f"<td>{_paired_cell(r, g)}</td>" for r in others)
                       + "</tr>" for g in groups)
        parts.append(f"<h2>gIoU difference to {html.escape(names[0])} (paired, 95 % bootstrap interval)</h2>"
                     f"<table><thead><tr><th>group</th>{head}</tr></thead><tbody>{body}</tbody></table>")
    warn = "" if cmp["same_samples"] else "<p><b>Warning: the runs were scored on different sample sets.</b></p>"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>geoseg comparison</title><style>"
            "body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>Comparison of {len(names)} runs</h1><p>Empty-target rule: <b>{html.escape(cmp['empty_rule'])}</b> "
            f"({html.escape(cmp['empty_rule_meaning'])}). All figures in %.</p>{warn}{''.join(parts)}</body></html>")


def write_compare(cmp: dict, out: str | Path) -> list[Path]:
    """Write ``compare.md``, ``compare.html`` and ``compare.json`` into folder ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / "compare.md", d / "compare.html", d / "compare.json"]
    atomic_write_text(paths[0], markdown_compare(cmp))
    atomic_write_text(paths[1], html_compare(cmp))
    atomic_write_text(paths[2], json.dumps(cmp, indent=2))
    return paths
