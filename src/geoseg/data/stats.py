"""The stats report of a build: counts, rejection reasons, instruction lengths and an example sheet.

Written next to the shards (``stats.json``, ``stats.md``, ``examples.png``) by
``geoseg data build`` and on demand by ``geoseg data stats``. Counts are computed from the
shards themselves (only the light columns are read); filter rejections, loading notes and
skipped scenes come from the manifest, since rejected instances never reach a shard.
The report is deterministic: the same build gives the same report bytes.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from geoseg.data.dataset import shard_files
from geoseg.data.writer import TMP_SUFFIX, write_json_atomic
from geoseg.errors import InputError

log = logging.getLogger(__name__)

#: instruction-length bins in words: [lo, hi)
LENGTH_BINS = (1, 4, 7, 10, 13, 16, 20, 25, 30, 40, 60)
COLUMNS = ["sample_id", "source", "split", "task", "level", "category", "instruction", "empty_target"]


def _bin_label(i: int) -> str:
    lo = LENGTH_BINS[i]
    return f"{lo}-{LENGTH_BINS[i + 1] - 1}" if i + 1 < len(LENGTH_BINS) else f"{lo}+"


def compute(build_dir: str | Path) -> dict:
    """Counts of a build folder (see the module docstring for what is in it)."""
    import pyarrow.dataset as pads

    out = Path(build_dir)
    man_path = out / "manifest.json"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {man_path} ({exc})", "pass a folder built by 'geoseg data build'") from exc
    files = shard_files(out)
    counts: dict[str, Counter] = {k: Counter() for k in ("split", "source", "task", "task_level", "category",
                                                          "category_task", "no_target_task")}
    hist: dict[str, Counter] = {}
    n, total_words, max_words = 0, 0, 0
    batches = pads.dataset([str(f) for f in files], format="parquet").to_batches(columns=COLUMNS) if files else []
    for batch in batches:  # streamed: memory does not grow with the build
        cols = {c: batch.column(c).to_pylist() for c in ("source", "split", "task", "level", "category", "empty_target")}
        words = pc.list_value_length(pc.utf8_split_whitespace(batch.column("instruction"))).to_numpy(zero_copy_only=False)
        bins = np.clip(np.searchsorted(LENGTH_BINS, words, side="right") - 1, 0, len(LENGTH_BINS) - 1)
        for i in range(batch.num_rows):
            task = cols["task"][i]
            counts["split"][cols["split"][i]] += 1
            counts["source"][cols["source"][i]] += 1
            counts["task"][task] += 1
            counts["task_level"][f"{task}/{cols['level'][i]}"] += 1
            counts["category"][cols["category"][i]] += 1
            counts["category_task"][f"{cols['category'][i]}/{task}"] += 1
            if cols["empty_target"][i]:
                counts["no_target_task"][task] += 1
            hist.setdefault(task, Counter())[_bin_label(int(bins[i]))] += 1
        n += batch.num_rows
        total_words += int(words.sum())
        max_words = max(max_words, int(words.max()) if words.size else 0)
    length = {"mean_words": round(total_words / n, 2) if n else 0.0, "max_words": max_words}
    mc = manifest.get("counts", {})
    rejected = {k.split("/", 1)[1]: v for k, v in mc.items() if k.startswith("rejected/")}
    return {
        "rows": n,
        "scenes": manifest.get("scenes", 0),
        "tiles": mc.get("tiles", 0),
        "instances": mc.get("instances", 0),
        "kept_instances": mc.get("kept", 0),
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": int(sum(rejected.values())),
        "notes": {k.split("/", 1)[1]: v for k, v in sorted(mc.items()) if k.startswith("notes/")},
        "skipped_scenes": manifest.get("skipped", []),
        "splits": manifest.get("splits", {}),
        **{f"by_{k}": dict(sorted(v.items())) for k, v in counts.items()},
        "instruction_length": {**length, "bins": [_bin_label(i) for i in range(len(LENGTH_BINS))],
                               "histogram": {t: [int(h.get(_bin_label(i), 0)) for i in range(len(LENGTH_BINS))]
                                             for t, h in sorted(hist.items())}},
    }


def markdown(stats: dict) -> str:
    """A readable summary of :func:`compute`'s result."""
    lines = [f"# Data-engine build: {stats['rows']} triplets", "",
             f"{stats['scenes']} scenes, {stats['tiles']} tiles, {stats['instances']} instances, "
             f"{stats['kept_instances']} kept, {stats['rejected_total']} rejected.", ""]

    def table(title: str, d: dict, head: str) -> None:
        lines.extend([f"## {title}", "", f"| {head} | count |", "|---|---:|"])
        lines.extend(f"| {k} | {v} |" for k, v in d.items())
        lines.append("")

    table("Splits", stats["by_split"], "split")
    table("Sources", stats["by_source"], "source")
    table("Tasks", stats["by_task"], "task")
    table("Task / level", stats["by_task_level"], "task/level")
    table("No-target rows per task", stats["by_no_target_task"], "task")
    table("Categories", stats["by_category"], "category")
    table("Filter rejections (instances)", stats["rejected"], "reason")
    if stats["notes"]:
        table("Loading notes", stats["notes"], "note")
    il = stats["instruction_length"]
    lines.extend(["## Instruction length (words)", "",
                  f"mean {il['mean_words']}, max {il['max_words']}", "",
                  "| words | " + " | ".join(il["histogram"]) + " |",
                  "|---|" + "---:|" * len(il["histogram"])])
    for i, b in enumerate(il["bins"]):
        lines.append(f"| {b} | " + " | ".join(str(h[i]) for h in il["histogram"].values()) + " |")
    lines.append("")
    if stats["skipped_scenes"]:
        lines.extend(["## Skipped scenes", ""] + [f"- {s}" for s in stats["skipped_scenes"]] + [""])
    return "\n".join(lines)


