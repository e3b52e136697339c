"""Bad input, through the API and the CLI: an error naming the sample and the file; one line, exit 2.

Cases (issue 4, item 6): a prediction of the wrong size, a missing prediction, a corrupt
annotation file (QA json, mask image), an unknown format.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from geoseg.bench.baselines import resolve_model
from geoseg.bench.readers import load_benchmark
from geoseg.bench.runner import CACHE_NAME, run_benchmark
from geoseg.cli import main
from geoseg.errors import InputError
from geoseg.rle import rle_encode


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI, expecting a user error: exit 2 and exactly one line on stderr; returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def cached_run(tmp_path, Bright, write_bench):
    """A benchmark (2 images, GeoSeg-Bench layout) and a complete run of the test backend on it."""
    samples = write_bench(tmp_path / "data", n_images=2)
    run_benchmark(resolve_model("bright-box", segmenter=Bright()), samples, tmp_path / "run", report=False)
    cache = tmp_path / "run" / CACHE_NAME
    lines = cache.read_text().splitlines()
    return samples, cache, lines


def rescore(tmp_path) -> list[str]:
    return ["-q", "bench", "run", "--model", "bright-box", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run"),
            "--rescore-only"]


def test_wrong_size_prediction(tmp_path, cached_run, capsys):
    samples, cache, lines = cached_run
    before = (tmp_path / "run/metrics.json").read_text()
    k = next(i for i, line in enumerate(lines) if '"rle"' in line and "interactive/1" in line)
    rec = json.loads(lines[k])
    rec["rle"] = rle_encode(np.zeros((48, 50), bool))
    cache.write_text("\n".join(lines[:k] + [json.dumps(rec)] + lines[k + 1:]) + "\n")
    want = f"sample {rec['sample_id']}: prediction of size 48x50 in {cache} does not match its 48x48 target"
    with pytest.raises(InputError, match=re.escape(want)):
        run_benchmark(resolve_model("bright-box"), samples, tmp_path / "run", rescore_only=True)
    err = cli_error(rescore(tmp_path), capsys)
    assert want in err and "json" in err  # the sample's annotation file is named too
    assert (tmp_path / "run/metrics.json").read_text() == before  # the last good scores are left as they were


def test_missing_prediction(tmp_path, cached_run, capsys):
    samples, cache, lines = cached_run
    gone = json.loads(lines[-1])["sample_id"]
    cache.write_text("\n".join(lines[:-1]) + "\n")
    want = f"sample {gone}: no prediction in {cache}"
    with pytest.raises(InputError, match=re.escape(want)):
        run_benchmark(resolve_model("bright-box"), samples, tmp_path / "run", rescore_only=True)
    assert want in cli_error(rescore(tmp_path), capsys)


def test_corrupt_qa_annotation(tmp_path, write_bench, capsys):
    write_bench(tmp_path / "data", n_images=2)
    qa = tmp_path / "data/ref/json/1.json"
    qa.write_text('{"question": ["the bright')  # truncated file
    with pytest.raises(InputError, match=r"sample test/referring/1 \(.*test\.json\): annotation file .*1\.json is not "
                                         r"valid JSON"):
        load_benchmark(tmp_path / "data")
    err = cli_error(["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path / "data"), "-o",
                     str(tmp_path / "run")], capsys)
    assert "sample test/referring/1" in err and str(qa) in err and "is not valid JSON" in err
    assert not (tmp_path / "run").exists()


def test_corrupt_mask_annotation(tmp_path, cached_run, capsys):
    samples, _, _ = cached_run
    mask = tmp_path / "data/intera/mask/1.png"
    mask.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    bad = [s for s in samples if s.sample_id.startswith("test/interactive/1#")][0].sample_id
    with pytest.raises(InputError, match=re.escape(f"sample {bad}: cannot read mask {mask}")):
        run_benchmark(resolve_model("bright-box"), samples, tmp_path / "run", rescore_only=True)
    err = cli_error(rescore(tmp_path), capsys)
    assert f"sample {bad}: cannot read mask {mask}" in err


def test_missing_image_names_the_sample(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/val.jsonl").write_text(json.dumps({"sent": "a pond", "file_name": "gone.png",
                                                      "segmentation": rle_encode(np.ones((4, 4), bool))}) + "\n")
    with pytest.raises(InputError, match=r"sample val/1 \(.*val\.jsonl\): image 'gone.png' not found"):
        load_benchmark(tmp_path / "r")
    assert "sample val/1" in cli_error(["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path / "r"), "-o",
                                        str(tmp_path / "o")], capsys)


def test_unknown_format(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a benchmark")
    with pytest.raises(InputError, match=f"unknown benchmark format at {re.escape(str(tmp_path))}"):
        load_benchmark(tmp_path)
    err = cli_error(["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path), "-o", str(tmp_path / "o")],
                    capsys)
    assert f"unknown benchmark format at {tmp_path}" in err and "--format" in err
    err = cli_error(["-q", "bench", "baselines", "--data", str(tmp_path), "-o", str(tmp_path / "o")], capsys)
    assert "unknown benchmark format" in err


def test_a_missing_or_unreadable_checkpoint_leaves_no_run_folder(tmp_path, write_bench, capsys):
    write_bench(tmp_path / "data", n_images=1)
    base = ["-q", "bench", "run", "--data", str(tmp_path / "data")]
    err = cli_error([*base, "--model", str(tmp_path / "nope" / "m.pt"), "-o", str(tmp_path / "r1")], capsys)
    assert "does not exist" in err and not (tmp_path / "r1").exists()
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    err = cli_error([*base, "--model", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "r2")], capsys)
    assert "cannot read checkpoint" in err and not (tmp_path / "r2").exists()


def test_limit_below_one_is_refused(tmp_path, write_bench, capsys):
    write_bench(tmp_path / "data", n_images=1)
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit) as e:
            main(["-q", "bench", "run", "--model", "classical", "--data", str(tmp_path / "data"), "--limit", bad,
                  "-o", str(tmp_path / "r")])
        assert e.value.code == 2 and "--limit" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_unknown_device_is_refused_before_any_run(tmp_path, write_bench, capsys):
    """--device tpu was passed on and ignored by the classical backend: a run that looked like a device run."""
    write_bench(tmp_path / "data", n_images=1)
    for cmd, out in ((["run", "--model", "classical"], "r"), (["baselines", "--models", "classical"], "b")):
        err = cli_error(["-q", "bench", *cmd, "--data", str(tmp_path / "data"), "--device", "tpu",
                         "-o", str(tmp_path / out)], capsys)
        assert "unknown device 'tpu'" in err and not (tmp_path / out).exists()
