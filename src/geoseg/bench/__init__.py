"""GeoSeg-Bench evaluation: exact metrics, readers for every public format, runner, reports.

* :mod:`geoseg.bench.metrics` — gIoU, cIoU, Pr@t, Dice, no-target/target accuracy, empty-target rules.
* :mod:`geoseg.bench.readers` — one reader per benchmark format, autodetected.
* :mod:`geoseg.bench.runner` — resumable, cached runs of any registered segmenter.
* :mod:`geoseg.bench.report` / :mod:`geoseg.bench.compare` — Markdown/HTML reports, side by side.
* :mod:`geoseg.bench.baselines` — oracle-box and category-only rows.
* :mod:`geoseg.bench.split` — the project's versioned benchmark split.
"""
