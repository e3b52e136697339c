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

from geoseg._version import __version__
from geoseg.bench.metrics import DEFAULT_EMPTY_RULE, EMPTY_RULES, check_rule, per_sample_iou
from geoseg.bench.report import fmt_pct
from geoseg.bench.runner import atomic_write_text, counts_of, ids_digest, metrics_of
from geoseg.errors import InputError

COMPARE_COLUMNS = ("gIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9", "Dice", "no_target_acc")
BOOTSTRAP_RESAMPLES = 2000


def load_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    """``(metrics.json, per_sample rows)`` of a run folder.

    Raises:
        InputError: the folder holds no finished run (never run, or interrupted before it was
            scored), or files this geoseg cannot read (corrupt, or of a layout another version wrote).
    """
    d = Path(run_dir)
    mfile, pfile = d / "metrics.json", d / "per_sample.jsonl"
    for f in (mfile, pfile):
        if not f.exists():
            raise _unfinished(d, f)
    try:
        metrics = json.loads(mfile.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in pfile.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputError(f"corrupt run file in {d} ({exc})", "re-run the benchmark into that folder") from exc
    _check_layout(d, metrics, rows)
    return metrics, rows


def _rerun_hint(d: Path, rescore: bool) -> str:
    """``geoseg bench run`` with the model and data the folder's ``run.json`` names, if it names them."""
    try:
        info = json.loads((d / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    model, data = info.get("model") or "MODEL", info.get("data") or "DATA"
    return f"geoseg bench run --model {model} --data {data} -o {d}" + (" --rescore-only" if rescore else "")


def _unfinished(d: Path, missing: Path) -> InputError:
    cache = d / "predictions.jsonl"
    if cache.exists():  # predictions are written as they come; metrics only once the run is scored
        n = sum(1 for line in cache.read_text(encoding="utf-8").splitlines() if line.strip())
        return InputError(f"{d} holds an unfinished run ({n} predictions, no {missing.name})",
                          f"finish it with {_rerun_hint(d, rescore=False)}, which resumes where it stopped")
    return InputError(f"{missing} does not exist", f"run 'geoseg bench run ... -o {d}' first")


#: what every per-sample row needs to be re-scored (a scored row also needs the counts)
_ROW_KEYS = ("sample_id", "task")
_COUNT_KEYS = ("inter", "union", "pred_area", "gt_area")


def _check_layout(d: Path, metrics: object, rows: Sequence[object]) -> None:
    """Refuse files whose layout this geoseg does not know, instead of scoring missing counts as 0."""
    fix = f"re-score the run with this geoseg: {_rerun_hint(d, rescore=True)}"
    if not isinstance(metrics, dict) or not isinstance(metrics.get("run", {}), dict):
        raise InputError(f"{d / 'metrics.json'} is not a geoseg run record", fix)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"line {n} of {d / 'per_sample.jsonl'} is not a per-sample record", fix)
        need = _ROW_KEYS if row.get("unsupported") else _ROW_KEYS + _COUNT_KEYS
        missing = [k for k in need if k not in row]
        if missing or any(not isinstance(row[k], int | float) or isinstance(row[k], bool) for k in need[2:]):
            what = f"lacks {', '.join(missing)}" if missing else "has non-numeric pixel counts"
            version = metrics.get("run", {}).get("geoseg_version")
            by = f" (written by geoseg {version}, this is {__version__})" if version and version != __version__ else ""
            raise InputError(f"line {n} of {d / 'per_sample.jsonl'} {what}{by}", fix)


def _disambiguate(runs: list[dict]) -> None:
    """Name runs that share a model name (two SAM checkpoints, say) by their run folder as well."""
    models = [r["name"] for r in runs]
    folders = [Path(r["dir"]).name for r in runs]
    for r, model in zip(runs, models):
        if models.count(model) > 1:
            same = [f for m, f in zip(models, folders) if m == model]
            folder = Path(r["dir"]).name
            r["name"] = f"{model} ({folder if same.count(folder) == 1 else r['dir']})"


def _benchmark_of(metrics: dict) -> tuple[str | None, str | None]:
    """``(benchmark name, format)`` a run was scored on, as far as its record says."""
    run = metrics.get("run", {})
    return run.get("benchmark"), run.get("format") or None


def _same_benchmark(a: tuple[str | None, str | None], b: tuple[str | None, str | None]) -> bool:
    """Parts both records name must agree (records of older versions may lack the benchmark)."""
    return all(x is None or y is None or x == y for x, y in zip(a, b))


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
    """Re-score every run under ``rule``; returns ``{rule, runs: [{name, dir, metrics, vs_first}], same_samples,
    same_benchmark}``.

    ``vs_first`` (runs after the first, on the same benchmark): :func:`paired_difference` to the
    first run. Runs of other benchmarks get none — their sample ids may coincide without naming
    the same samples — and ``same_benchmark`` is false.

    Raises:
        InputError: a folder is given twice, or holds no finished run (see :func:`load_run`).
    """
    check_rule(rule)
    seen: set[Path] = set()
    for d in run_dirs:
        if Path(d).resolve() in seen:
            raise InputError(f"run folder {d} is given twice", "list each run folder once")
        seen.add(Path(d).resolve())
    runs, base, first_bench = [], None, None
    for d in run_dirs:
        metrics, rows = load_run(d)
        m = metrics_of(rows, rule, metrics.get("run", {}))
        bench = _benchmark_of(metrics)
        run = {"name": str(metrics.get("run", {}).get("model", Path(d).name)), "dir": str(d), "metrics": m,
               "digest": ids_digest([r["sample_id"] for r in rows]), "benchmark": bench[0], "n_samples": len(rows)}
        ious = _ious(rows, rule)
        if base is None:
            base, first_bench = ious, bench
        elif not _same_benchmark(first_bench, bench):
            run["other_benchmark"] = True
        elif set(base) & set(ious):
            run["vs_first"] = paired_difference(base, ious)
        runs.append(run)
    _disambiguate(runs)
    return {"empty_rule": rule, "empty_rule_meaning": EMPTY_RULES[rule], "runs": runs,
            "same_samples": len({r["digest"] for r in runs}) <= 1,
            "same_benchmark": not any(r.get("other_benchmark") for r in runs)}


def _warnings(cmp: dict) -> list[str]:
    """Why the columns are not comparable, if they are not."""
    if not cmp.get("same_benchmark", True):
        names = "; ".join(f"{r['name']}: {r.get('benchmark') or r['metrics']['run'].get('format') or '?'}"
                          for r in cmp["runs"])
        return [f"Warning: the runs were scored on different benchmarks ({names}); rows are not comparable "
                "and no paired difference is given."]
    if not cmp["same_samples"]:
        sizes = ", ".join(f"{r['name']} {r.get('n_samples', r['metrics'].get('n_samples'))}" for r in cmp["runs"])
        return [f"Warning: the runs were scored on different sample sets (samples: {sizes}); rows are not "
                "comparable. The paired differences use only the samples both runs scored."]
    return []


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
    out += [f"\n**{w}**" for w in _warnings(cmp)]
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
    warn = "".join(f"<p><b>{html.escape(w)}</b></p>" for w in _warnings(cmp))
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
