"""Calibration: a known bias injected by the loopback server is recovered on real Dubai boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openai_server import Bias, OpenAIServer
from PIL import Image

from geoseg.bench.sample import BenchSample
from geoseg.cli import cli, main
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.trainfree.calibrate import box_of_mask, calibrate, fit_profile
from geoseg.trainfree.client import GroundingClient
from geoseg.trainfree.refine import load_profile, profile_path

QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
# a systematic drift of a few per cent of the image: 20-60 px on these crops
BIAS = Bias(scale=(1.04, 0.97, 1.06, 0.95), shift=(-0.03, 0.04, 0.02, 0.05))


def _sample(i: int, target, mask: np.ndarray, task: str = "referring") -> BenchSample:
    return BenchSample(f"crop{i}", task, Prompt(text=target.instruction, task=task), f"crop{i}",
                       lambda: target.image, lambda: mask, instruction=target.instruction, category="building")


def _errors(profile, grounder, pairs) -> np.ndarray:
    """Largest corner error (px) per sample after the profile's correction."""
    out = []
    for target, _ in pairs:
        pred = grounder.ground(target.image, target.instruction).box
        h, w = target.image.shape[:2]
        out.append(np.abs(np.array(profile.apply(pred, w, h)) - np.array(target.box)).max())
    return np.array(out)


@pytest.fixture(scope="module")
def crop_server(dubai_crops) -> OpenAIServer:
    with OpenAIServer([t for t, _ in dubai_crops]) as srv:
        yield srv


@pytest.fixture()
def server(crop_server) -> OpenAIServer:
    crop_server.reset()
    crop_server.state.bias = BIAS
    return crop_server


def test_box_of_mask_uses_pixel_edges():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert box_of_mask(m) == (3.0, 2.0, 9.0, 5.0)
    assert box_of_mask(np.zeros((4, 4), bool)) is None


def test_fit_profile_recovers_a_synthetic_bias_in_both_spaces():
    rng = np.random.default_rng(3)
    sizes = [tuple(int(v) for v in rng.integers(300, 2000, 2)) for _ in range(10)]
    true = []
    for w, h in sizes:
        x0, y0 = rng.uniform(0, 0.6) * w, rng.uniform(0, 0.6) * h
        true.append((x0, y0, x0 + rng.uniform(0.1, 0.35) * w, y0 + rng.uniform(0.1, 0.35) * h))
    norm = np.array([[w, h, w, h] for w, h in sizes], float)
    pred = (np.array(BIAS.scale) * (np.array(true) / norm) + np.array(BIAS.shift)) * norm
    prof = fit_profile(pred, true, "m", sizes=sizes)
    np.testing.assert_allclose(prof.scale, 1 / np.array(BIAS.scale), rtol=1e-6)
    np.testing.assert_allclose(prof.offset, -np.array(BIAS.shift) / np.array(BIAS.scale), atol=1e-6)
    assert prof.residuals["max_abs_after"] < 1e-3 and prof.residuals["mean_abs_before"] > 20
    pix = fit_profile(np.array(true) * 1.02 + 7, true, "m")  # one size: a pixel-space fit
    assert pix.space == "pixels" and pix.residuals["max_abs_after"] < 1e-3
    with pytest.raises(GeosegError, match="at least 3"):
        fit_profile(pred[:2], true[:2], "m", sizes=sizes[:2])


def test_a_wild_box_is_set_aside_even_among_three():
    sizes = [(800, 600), (1200, 900), (640, 640)]
    true = np.array([(100, 80, 300, 260), (700, 500, 900, 800), (300, 200, 420, 330)], float)
    norm = np.array([[w, h, w, h] for w, h in sizes], float)
    pred = (np.array(BIAS.scale) * true / norm + np.array(BIAS.shift)) * norm
    pred[1] = (20, 30, 90, 80)  # the model pointed somewhere else entirely
    prof = fit_profile(pred, true, "m", sizes=sizes)
    assert prof.residuals["outliers"] == 1 and prof.residuals["max_abs_after"] < 1e-6
    np.testing.assert_allclose(prof.scale, 1 / np.array(BIAS.scale), rtol=1e-6)
    plain = fit_profile(pred, true, "m", sizes=sizes, loss="linear")
    assert plain.residuals["outliers"] == 0 and plain.residuals["max_abs_after"] > 50


