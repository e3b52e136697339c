"""``geoseg data``: build instruction shards, export them to GeoSeg-Bench, report statistics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.errors import InputError


def _parse_source(value: str) -> dict:
    kind, sep, path = value.partition("=")
    if not sep or not kind or not path:
        raise InputError(f"cannot read --source {value!r}", "write it as TYPE=PATH, e.g. --source dubai=../shared/data/dubai")
    return {"type": kind.strip(), "path": path.strip()}


@click.group()
def data() -> None:
    """Build and inspect instruction datasets (the GeoSeg-1M data engine)."""


@data.command("build")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Build config YAML (configs/data/*.yaml).")
@click.option("--source", "sources", multiple=True, metavar="TYPE=PATH",
              help="Add a source: dubai, dk_fields, ukis or coco (COCO: PATH is the annotation JSON).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed -> identical shards).")
@click.option("--tile-size", type=int, default=None, help="Tile size in pixels (default 512).")
@click.option("--stride", type=int, default=None, help="Tile stride in pixels (default 256).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Local Dask worker processes; 0 runs in this process.")
@click.option("--scheduler", default=None, metavar="ADDR", help="Address of an existing Dask scheduler.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable scene instead of skipping it.")
@click.option("--paraphrase-url", default=None, metavar="URL",
              help="Reword referring/reasoning instructions through this OpenAI-compatible API (off by default; "
                   "key from $OPENAI_API_KEY).")
@click.option("--paraphrase-model", default=None, help="Model name for --paraphrase-url.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write stats.json, stats.md and examples.png next to the shards.")
@click.pass_context
def build_cmd(ctx: click.Context, config_path: str | None, sources: tuple[str, ...], out_dir: str, seed: int | None,
              tile_size: int | None, stride: int | None, workers: int, scheduler: str | None, strict: bool,
              paraphrase_url: str | None, paraphrase_model: str | None, report: bool) -> None:
    """Turn segmentation datasets into image-mask-instruction Parquet shards."""
    import logging

    from geoseg.data.engine import BuildConfig, build, read_config_file

    if (ctx.obj or {}).get("verbose", 0) < 2:  # Dask's own INFO chatter only with -vv
        logging.getLogger("distributed").setLevel(logging.WARNING)
    raw: dict = read_config_file(config_path) if config_path else {}  # a mapping, or a one-line error
    extra = [_parse_source(s) for s in sources]
    if raw.get("sources") is None:
        raw["sources"] = extra
    elif isinstance(raw["sources"], list):
        raw["sources"] = raw["sources"] + extra
    # anything else is left for BuildConfig.from_dict to name
    for key, val in (("seed", seed), ("tile_size", tile_size), ("stride", stride)):
        if val is not None:
            raw[key] = val
    if (paraphrase_url or paraphrase_model) and isinstance(raw.get("paraphrase") or {}, dict):
        raw["paraphrase"] = dict(raw.get("paraphrase") or {})
        if paraphrase_url:
            raw["paraphrase"]["url"] = paraphrase_url
        if paraphrase_model:
            raw["paraphrase"]["model"] = paraphrase_model
    cfg = BuildConfig.from_dict(raw)
    manifest = build(cfg, out_dir, workers=workers, scheduler=scheduler, strict=strict, report=report)
    quiet = (ctx.obj or {}).get("quiet", False)
    if not quiet:
        counts = manifest["counts"]
        by_split = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("split/")}
        click.echo(f"{manifest['rows']} samples in {len(manifest['shards'])} shards -> {out_dir} "
                   f"({manifest['elapsed_s']:.1f} s, {manifest['rows'] / max(manifest['elapsed_s'], 1e-9):.0f} samples/s)")
        click.echo("splits: " + ", ".join(f"{k}={v}" for k, v in sorted(by_split.items())))
        if manifest["skipped"]:
            click.echo(f"skipped {len(manifest['skipped'])} scenes (see manifest.json)")
        if report:
            click.echo(f"report: {Path(out_dir) / 'stats.md'}, {Path(out_dir) / 'examples.png'}")


@data.command("info")
@click.argument("shards", type=click.Path(exists=True))
def info_cmd(shards: str) -> None:
    """Print a shard folder's manifest counts as JSON."""
    path = Path(shards)
    man = path / "manifest.json" if path.is_dir() else path
    try:
        manifest = json.loads(man.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {man} ({exc})", "pass a folder built by 'geoseg data build'") from exc
    click.echo(json.dumps({"rows": manifest["rows"], "splits": manifest["splits"], "counts": manifest["counts"]}, indent=2))


@data.command("stats")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the report (default: the build folder).")
@click.option("--examples", type=int, default=12, show_default=True, help="Tiles on the example sheet (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed choosing the example tiles.")
@click.pass_context
def stats_cmd(ctx: click.Context, build_dir: str, out_dir: str | None, examples: int, seed: int) -> None:
    """Write the stats report (stats.json, stats.md, examples.png) of a build folder."""
    from geoseg.data.stats import markdown, write_report

    stats = write_report(build_dir, out_dir, examples=examples, seed=seed)
    if not (ctx.obj or {}).get("quiet", False):
        click.echo(markdown(stats))


@data.command("export")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--format", "fmt", type=click.Choice(["geoseg-bench"]), default="geoseg-bench", show_default=True,
              help="Target layout: UniGeoSeg's GeoSeg-Bench ({split}.json of img/mask/json).")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable; default all).")
@click.option("--task", "tasks", multiple=True, type=click.Choice(["interactive", "referring", "reasoning"]),
              help="Only these tasks (repeatable; default all).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in the same folder.")
@click.pass_context
def export_cmd(ctx: click.Context, build_dir: str, out_dir: str, fmt: str, splits: tuple[str, ...],
               tasks: tuple[str, ...], overwrite: bool) -> None:
    """Export shards to another dataset layout (PNG tiles and 0/255 masks, QA json)."""
    from geoseg.data.export import export_geoseg_bench

    summary = export_geoseg_bench(build_dir, out_dir, splits or None, tasks or None, overwrite=overwrite)
    if not (ctx.obj or {}).get("quiet", False):
        for split, s in sorted(summary.items()):
            click.echo(f"{split}: {s['entries']} image/mask/QA triples, {s['questions']} questions -> "
                       f"{Path(out_dir) / (split + '.json')}")
