"""``benchmarks/model_speed.py``: the GPU throughput code, run under CPU autocast (CI has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_speed.py"


def test_throughput_runs_the_bf16_batch_path_and_counts_flops(trained_run, capsys):
    figures = load_module("model_speed", SCRIPT).gpu_throughput(trained_run["out"] / "best.pt", batch=3, iters=1,
                                                                device="cpu")
    out = capsys.readouterr().out
    assert figures["device"] == "CPU" and figures["peak_fraction"] is None
    assert figures["tiles_per_s"] > 0 and figures["gflop_per_tile"] > 0
    assert f"batch 3, bf16 autocast: {figures['tiles_per_s']:.0f} tiles/s" in out
    assert "peak FLOP/s of this device unknown" in out


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                            ("NVIDIA H100 PCIe", 756.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                            ("Tesla T4", None)])
def test_peak_flops_table_matches_device_names(name, peak):
    assert load_module("model_speed", SCRIPT).peak_tflops(name) == peak
