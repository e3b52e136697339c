"""The project's benchmark split: selection rule, manifest checks, and the committed manifest on real data."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from geoseg.bench import split as S
from geoseg.bench.baselines import resolve_model
from geoseg.bench.readers import load_benchmark
from geoseg.bench.runner import run_benchmark
from geoseg.cli import cli, main
from geoseg.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
TRAINING_REGIONS = {f"dubai/tile_{i}" for i in range(1, 7)}


def test_allocate_water_fills_by_weight():
    # equal weights: 10 over three keys, one of which has only 2 -> the other two share the rest
    assert S.allocate(10, {"a": 2, "b": 50, "c": 50}) == {"a": 2, "b": 4, "c": 4}
    # weights 4:1:1, the small sources capped at what they have
    assert S.allocate(120, {"dubai": 500, "dk": 10, "ukis": 30}, {"dubai": 4, "dk": 1, "ukis": 1}) == \
        {"dubai": 88, "dk": 10, "ukis": 22}
    # largest remainder, ties broken by key: 10 over 3 equal keys -> 4, 3, 3
    assert S.allocate(10, {"x": 9, "y": 9, "z": 9}) == {"x": 4, "y": 3, "z": 3}
    # never more than available in total
    assert S.allocate(100, {"x": 3, "y": 4}) == {"x": 3, "y": 4}


def _rows():
    rows = []
    for task, levels in (("interactive", (1, 2, 3)), ("referring", (1, 2, 3))):
        for lv in levels:
            for src, n in (("big", 100), ("small", 3)):
                for k in range(n):
                    rows.append({"sample_id": f"{src}/{task}/{lv}/{k}", "task": task, "level": lv,
                                 "empty_target": False, "source": src, "region": "r"})
    rows += [{"sample_id": f"big/referring/1/nt{k}", "task": "referring", "level": 1, "empty_target": True,
              "source": "big", "region": "r"} for k in range(5)]
    return rows


def test_select_balances_tasks_levels_sources_and_is_seeded():
    rows = _rows()
    ids = S.select(rows, seed=0, per_task=60, no_target_share=0.1, source_weights={"big": 4, "small": 1})
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids == S.select(rows, seed=0, per_task=60, no_target_share=0.1, source_weights={"big": 4, "small": 1})
    assert ids != S.select(rows, seed=1, per_task=60, no_target_share=0.1, source_weights={"big": 4, "small": 1})
    picked = [r for r in rows if r["sample_id"] in set(ids)]
    c = S.counts(picked)
    assert c["task"] == {"interactive": 60, "referring": 60}
    assert c["no_target"] == {"referring": 5}  # 10 % of 60 = 6 wanted, 5 exist
    assert [c["task_level"][f"interactive/{lv}"] for lv in (1, 2, 3)] == [20, 20, 20]
    # referring: 55 targets over 3 levels (19, 18, 18), plus the 5 no-target rows at level 1
    assert [c["task_level"][f"referring/{lv}"] for lv in (1, 2, 3)] == [24, 18, 18]
    # in a stratum of 20: small gets 1/5 = 4 wanted, has 3 -> big 17
    assert sum(1 for r in picked if r["source"] == "small" and r["task"] == "interactive" and r["level"] == 1) == 3


def test_checksum_covers_what_is_scored_not_paths():
    row = {"sample_id": "a", "mask": {"size": [2, 2], "counts": "04"}, "instruction": "the pond", "stretch": [[0.1, 0.2]],
           "image_path": "/x/y.jpg", "attributes": "{}"}
    base = S.row_checksum(row)
    assert S.row_checksum({**row, "image_path": "/elsewhere/y.jpg", "attributes": '{"k": 1}'}) == base
    assert S.row_checksum({**row, "stretch": [[0.1 + 1e-12, 0.2]]}) == base  # float noise below 6 digits
    for change in ({"instruction": "the lake"}, {"mask": {"size": [2, 2], "counts": "13"}}, {"level": 2}):
        assert S.row_checksum({**row, **change}) != base


def test_unknown_manifest_names_the_shipped_ones(tmp_path):
    with pytest.raises(InputError, match="geoseg_bench_v1"):
        S.load_manifest("geoseg_bench_v99")
    (tmp_path / "m.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="is not a geoseg benchmark split manifest"):
        S.load_manifest(tmp_path / "m.json")


def test_committed_manifest_matches_the_data_config():
    man = S.load_manifest(S.DEFAULT_SPLIT)
    from geoseg.data.engine import BuildConfig

    raw = yaml.safe_load((ROOT / "configs/data/bench.yaml").read_text())
    cfg = BuildConfig.from_dict(raw).to_dict()
    for s in cfg["sources"]:
        s["path"] = Path(s["path"]).name
    # the manifest pins exactly configs/data/bench.yaml; both go through BuildConfig, so a setting
    # added later with a default that keeps old builds identical does not break the pin
    assert BuildConfig.from_dict(man["config"]).to_dict() == cfg
    assert S.samples_digest(man["samples"]) == man["samples_digest"]
    assert len(man["samples"]) == sum(man["counts"]["task"].values())


# ---------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def pool(shared_data, tmp_path_factory):
    """The benchmark pool rebuilt by the data engine from the real data (~10 s)."""
    man = S.load_manifest(S.DEFAULT_SPLIT)
    rows = S.build_pool(S.resolve_config(man, shared_data), tmp_path_factory.mktemp("pool") / "pool")
    return man, rows


def test_rebuilt_pool_selects_the_committed_ids(pool, shared_data):
    man, rows = pool
    sel = man["selection"]
    ids = S.select(rows, sel["seed"], sel["per_task"], sel["no_target_share"], sel["source_weights"])
    assert ids == [sid for sid, _ in man["samples"]]
    picked = S.verify(man, rows, shared_data, "pool")  # every checksum and image hash matches
    c = S.counts(picked)
    assert all(c["task"][t] >= 300 for t in S.TASKS)
    for t in S.TASKS:  # every level of every task is represented
        assert all(c["task_level"].get(f"{t}/{lv}", 0) >= 50 for lv in (1, 2, 3)), c["task_level"]
    assert c["no_target"].get("referring", 0) >= 30 and c["no_target"].get("reasoning", 0) >= 30
    assert {"dubai", "dk_fields", "ukis"} <= set(c["source"])
    regions = {f"{r['source']}/{r['region']}" for r in picked}
    assert not regions & TRAINING_REGIONS and "dubai/tile_7" in regions
    assert not any("/tile_" in r["image_path"] and "/tile_7/" not in r["image_path"] for r in picked)


def test_changed_data_is_refused_and_leaves_nothing(pool, shared_data, tmp_path, monkeypatch):
    man, rows = pool
    bad = copy.deepcopy(man)
    sid = bad["samples"][7][0]
    bad["samples"][7][1] = "0" * 16
    (tmp_path / "bad.json").write_text(S.dump_manifest(bad))

    def fake_build(cfg, out_dir, workers=0):  # the real pool, without building it a second time
        Path(out_dir).mkdir(parents=True)
        return [dict(r) for r in rows]

    monkeypatch.setattr(S, "build_pool", fake_build)
    with pytest.raises(InputError, match=re.escape(f"sample {sid} in the pool rebuilt from {shared_data} differs")):
        S.materialise(tmp_path / "bad.json", tmp_path / "out", shared_data)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.json"]
    missing = copy.deepcopy(man)
    missing["samples"][0][0] = "dubai/tile_1/image_part_001/0_0/i1/referring-0"
    with pytest.raises(InputError, match=r"sample dubai/tile_1/\S+ is missing from"):
        S.verify(missing, rows, shared_data, "pool")


def test_split_build_run_and_tamper_via_cli(shared_data, tmp_path, capsys):
    pytest.importorskip("cv2")
    out = tmp_path / "v1"
    r = CliRunner().invoke(cli, ["-q", "bench", "split", "build", "--data-root", str(shared_data), "-o", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    man = S.load_manifest(S.DEFAULT_SPLIT)
    samples, fmt = load_benchmark(out)
    assert fmt == "split" and [s.sample_id for s in samples] == [sid for sid, _ in man["samples"]]
    # the benchmark is run on exactly these samples (a few here: the classical backend takes ~0.3 s each)
    r = CliRunner().invoke(cli, ["-q", "bench", "run", "--model", "classical", "--data", str(out), "--limit", "4",
                                 "-o", str(tmp_path / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["run"]["format"] == "split" and metrics["n_samples"] == 4
    assert metrics["run"]["benchmark"] == f"geoseg_bench_v1 (samples digest {man['samples_digest']})"
    assert f"**benchmark**: geoseg_bench_v1 (samples digest {man['samples_digest']})" in \
        (tmp_path / "run/report.md").read_text()
    # category-region: the whole ground-truth region of the named category, read through the data engine
    pick = [s for s in samples if re.search(r"/c\d+/", s.sample_id) and s.task == "reasoning"][:3]  # class-level targets
    pick += [s for s in samples if s.empty_target][:2] + [s for s in samples if re.search(r"/i\d+/", s.sample_id)][:3]
    assert {s.meta["source"] for s in pick} >= {"dubai", "dk_fields"}
    run_benchmark(resolve_model("category-region"), pick, tmp_path / "catreg", report=False)
    ious = {json.loads(x)["sample_id"]: json.loads(x)["iou"] for x in (tmp_path / "catreg/per_sample.jsonl").open()}
    assert [ious[s.sample_id] for s in pick[:5]] == [1.0] * 5  # class-level targets exactly; absent classes empty
    assert all(ious[s.sample_id] < 1.0 for s in pick[5:])  # one instance among others of its class
    # a tampered sample is refused: one line naming the split, the sample and the file
    t = pq.read_table(out / S.SAMPLES_FILE)
    rows = t.to_pylist()
    rows[3]["instruction"] = rows[3]["instruction"] + " please"
    pq.write_table(t.from_pylist(rows, schema=t.schema), out / S.SAMPLES_FILE)
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "--model", "classical", "--data", str(out), "-o", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"sample {rows[3]['sample_id']} in {out / S.SAMPLES_FILE} differs from the manifest" in err
    assert not (tmp_path / "run2").exists()
    # a folder built from another version of the manifest is refused too
    other = copy.deepcopy(man)
    other["samples"] = other["samples"][:-1]
    other["samples_digest"] = S.samples_digest(other["samples"])
    (out / S.SPLIT_FILE).write_text(S.dump_manifest(other))
    with pytest.raises(SystemExit):
        main(["bench", "run", "--model", "classical", "--data", str(out), "-o", str(tmp_path / "run3")])
    assert "another version of split geoseg_bench_v1" in capsys.readouterr().err


def test_split_info_and_missing_data_root(tmp_path, capsys):
    r = CliRunner().invoke(cli, ["bench", "split", "info"], catch_exceptions=False)
    info = json.loads(r.output)
    assert r.exit_code == 0 and info["n_samples"] == 1200 and info["counts"]["task"]["referring"] == 400
    with pytest.raises(SystemExit) as e:
        main(["-q", "bench", "split", "build", "--data-root", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"data root {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "o").exists()
