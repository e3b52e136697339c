"""``geoseg bench``: run a model over a benchmark, compare runs, run the baseline rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from geoseg.bench.baselines import BASELINE_ROWS
from geoseg.bench.metrics import DEFAULT_EMPTY_RULE, EMPTY_RULES
from geoseg.bench.readers import FORMATS
from geoseg.cli.segment import answer_step_kwargs, answer_step_options
from geoseg.cli.trainfree import vlm_options

_rule_opt = click.option("--empty-rule", type=click.Choice(list(EMPTY_RULES)), default=DEFAULT_EMPTY_RULE,
                         show_default=True, help="How an empty target is scored (stated in every report).")
_data_opts = [
    click.option("--data", required=True, type=click.Path(exists=True), help="Benchmark file or folder."),
    click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default=None,
                 help="Benchmark format (autodetected when left out)."),
    click.option("--split", default=None, help="Only this split of the benchmark (e.g. test)."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N samples (quick checks)."),
]


def _data(f):
    for opt in reversed(_data_opts):
        f = opt(f)
    return f


def _load(data: str, fmt: str | None, split: str | None, limit: int | None):
    from geoseg.bench.readers import load_benchmark

    samples, fmt = load_benchmark(data, fmt, split)
    if limit is not None:
        samples = samples[:limit]
    return samples, fmt


def _note(msg: str) -> None:
    """An informational line on stderr (silenced by ``geoseg -q``; errors and results are not)."""
    ctx = click.get_current_context(silent=True)
    if not (ctx and (ctx.find_root().obj or {}).get("quiet")):
        click.echo(msg, err=True)


def _summary(metrics: dict) -> str:
    from geoseg.bench.report import fmt_pct

    lines = [f"{'group':<22}{'n':>6}{'gIoU':>8}{'cIoU':>8}{'Pr@0.5':>8}{'Dice':>8}"]
    entries = [("all", metrics["overall"])] + [(f"task {k}", v) for k, v in metrics["per_task"].items()]
    for label, s in entries:
        lines.append(f"{label:<22}{s['n']:>6}{fmt_pct(s['gIoU']):>8}{fmt_pct(s['cIoU']):>8}"
                     f"{fmt_pct(s['Pr@0.5']):>8}{fmt_pct(s['Dice']):>8}")
    for task, n in metrics["unsupported_per_task"].items():
        lines.append(f"{'task ' + task:<22}{n:>6}  not supported by this backend (not scored)")
    lines.append(f"empty-target rule: {metrics['empty_rule']}")
    return "\n".join(lines)


@click.group()
def bench() -> None:
    """Evaluate segmenters on benchmarks (GeoSeg-Bench, RRSIS-D, EarthReason, ...)."""


@bench.command("run")
@click.option("--model", "-m", required=True, help="Backend name, checkpoint path, oracle-box[:B], category-only:M or category-region.")
@_data
@_rule_opt
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Run folder (resumed when it exists).")
@click.option("--rescore-only", is_flag=True, help="Never run the model: score the cached predictions.")
@click.option("--overwrite", is_flag=True, help="Discard cached predictions in the run folder.")
@click.option("--device", default=None, help="Device for model backends (auto when left out).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="Weights for the model's backend: SAM / SAM 2 weights for sam, sam2, trainfree, or a unified "
                   "checkpoint (same as --model FILE).")
@click.option("--gallery", default=4, show_default=True, help="Best/median/worst examples each in the HTML report.")
@answer_step_options
@vlm_options  # --model trainfree: the multimodal LLM that grounds each instruction
def run_cmd(model, data, fmt, split, limit, empty_rule, out_dir, rescore_only, overwrite, device, checkpoint,
            gallery, no_selector, no_refine, no_object_region, no_zoom, **vlm) -> None:
    """Run MODEL over a benchmark, cache its predictions as RLE and write metrics and reports.

    --no-selector / --no-refine / --no-object-region / --no-zoom measure the unified model without one of its
    answer steps (as `geoseg segment` takes them); the run folder records which way it answered.
    """
    from geoseg.bench.baselines import resolve_model
    from geoseg.bench.runner import run_benchmark
    from geoseg.cli.trainfree import vlm_kwargs
    from geoseg.device import check_device

    check_device(device)
    options = vlm_kwargs(vlm) if "trainfree" in model else {}
    options.update(answer_step_kwargs(no_selector, no_refine, no_object_region, no_zoom))
    samples, fmt = _load(data, fmt, split, limit)
    _note(f"{len(samples)} samples ({fmt}) from {data}")
    if checkpoint:
        options["checkpoint"] = checkpoint
    spec = resolve_model(model, **options, **({"device": device} if device else {}))
    if checkpoint:
        from geoseg.errors import GeosegError
        from geoseg.pipeline import check_backend_args

        if spec.backend is None:
            raise GeosegError(f"--model {model} runs no model, but --checkpoint {checkpoint} was given",
                              "leave out --checkpoint")
        check_backend_args(spec.backend, checkpoint)
    metrics = run_benchmark(spec, samples, out_dir, empty_rule=empty_rule, data=data, fmt=fmt, split=split,
                            rescore_only=rescore_only, overwrite=overwrite, gallery_size=gallery)
    click.echo(_summary(metrics))
    click.echo(f"wrote {Path(out_dir) / 'metrics.json'}, report.md, report.html")


@bench.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@_rule_opt
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(), help="Write compare.md/html/json here.")
def compare_cmd(run_dirs, empty_rule, out_dir) -> None:
    """Put several runs side by side (re-scored under one empty-target rule)."""
    from geoseg.bench.compare import compare_runs, markdown_compare, write_compare

    cmp = compare_runs(run_dirs, empty_rule)
    click.echo(markdown_compare(cmp))
    if out_dir:
        paths = write_compare(cmp, out_dir)
        _note(f"wrote {', '.join(str(p) for p in paths)}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


@bench.command("baselines")
@_data
@_rule_opt
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="One sub-folder per row + compare.*")
@click.option("--models", default=",".join(BASELINE_ROWS),
              show_default=True, help="Comma-separated rows to run.")
@click.option("--device", default=None, help="Device for model backends.")
def baselines_cmd(data, fmt, split, limit, empty_rule, out_dir, models, device) -> None:
    """Run the baseline rows on one benchmark and put them side by side."""
    from geoseg.bench.baselines import resolve_model
    from geoseg.bench.compare import compare_runs, markdown_compare, write_compare
    from geoseg.bench.runner import run_benchmark
    from geoseg.device import check_device
    from geoseg.errors import GeosegError

    check_device(device)
    samples, fmt = _load(data, fmt, split, limit)
    _note(f"{len(samples)} samples ({fmt}) from {data}")
    done = []
    for m in [m.strip() for m in models.split(",") if m.strip()]:
        run_dir = Path(out_dir) / _safe(m)
        spec = resolve_model(m, **({"device": device} if device else {}))
        try:
            _ = spec.segmenter  # build now: a row whose model is not available is skipped, not half-run
        except (GeosegError, ImportError, OSError, RuntimeError) as exc:
            click.echo(f"skipped row {m}: {exc}", err=True)
            continue
        run_benchmark(spec, samples, run_dir, empty_rule=empty_rule, data=data, fmt=fmt, split=split)
        done.append(run_dir)
    if not done:
        raise GeosegError("no baseline row could be run", "check the --models list and the installed backends")
    cmp = compare_runs(done, empty_rule)
    click.echo(markdown_compare(cmp))
    written = write_compare(cmp, out_dir)
    _note(f"wrote {written[0]}, " + " and ".join(p.name for p in written[1:]))


@bench.group("split")
def split_group() -> None:
    """The project's fixed benchmark split (a versioned manifest; see docs/bench.md)."""


