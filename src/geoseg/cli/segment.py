"""``geoseg segment``: one scene, prompts in pixels or map coordinates, mask + vectors out.

The command only parses options and calls :func:`geoseg.pipeline.segment`; everything
else (reading, tiling, writing) lives in the library so the batch runner and the
server reuse it.
"""

from __future__ import annotations

import json

import click

from geoseg.cli.batch import batch_options
from geoseg.cli.trainfree import vlm_kwargs, vlm_options
from geoseg.prompts import parse_box, parse_xy

MAX_HINTS = 5  # "nothing found" notes printed; a prompt file of hundreds of features could print hundreds


def _fmt_area(value: float, unit: str) -> str:
    if unit == "m2":
        return f"{value / 10_000:.3f} ha" if value >= 10_000 else f"{value:.1f} m²"
    return f"{value:.0f} px"


def answer_step_options(f):
    """Add ``--no-selector`` / ``--no-refine`` / ``--no-object-region`` / ``--no-zoom``: the unified model
    answers without one of its answer steps (``geoseg segment`` and ``geoseg bench run`` take all four)."""
    f = click.option("--no-zoom", is_flag=True,
                     help="unified backend: answer a box too small for the working scale from the whole "
                          "window's features instead of a zoomed crop around it.")(f)
    f = click.option("--no-object-region", is_flag=True,
                     help="unified backend: answer points/boxes without keeping the answer to the one class "
                          "region the prompt marks (the network's semantic map; for points, the parts they touch).")(f)
    f = click.option("--no-refine", is_flag=True,
                     help="unified backend: answer points/boxes with the decoder's own mask, without re-cutting "
                          "it along image edges (GrabCut seeded by the network).")(f)
    return click.option("--no-selector", is_flag=True,
                        help="unified backend: answer text with every part the decoder found, without the "
                             "checkpoint's instance selector.")(f)


def answer_step_kwargs(no_selector: bool, no_refine: bool, no_object_region: bool, no_zoom: bool = False) -> dict:
    """The unified backend's keyword arguments for the flags of :func:`answer_step_options`."""
    return {**({"use_selector": False} if no_selector else {}), **({"refine": False} if no_refine else {}),
            **({"object_region": False} if no_object_region else {}), **({"zoom": False} if no_zoom else {})}


@click.command("segment")
@click.argument("image", type=click.Path(dir_okay=True, path_type=str))
@click.option("--text", "texts", multiple=True, help="Referring expression or reasoning query (needs a text-capable backend).")
@click.option("--point", "points", multiple=True, metavar="X,Y", help="Positive point on the target (repeatable).")
@click.option("--negative-point", "negative_points", multiple=True, metavar="X,Y",
              help="Point that is NOT the target (repeatable).")
@click.option("--box", "boxes", multiple=True, metavar="X0,Y0,X1,Y1", help="Box around a target (repeatable: one target each).")
@click.option("--prompt-crs", default=None, metavar="EPSG:XXXX",
              help="CRS of the prompt coordinates (default: pixel column,row of the image).")
