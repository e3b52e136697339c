"""Batch mode of ``geoseg segment``: IMAGE is a folder, a glob pattern or a list file of scenes.

Kept out of ``cli/segment.py`` so the single-scene command stays small: the command
adds :func:`batch_options` and hands over to :func:`run_batch_command` when
:func:`geoseg.batch.is_batch_input` says IMAGE names several scenes.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable

import click

from geoseg.errors import GeosegError
from geoseg.prompts import parse_box, parse_xy


def batch_options(f: Callable) -> Callable:
    """The options only batch mode uses (added to ``geoseg segment``)."""
    options = [
        click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
                     help="Batch: local Dask workers (0 = run in this process)."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Batch: address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786."),
        click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
                     help="Batch: skip a failed scene (reported at the end) or stop the batch."),
        click.option("--merged-vector", default=None, type=click.Path(dir_okay=False, path_type=str),
                     help="Batch: one .gpkg/.geojson/.fgb/.shp with every scene's polygons (EPSG:4326, field 'scene')."),
        click.option("--no-resume", is_flag=True,
                     help="Batch: redo scenes a previous run already completed."),
        click.option("--overwrite", is_flag=True,
                     help="Batch: replace the outputs an earlier run wrote into -o with other options "
                          "(prompts, backend, threshold, ...); without it such a run is refused."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _vector_format(value: str | None) -> str | None:
    if not value:
        return None
    v = value.lower().lstrip(".")
    for fmt in ("gpkg", "geojson", "fgb", "shp"):
        if v == fmt or v.endswith("." + fmt):
            return fmt
    if v == "json" or v.endswith(".json"):
        return "geojson"
    raise GeosegError(f"--vector {value!r} in batch mode", "give the per-scene format: --vector gpkg, geojson, fgb or shp")


def run_batch_command(ctx: click.Context, image: str, *, texts, points, negative_points, boxes, prompt_crs,
                      prompt_file: str | None, output: str, vector, score_raster, bands, tile_size, overlap, backend, checkpoint, device,
                      simplify: float = 0.0, min_area: float = 0.0,
                      as_json: bool, workers: int, scheduler: str | None, on_error: str,
                      merged_vector: str | None, no_resume: bool, overwrite: bool = False,
                      backend_options: dict | None = None) -> None:
    """Run the batch and print its summary; exit code 1 when some scenes failed."""
    from geoseg.batch import run_batch
    from geoseg.pipeline import build_prompts
    from geoseg.raster.io import parse_bands

    quiet = bool((ctx.obj or {}).get("quiet"))
    verbose = int((ctx.obj or {}).get("verbose") or 0)
    if not verbose:
        # Only Dask's errors without -v: its warnings (an unresponsive event loop while a model loads,
        # unmanaged memory) are cluster chatter, and a scene they cost is reported in the summary anyway.
        # Workers are other processes, reading the level from the environment when they import Dask.
        # The group command set the default ("warning") only where the user set none; a user's own
        # value is kept. -v shows Dask's warnings, -vv everything.
        if (ctx.obj or {}).get("dask_log_default") or "DASK_LOGGING__DISTRIBUTED" not in os.environ:
            os.environ["DASK_LOGGING__DISTRIBUTED"] = "error"
        import logging

        logging.getLogger("distributed").setLevel(logging.ERROR)  # this process, when Dask is already imported
        # the scheduler's HTTP endpoint moves to a free port when 8787 is taken: nothing to tell the user
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    prompts = build_prompts([parse_xy(p) for p in points], [parse_xy(p) for p in negative_points],
                            [parse_box(b) for b in boxes], list(texts)) \
        if (points or negative_points or boxes or texts or not prompt_file) else []
    summary = run_batch(
        image, output, prompts, backend=backend, checkpoint=checkpoint, device=device,
        bands=parse_bands(bands), tile_size=tile_size, overlap=overlap, prompt_crs=prompt_crs,
        vector=_vector_format(vector), simplify=simplify, min_area=min_area, score_raster=bool(score_raster),
        merged_vector=merged_vector,
        workers=workers, scheduler=scheduler, on_error=on_error, resume=not no_resume, overwrite=overwrite,
        backend_options=backend_options, prompt_file=prompt_file,
    )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    elif not quiet:
        click.echo(summary.report())
    if summary.failed:
        sys.exit(1)  # not ctx.exit: the group runs click with standalone_mode=False, which swallows it