_root_opt = click.option("--data-root", default=None, type=click.Path(file_okay=False),
                         help="Folder holding dubai/, dk_fields/, ukis_tiles/ (default $GEOSEG_SHARED_DATA or "
                              "../shared/data).")


@split_group.command("build")
@click.argument("manifest", default="geoseg_bench_v1")
@_root_opt
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Split folder.")
@click.option("--workers", type=int, default=0, show_default=True, help="Data-engine workers (0: in this process).")
@click.option("--overwrite", is_flag=True, help="Replace an existing split folder.")
def split_build_cmd(manifest, data_root, out_dir, workers, overwrite) -> None:
    """Rebuild MANIFEST's samples with the data engine and check them (then: bench run --data OUT)."""
    from geoseg.bench.split import load_manifest, materialise

    man = load_manifest(manifest)
    materialise(manifest, out_dir, data_root, workers=workers, overwrite=overwrite)
    click.echo(f"{len(man['samples'])} samples of split {man['name']} checked against the manifest -> {out_dir}")


@split_group.command("info")
@click.argument("manifest", default="geoseg_bench_v1")
def split_info_cmd(manifest) -> None:
    """Print a manifest's selection rule and counts as JSON."""
    from geoseg.bench.split import load_manifest

    man = load_manifest(manifest)
    keys = ("name", "description", "built_with", "selection", "counts", "samples_digest")
    click.echo(json.dumps({k: man.get(k) for k in keys} | {"n_samples": len(man["samples"])}, indent=2))