def test_calibration_through_the_server_recovers_the_injected_bias(server, dubai_crops):
    """Fit on 9 real boxes, check on 3 held-out ones: within 2 px of the truth after correction."""
    client = GroundingClient(server.url, model=QWEN25)
    samples = [_sample(i, t, m) for i, (t, m) in enumerate(dubai_crops)]
    prof = calibrate(client, samples[:9])
    assert prof.key == "Qwen_Qwen2.5-VL-7B-Instruct" and prof.n == 9 and prof.space == "normalized"
    np.testing.assert_allclose(prof.scale, 1 / np.array(BIAS.scale), atol=0.01)
    np.testing.assert_allclose(prof.offset, -np.array(BIAS.shift) / np.array(BIAS.scale), atol=0.005)
    assert prof.residuals["mean_abs_before"] > 20 and prof.residuals["max_abs_after"] <= 2.0
    held_out = dubai_crops[9:]
    raw = [np.abs(np.array(client.ground(t.image, t.instruction).box) - np.array(t.box)).max() for t, _ in held_out]
    assert min(raw) > 10  # the bias is real on the held-out crops ...
    assert _errors(prof, client, held_out).max() <= 2.0  # ... and corrected


def test_robust_loss_ignores_a_wild_answer(server, dubai_crops):
    """One answer far off: soft-L1 keeps every honest box within 2 px, plain least squares does not."""
    server.state.answers = {4: '```json\n[{"bbox_2d": [5, 5, 60, 40], "label": "building"}]\n```'}
    client = GroundingClient(server.url, model=QWEN25)
    samples = [_sample(i, t, m) for i, (t, m) in enumerate(dubai_crops)]
    honest = [p for i, p in enumerate(dubai_crops) if i != 4]
    robust = calibrate(client, samples, loss="soft_l1")
    plain = calibrate(client, samples, loss="linear")
    assert robust.n == plain.n == 12
    assert _errors(robust, client, honest).max() <= 2.0
    assert _errors(plain, client, honest).max() > 5.0


def test_skipped_samples_are_counted(server, dubai_crops):
    pairs = dubai_crops[:5]
    server.state.answers = {1: "There is no building here."}
    empty = np.zeros_like(pairs[2][1])
    samples = [_sample(0, *pairs[0]), _sample(1, *pairs[1]), _sample(2, pairs[2][0], empty),
               _sample(3, *pairs[3], task="interactive"), _sample(4, *pairs[4])]
    with pytest.raises(GeosegError, match=r"only 2 of 5 samples.*no_box 1.*empty_target 1|only 2 of 5"):
        calibrate(GroundingClient(server.url, model=QWEN25), samples)
    prof = calibrate(GroundingClient(server.url, model=QWEN25), samples + [_sample(5, *dubai_crops[5])])
    assert prof.n == 3
    assert prof.meta["skipped"] == {"empty_target": 1, "other_task": 1, "no_text": 0, "no_box": 1}


@pytest.fixture()
def bars(monkeypatch) -> list[tuple[int, int]]:
    """Progress bars shown; each calibration bar's (count, total) as it closes."""
    import tqdm.std

    import geoseg.progress

    monkeypatch.setattr(geoseg.progress, "_enabled", True)
    closed: list[tuple[int, int]] = []
    close = tqdm.std.tqdm.close

    def recording_close(self) -> None:
        if str(getattr(self, "desc", "")).startswith("calibrating") and not getattr(self, "_seen_closed", False):
            self._seen_closed = True
            closed.append((self.n, self.total))
        close(self)

    monkeypatch.setattr(tqdm.std.tqdm, "close", recording_close)
    return closed


