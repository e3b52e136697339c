"""``geoseg bench compare`` on the run folders a researcher really has: two runs of one backend
name (two SAM checkpoints), an interrupted run, a run another geoseg version wrote, runs of
different benchmarks or limits — every run folder here is written by the real runner."""

from __future__ import annotations

import json

import pytest

from geoseg.bench.baselines import resolve_model
from geoseg.bench.compare import compare_runs, markdown_compare
from geoseg.bench.readers import load_benchmark
from geoseg.bench.runner import run_benchmark
from geoseg.cli import main
from geoseg.errors import InputError


@pytest.fixture()
def bench(tmp_path, write_bench):
    write_bench(tmp_path / "data", n_images=3)
    return load_benchmark(tmp_path / "data")[0], str(tmp_path / "data")


def _run(samples, data, out, segmenter, model="bright-box"):
    run_benchmark(resolve_model(model, segmenter=segmenter), samples, out, data=data, fmt="unigeoseg", report=False)
    return out


def test_runs_of_one_backend_name_get_distinct_columns(tmp_path, bench, Bright, capsys):
    samples, data = bench
    a = _run(samples, data, tmp_path / "vit_b", Bright())
    b = _run(samples, data, tmp_path / "vit_h", Bright())
    c = _run(samples, data, tmp_path / "other" / "vit_h", Bright())
    cmp = compare_runs([a, b, c])
    assert [r["name"] for r in cmp["runs"]] == ["bright-box (vit_b)", f"bright-box ({b})", f"bright-box ({c})"]
    assert f"| group | bright-box (vit_b) | bright-box ({b}) | bright-box ({c}) |" in markdown_compare(cmp)
    with pytest.raises(SystemExit) as e:  # the same folder twice is a typo, not a comparison
        main(["bench", "compare", str(a), str(b), f"{a}/"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"run folder {a}/ is given twice" in err


def test_interrupted_run_is_named_with_the_command_that_finishes_it(tmp_path, bench, Bright, capsys):
    samples, data = bench
    done = _run(samples, data, tmp_path / "done", Bright())
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _run(samples, data, cut, Bright(fail_after=2))
    assert (cut / "predictions.jsonl").exists() and not (cut / "metrics.json").exists()
    with pytest.raises(SystemExit) as e:
        main(["bench", "compare", str(done), str(cut)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    n = len((cut / "predictions.jsonl").read_text().splitlines())
    assert 2 <= n < len(samples) and f"{cut} holds an unfinished run ({n} predictions, no metrics.json)" in err
    assert f"geoseg bench run --model bright-box --data {data} -o {cut}, which resumes" in err


@pytest.mark.parametrize("damage", ["drop_counts", "drop_task", "not_a_record"])
def test_run_of_another_layout_is_refused_not_scored_as_zero(tmp_path, bench, Bright, damage):
    samples, data = bench
    base = _run(samples, data, tmp_path / "base", Bright())
    old = _run(samples, data, tmp_path / "old", Bright())
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["run"]["geoseg_version"] = "0.0.9"
    (old / "metrics.json").write_text(json.dumps(metrics))
    rows = [json.loads(line) for line in (old / "per_sample.jsonl").read_text().splitlines()]
    scored = next(i for i, r in enumerate(rows, 1) if not r.get("unsupported"))
    if damage == "drop_counts":  # a layout without |P|: Dice would silently use 0
        for r in rows:
            r.pop("pred_area", None)
    elif damage == "drop_task":
        rows[scored - 1].pop("task")
    else:
        rows[scored - 1] = [rows[scored - 1]["sample_id"]]
    (old / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as err:
        compare_runs([base, old])
    msg = str(err.value)
    assert f"line {scored} of {old / 'per_sample.jsonl'}" in msg and "\n" not in msg
    assert f"--data {data} -o {old} --rescore-only" in msg
    if damage != "not_a_record":
        assert f"lacks {'pred_area' if damage == 'drop_counts' else 'task'} (written by geoseg 0.0.9" in msg


def test_other_benchmark_with_the_same_ids_is_flagged_and_not_paired(tmp_path, bench, Bright):
    """Two versions of a benchmark split can share sample ids that name different samples."""
    samples, data = bench
    for s in samples:
        s.meta["benchmark"] = "geoseg_bench_v1 (samples digest aaaa)"
    v1 = _run(samples, data, tmp_path / "v1", Bright())
    for s in samples:
        s.meta["benchmark"] = "geoseg_bench_v2 (samples digest bbbb)"
    v2 = _run(samples, data, tmp_path / "v2", Bright())
    v2b = _run(samples, data, tmp_path / "v2b", Bright())
    cmp = compare_runs([v1, v2])
    assert cmp["same_samples"] and not cmp["same_benchmark"] and "vs_first" not in cmp["runs"][1]
    md = markdown_compare(cmp)
    assert "different benchmarks (bright-box (v1): geoseg_bench_v1 (samples digest aaaa); bright-box (v2): " \
           "geoseg_bench_v2 (samples digest bbbb))" in md
    assert "gIoU difference to" not in md
    same = compare_runs([v2, v2b])
    assert same["same_benchmark"] and "vs_first" in same["runs"][1] and "Warning" not in markdown_compare(same)


def test_different_limits_say_how_many_samples_each_run_scored(tmp_path, bench, Bright):
    samples, data = bench
    full = _run(samples, data, tmp_path / "full", Bright())
    part = _run(samples[:3], data, tmp_path / "part", Bright(), model="oracle-box:bright-box")
    cmp = compare_runs([full, part])
    assert not cmp["same_samples"] and cmp["runs"][1]["vs_first"]["all"]["n"] <= 3
    assert (f"different sample sets (samples: bright-box {len(samples)}, oracle-box:bright-box 3)"
            in markdown_compare(cmp))