@split_group.command("create")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Data-engine config of the pool (configs/data/bench.yaml).")
@_root_opt
@click.option("--name", required=True, help="Manifest name, e.g. geoseg_bench_v2 (a new name per version).")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Manifest .json to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--per-task", type=int, default=400, show_default=True, help="Samples per task.")
@click.option("--no-target-share", type=float, default=0.1, show_default=True, help="Share of a task's quota.")
@click.option("--source-weight", "source_weights", multiple=True, metavar="SOURCE=W",
              help="Relative share of a source inside each stratum (default 1 each).")
@click.option("--exclude-region", "exclude", multiple=True, metavar="SOURCE/REGION",
              help="Regions that must not be in the pool (the training regions).")
@click.option("--description", default="", help="One line stored in the manifest.")
@click.option("--workers", type=int, default=0, show_default=True)
def split_create_cmd(config_path, data_root, name, out_path, seed, per_task, no_target_share, source_weights, exclude,
                     description, workers) -> None:
    """Select a new benchmark split from a data-engine pool and write its manifest (maintainers)."""

    from geoseg.bench.runner import atomic_write_text
    from geoseg.bench.split import create_manifest, default_data_root, dump_manifest, relative_config
    from geoseg.data.engine import BuildConfig, read_config_file
    from geoseg.errors import InputError

    root = Path(data_root) if data_root else default_data_root()
    raw = read_config_file(config_path)
    for s in raw.get("sources", []) if isinstance(raw.get("sources"), list) else []:  # config paths are relative to the working directory
        s["path"] = str(Path(s["path"]))
    weights = {}
    for sw in source_weights:
        src, sep, w = sw.partition("=")
        if not sep:
            raise InputError(f"cannot read --source-weight {sw!r}", "write it as SOURCE=W, e.g. dubai=4")
        weights[src] = float(w)
    config = relative_config(BuildConfig.from_dict(raw).to_dict(), root)
    man = create_manifest(config, root, name, seed=seed, per_task=per_task, no_target_share=no_target_share,
                          source_weights=weights, exclude_regions=exclude, workers=workers, description=description)
    atomic_write_text(Path(out_path), dump_manifest(man))
    click.echo(f"{len(man['samples'])} samples -> {out_path}: {json.dumps(man['counts']['task_level'])}")