@pytest.mark.parametrize("limit, asked", [(4, 4), (None, 7), (20, 7)])
def test_the_progress_bar_ends_full_with_or_without_a_limit(server, dubai_crops, bars, limit, asked):
    """Its total is the questions the model will be asked: --limit caps it, empty targets found on the way
    take one off each, samples of other tasks never count."""
    pairs = dubai_crops[:9]
    samples = ([_sample(0, pairs[0][0], np.zeros_like(pairs[0][1])), _sample(1, *pairs[1], task="interactive"),
                _sample(2, pairs[2][0], np.zeros_like(pairs[2][1]))] + [_sample(i, *pairs[i]) for i in range(3, 9)]
               + [_sample(9, *dubai_crops[9])])
    prof = calibrate(GroundingClient(server.url, model=QWEN25), samples, limit=limit)
    assert prof.n == asked == sum("chat" in q["path"] for q in server.state.requests)
    assert bars == [(asked, asked)]


def _write_split(root: Path, pairs) -> None:
    """A GeoSeg-Bench (UniGeoSeg) split of real Dubai crops: PNG image, 0/255 mask, QA json."""
    entries = []
    for sub in ("ref/img", "ref/mask", "ref/json"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (t, m) in enumerate(pairs):
        Image.fromarray(t.image).save(root / f"ref/img/{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / f"ref/mask/{i}.png")
        (root / f"ref/json/{i}.json").write_text(json.dumps({"question": [t.instruction], "category": "building"}))
        entries.append({"img": f"ref/img/{i}.png", "mask": f"ref/mask/{i}.png", "json": f"ref/json/{i}.json"})
    (root / "val.json").write_text(json.dumps(entries))


def test_cli_calibrate_writes_the_profile_that_is_then_applied(server, dubai_crops, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_HOME", str(tmp_path / "home"))
    _write_split(tmp_path / "bench", dubai_crops[:6])
    r = CliRunner().invoke(cli, ["-q", "trainfree", "calibrate", "--data", str(tmp_path / "bench"), "--vlm-url",
                                 server.url, "--vlm-model", QWEN25, "--limit", "5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    dest = profile_path("Qwen_Qwen2.5-VL-7B-Instruct")
    assert f"wrote {dest}" in r.output and "5 samples" in r.output
    prof = load_profile(GroundingClient(server.url, model=QWEN25).backend_key)  # what the route looks up
    assert prof is not None and prof.n == 5 and prof.meta["format"] == "unigeoseg" and prof.meta["family"] == "qwen2.5-vl"
    assert _errors(prof, GroundingClient(server.url, model=QWEN25), dubai_crops[6:9]).max() <= 2.0

    out = tmp_path / "explicit.json"
    r = CliRunner().invoke(cli, ["trainfree", "calibrate", "--data", str(tmp_path / "bench" / "val.json"),
                                 "--format", "unigeoseg", "--vlm-url", server.url, "--vlm-model", QWEN25, "-o", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(out.read_text())["n"] == 6


def test_cli_limit_counts_usable_samples_only(server, dubai_crops, tmp_path):
    """--limit N asks about N samples with a target: empty targets in front do not eat into it."""
    pairs = dubai_crops[:7]
    empties = [(t, np.zeros_like(m)) for t, m in pairs[:2]]  # no target in the first two
    _write_split(tmp_path / "bench", empties + pairs[2:])
    out = tmp_path / "p.json"
    r = CliRunner().invoke(cli, ["-q", "trainfree", "calibrate", "--data", str(tmp_path / "bench"), "--vlm-url",
                                 server.url, "--vlm-model", QWEN25, "--limit", "4", "-o", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    prof = json.loads(out.read_text())
    assert prof["n"] == 4 and prof["meta"]["skipped"]["empty_target"] == 2 and prof["meta"]["samples"] == 6
    assert sum("chat" in q["path"] for q in server.state.requests) == 4  # the model was asked about exactly N


def test_cli_calibrate_unreachable_server_one_line_no_file(dubai_crops, tmp_path, capsys):
    import socket

    _write_split(tmp_path / "bench", dubai_crops[:3])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "p.json"
    with pytest.raises(SystemExit) as e:
        main(["-q", "trainfree", "calibrate", "--data", str(tmp_path / "bench"), "--vlm-url",
              f"http://127.0.0.1:{port}/v1", "--vlm-model", QWEN25, "--vlm-timeout", "2", "-o", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the grounding server at")
    assert err.splitlines()[-1] == errors[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bench"]
