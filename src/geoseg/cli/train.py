"""``geoseg train``: train the unified model from an experiment YAML."""

from __future__ import annotations

import logging
import sys

import click


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Experiment YAML, e.g. configs/unigeoseg_default.yaml.")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/last.pt (optimiser, step, schedule).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--shards", default=None, help="Override train.shards (folder of Parquet shards).")
@click.option("--out", "out_dir", default=None, help="Override train.out_dir.")
@click.option("--max-minutes", type=float, default=None, help="Override the wall-clock budget (0 = none).")
@click.option("--text-cache", default=None, help="Instruction-embedding cache file shared between runs.")
@click.option("--export", "export_path", default=None, type=click.Path(dir_okay=False),
              help="After training, write best.pt as a float16 bundle here (e.g. the shipped default).")
@click.option("--export-only", is_flag=True, help="Do not train: only export OUT_DIR/best.pt of a finished run.")
@click.option("--tune-decision", is_flag=True,
              help="Before exporting, tune the per-task mask thresholds and the presence threshold on the run's "
                   "validation split and store them in the bundle.")
@click.option("--fit-selector", is_flag=True,
              help="Before exporting, fit the instance selector (which parts of a referring/reasoning answer the "
                   "instruction means) on the run's train split, tune it on its validation split and store it.")
@click.option("--pack", "pack_dir", default=None, type=click.Path(file_okay=False),
              help="Do not train: write the run's rows, decoded tiles and packed instruction embeddings into this "
                   "new folder, with a config that trains from them on a machine without the imagery, GDAL or "
                   "the text encoder (a GPU box).")
@click.option("--print-config", is_flag=True,
              help="Print every setting of the experiment (extends chain and overrides resolved) and exit.")
@click.pass_context
def train(ctx: click.Context, config_path: str, resume: bool, device: str, shards: str | None, out_dir: str | None,
          max_minutes: float | None, text_cache: str | None, export_path: str | None, export_only: bool,
          tune_decision: bool, fit_selector: bool, pack_dir: str | None, print_config: bool) -> None:
    """Train the unified model (progressive multi-task schedule) and validate every epoch."""
    from geoseg.errors import require

    require("torch", "train")
    from geoseg.unified.config import load_config
    from geoseg.unified.train import describe_score, export_checkpoint
    from geoseg.unified.train import train as run_train

    cfg = load_config(config_path)
    if shards:
        cfg.train.shards = shards
    if out_dir:
        cfg.train.out_dir = out_dir
    if max_minutes is not None:
        cfg.train.max_minutes = max_minutes
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    if pack_dir:
        from geoseg.unified.bundle import pack_run

        counts = pack_run(cfg, pack_dir, text_cache)
        click.echo(f"packed {cfg.name} into {pack_dir}: {counts['train_rows']} train and {counts['val_rows']} val rows, "
                   f"{counts['tiles']} tiles, {counts['texts']} instructions; train from it with geoseg train "
                   f"--config {pack_dir}/data/config.yaml --text-cache {pack_dir}/text/text_cache.pt")
        return
    if export_only and not export_path:
        from geoseg.errors import InputError

        raise InputError("--export-only needs --export PATH", "add --export src/geoseg/weights/unigeoseg_default.pt")
    for flag, on in (("--tune-decision", tune_decision), ("--fit-selector", fit_selector)):
        if on and not export_path:
            from geoseg.errors import InputError

            raise InputError(f"{flag} needs --export PATH (the result is stored in the exported bundle)",
                             "add --export PATH")
    if export_path:  # before training: a bad path must not be found only after the last epoch
        from geoseg.unified.train import check_writable

        check_writable(export_path, "--export")
    for flag, on in (("--tune-decision", tune_decision), ("--fit-selector", fit_selector)):
        if on:  # likewise a build without the val rows they are tuned on
            from geoseg.errors import InputError
            from geoseg.unified.data import load_val_rows

            if not load_val_rows(cfg.train)[0]:
                raise InputError(f"{flag} needs the run's val rows, but the shards at "
                                 f"{cfg.train.val_shards or cfg.train.shards} hold none",
                                 "build them with geoseg data build (it writes a val split), or set "
                                 "train.val_shards to a build that has one")
            break
    quiet = bool((ctx.obj or {}).get("quiet"))
    if not quiet and not export_only:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logging.getLogger("geoseg.unified").addHandler(h)
        logging.getLogger("geoseg.unified").propagate = False
    if not export_only:
        summary = run_train(cfg, resume=resume, device=device, text_cache=text_cache)
        click.echo(f"trained {cfg.name}: {summary.get('steps', 0)} steps in {summary.get('minutes', 0)} min, "
                   f"best {describe_score(summary['best'], summary['best_of'])}; checkpoints in {cfg.train.out_dir}")
    if export_path:
        from pathlib import Path

        best = Path(cfg.train.out_dir) / "best.pt"
        if not best.is_file():
            from geoseg.errors import InputError

            raise InputError(f"--export: {best} does not exist: the run in {cfg.train.out_dir} has not finished an "
                             "epoch yet", "train it first (--resume continues a stopped run), then export")
        decision = None
        if tune_decision:
            from geoseg.unified.train import tune_decision as run_tune

            decision, report = run_tune(cfg, best, device=device, text_cache=text_cache)
            for task, r in report.items():
                nta = "" if r["no_target_acc"] != r["no_target_acc"] else f", no-target acc {r['no_target_acc']:.1f} %"
                click.echo(f"decision {task}: mask threshold {r['threshold']:.2f}, presence "
                           f"{r['presence_threshold']:.2f} (val gIoU {r['gIoU@0.5']:.1f} at 0.5 -> "
                           f"{r['gIoU@threshold']:.1f}{nta}, {r['n']} rows)")
        selector = None
        if fit_selector:
            from geoseg.unified.checkpoint import read_checkpoint
            from geoseg.unified.decision import Decision
            from geoseg.unified.select_fit import fit_for_checkpoint

            rule = decision or Decision.from_dict(read_checkpoint(best).get("meta", {}).get("decision"))
            selector, report = fit_for_checkpoint(cfg, best, rule, device=device, text_cache=text_cache)
            for task, r in report.items():
                by = r["gIoU_by_threshold"]
                chosen = r["threshold"]
                after = by[chosen] if chosen is not None else r["gIoU_off"]
                use = f"threshold {chosen:.2f}" if chosen is not None else "off"
                click.echo(f"selector {task}: {use} "
                           f"(val gIoU {r['gIoU_off']:.1f} without -> {after:.1f}, {r['n']} rows)")
        try:
            dst = export_checkpoint(best, export_path, decision, selector)
        except OSError as exc:
            from geoseg.errors import GeosegError, reason

            raise GeosegError(f"cannot write --export {export_path} ({reason(exc)})",
                              "give a path in a folder you can write to") from exc
        click.echo(f"exported {best} -> {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