@click.option("--prompt-file", default=None, type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="Vector file (.gpkg, .shp, .geojson, .fgb, or a .csv with x/y, lon/lat or WKT columns): each "
                   "point feature is a point prompt, each polygon a box around its target; features off the "
                   "scene are left out.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="Mask GeoTIFF to write (uint8: 1 target, 0 background, 255 nodata); batch: output folder.")
@click.option("--vector", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Polygons: .gpkg, .fgb or .shp (source CRS) or .geojson (EPSG:4326); batch: the format.")
@click.option("--simplify", default=0.0, show_default=True, type=float, metavar="TOL",
              help="Simplify the polygons, tolerance in pixels (the same in any CRS): 1 removes the pixel "
                   "staircases, 0 keeps the exact pixel outlines. Each prompt's polygons stay valid and do not "
                   "overlap. Vectors only: the mask raster is not changed. Needs --vector.")
@click.option("--min-area", default=0.0, show_default=True, type=float, metavar="A",
              help="Drop polygons and fill holes smaller than A, in the layer's area unit (m² for a "
                   "georeferenced scene, pixels otherwise). Vectors only: the mask raster is not changed. "
                   "Needs --vector.")
@click.option("--score-raster", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Optional float32 score GeoTIFF.")
@click.option("--bands", default=None, metavar="B,G,R", help="1-based bands to read as RGB, e.g. 4,3,2 (or one band).")
@click.option("--tile-size", default=1024, show_default=True, type=int, help="Window size for large scenes.")
@click.option("--overlap", default=128, show_default=True, type=int, help="Overlap between windows, in pixels.")
@click.option("--backend", default=None, help="Segmenter backend: unified (default), classical, trainfree, sam, sam2.")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Weights for the backend: a unified checkpoint from 'geoseg train' (default: the shipped "
                   "model), or SAM / SAM 2 weights for sam, sam2 and trainfree. classical takes none.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--mask-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="unified backend: probability at or above which a pixel is in the mask (default: the "
                   "checkpoint's per-task values, tuned on its validation split).")
@answer_step_options
@click.option("--no-scene-presence", is_flag=True,
              help="unified backend, text over several windows: decide per window whether the target is there "
                   "(a window just under the presence threshold drops its answer) instead of holding such "
                   "answers until another window of the scene finds the target.")
@click.option("--literal-text", is_flag=True,
              help="unified backend: ask a --text that only names a class ('buildings', 'the water') as written, "
                   "not as the model's question for the whole class.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@vlm_options  # --backend trainfree: the multimodal LLM that grounds --text
@batch_options
@click.pass_context
def segment(ctx: click.Context, image: str, texts: tuple[str, ...], points: tuple[str, ...],
            negative_points: tuple[str, ...], boxes: tuple[str, ...], prompt_crs: str | None,
            prompt_file: str | None, output: str,
            vector: str | None, simplify: float, min_area: float, score_raster: str | None, bands: str | None,
            tile_size: int, overlap: int,
            backend: str | None, checkpoint: str | None, device: str, mask_threshold: float | None, no_selector: bool,
            no_refine: bool, no_object_region: bool, no_zoom: bool, no_scene_presence: bool, literal_text: bool,
            as_json: bool,
            **batch) -> None:
    """Segment IMAGE from --point/--box/--text prompts and write a georeferenced mask (and polygons).

    \b
    Examples:
      geoseg segment scene.tif --box 150,150,250,250 -o mask.tif --vector fields.gpkg
      geoseg segment scene.tif --point 120,80 --negative-point 140,90 -o mask.tif
      geoseg segment scene.tif --box 9.51,55.70,9.52,55.71 --prompt-crs EPSG:4326 -o m.tif
      geoseg segment scene.tif --prompt-file parcels.gpkg -o m.tif --vector fields.gpkg
      geoseg segment scene.tif --text "buildings" -o m.tif --vector b.gpkg --simplify 1 --min-area 20
      geoseg segment scene.tif --text "the largest building" --checkpoint model.pt -o m.tif
      geoseg segment 'scenes/*.tif' --text "buildings" -o out/ --vector gpkg --workers 4
      geoseg segment scene.tif --backend trainfree --vlm-url http://127.0.0.1:8000/v1 --text "the pier" -o m.tif

    IMAGE may also be a folder, a glob pattern or a list file (batch mode, see docs/batch.md).
    """
    from geoseg.batch import is_batch_input
    from geoseg.notes import notes_shown_elsewhere
    from geoseg.vector import check_vector_options

    if not (ctx.obj or {}).get("verbose"):  # printed as note: lines (or in the batch report, --json), not twice
        ctx.with_resource(notes_shown_elsewhere())

    many = is_batch_input(image)
    # before anything is read: --merged-vector alone asks for vectors in batch mode (it implies --vector gpkg)
    check_vector_options(simplify, min_area, vector or (batch.get("merged_vector") if many else None))
    vlm = {k: batch.pop(k) for k in list(batch) if k.startswith("vlm_")}
    options = vlm_kwargs(vlm) if backend == "trainfree" else {}
    if mask_threshold is not None:
        options["mask_threshold"] = mask_threshold
    options.update(answer_step_kwargs(no_selector, no_refine, no_object_region, no_zoom))
    if no_scene_presence:
        options["scene_presence"] = None
    if literal_text:
        options["class_question"] = False
    if many:
        from geoseg.cli.batch import run_batch_command

        return run_batch_command(ctx, image, texts=texts, points=points, negative_points=negative_points,
                                 boxes=boxes, prompt_crs=prompt_crs, prompt_file=prompt_file,
                                 output=output, vector=vector, simplify=simplify, min_area=min_area,
                                 score_raster=score_raster, bands=bands, tile_size=tile_size, overlap=overlap,
                                 backend=backend, checkpoint=checkpoint, device=device, as_json=as_json,
                                 backend_options=options, **batch)
    from geoseg.pipeline import segment as run_segment

    result = run_segment(
        image, None, output,
        points=[parse_xy(p) for p in points], negative_points=[parse_xy(p) for p in negative_points],
        boxes=[parse_box(b) for b in boxes], text=list(texts), backend=backend, checkpoint=checkpoint,
        device=device, bands=bands, tile_size=tile_size, overlap=overlap, prompt_crs=prompt_crs,
        vector=vector, score_raster=score_raster, backend_options=options, prompt_file=prompt_file,
        simplify=simplify, min_area=min_area,
    )
    quiet = bool((ctx.obj or {}).get("quiet"))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if quiet:
        return
    click.echo(
        f"wrote {result.outputs['mask']}: {result.mask_pixels} target pixels "
        f"({_fmt_area(result.mask_area, result.area_unit)}) from {result.n_prompts} prompt(s) "
        f"with backend {result.backend} in {result.timings['total']:.1f}s"
    )
    if "vector" in result.outputs:
        click.echo(f"wrote {result.outputs['vector']}: {result.n_objects} polygon(s)")
    if "score_raster" in result.outputs:
        click.echo(f"wrote {result.outputs['score_raster']}")
    for note in result.notes:  # what was done for the user (bands read, a fallback, an unfamiliar instruction)
        click.echo(f"note: {note}")
    for hint in result.hints[:MAX_HINTS]:
        click.echo(f"note: {hint}")
    if len(result.hints) > MAX_HINTS:
        click.echo(f"note: ... and {len(result.hints) - MAX_HINTS} more prompt(s) found nothing (--json lists them)")