def pick_examples(build_dir: str | Path, n: int = 12, seed: int = 0) -> list[dict]:
    """``n`` rows spread over tasks and sources (one no-target row per text task), chosen reproducibly.

    Only three light columns of every row are read (as arrays) to choose; the chosen rows are
    then fetched whole, so this stays small for a build of millions of rows.
    """
    import pyarrow.dataset as pads

    files = shard_files(build_dir)
    if not files:
        return []
    ds = pads.dataset([str(f) for f in files], format="parquet")
    light = ds.to_table(columns=["task", "source", "empty_target"])
    task = light.column("task").combine_chunks().dictionary_encode()
    source = light.column("source").combine_chunks().dictionary_encode()
    t_idx, t_names = task.indices.to_numpy(), task.dictionary.to_pylist()
    s_idx, s_names = source.indices.to_numpy(), source.dictionary.to_pylist()
    empty = light.column("empty_target").to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(seed)
    tasks = sorted(t_names)
    k = max(1, n // max(len(tasks), 1))
    picked: list[int] = []
    for t in tasks:
        in_task = t_idx == t_names.index(t)
        empties = np.flatnonzero(in_task & empty) if t != "interactive" else np.zeros(0, np.int64)
        queues = [list(rng.permutation(np.flatnonzero(in_task & ~empty & (s_idx == s_names.index(src)))))
                  for src in sorted(s_names)]
        want = k - 1 if empties.size else k
        chosen: list[int] = []
        while len(chosen) < want and any(queues):  # round-robin over sources
            for q in queues:
                if q and len(chosen) < want:
                    chosen.append(int(q.pop()))
        if empties.size:
            chosen.append(int(empties[int(rng.integers(empties.size))]))
        picked.extend(chosen)
    picked = picked[:n]
    table = ds.take(pa.array(picked, type=pa.int64())) if picked else None
    return table.to_pylist() if table is not None else []


def example_sheet(rows: list[dict], path: str | Path, cell: int = 256, cols: int = 4) -> Path:
    """A PNG grid of tiles with the target mask (red), interactive geometry (yellow) and the instruction."""
    from PIL import Image, ImageDraw, ImageFont

    from geoseg.data.imagery import read_rgb
    from geoseg.data.schema import prompt_of
    from geoseg.rle import rle_decode

    font = ImageFont.load_default(size=12)
    text_h = 84
    n_rows = max(1, -(-len(rows) // cols))
    sheet = Image.new("RGB", (cols * cell, n_rows * (cell + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        x0, y0 = (i % cols) * cell, (i // cols) * (cell + text_h)
        try:
            rgb = read_rgb(r).astype(np.float32)
        except InputError as exc:
            log.warning("example %s not drawn: %s", r["sample_id"], exc)
            continue
        m = rle_decode(r["mask"])
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.array([255, 0, 0], np.float32)
        tile = Image.fromarray(rgb.astype(np.uint8))
        scale = cell / max(tile.size)
        tile = tile.resize((max(1, round(tile.size[0] * scale)), max(1, round(tile.size[1] * scale))), Image.BILINEAR)
        sheet.paste(tile, (x0, y0))
        p = prompt_of(r)
        if p.get("box"):
            bx = [v * scale for v in p["box"]]
            draw.rectangle([x0 + bx[0], y0 + bx[1], x0 + bx[2], y0 + bx[3]], outline=(255, 255, 0), width=2)
        for px, py in p.get("points", []):
            cx, cy = x0 + px * scale, y0 + py * scale
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=(255, 255, 0), outline=(0, 0, 0))
        head = f"{r['task']} L{r['level']} {r['category']}" + (" (no target)" if r["empty_target"] else "")
        body = textwrap.wrap(r["instruction"], width=40)[:4]
        draw.text((x0 + 4, y0 + cell + 2), head, fill=(160, 0, 0), font=font)
        for j, line in enumerate(body):
            draw.text((x0 + 4, y0 + cell + 18 + 15 * j), line, fill=(0, 0, 0), font=font)
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def write_report(build_dir: str | Path, out_dir: str | Path | None = None, examples: int = 12,
                 seed: int = 0) -> dict:
    """Write ``stats.json``, ``stats.md`` and (with ``examples > 0``) ``examples.png``; returns the stats."""
    src = Path(build_dir)
    dst = Path(out_dir) if out_dir else src
    dst.mkdir(parents=True, exist_ok=True)
    stats = compute(src)
    write_json_atomic(dst / "stats.json", stats)
    tmp = dst / ("stats.md" + TMP_SUFFIX)
    tmp.write_text(markdown(stats), encoding="utf-8")
    os.replace(tmp, dst / "stats.md")
    if examples > 0 and stats["rows"]:
        example_sheet(pick_examples(src, examples, seed), dst / "examples.png")
    return stats
