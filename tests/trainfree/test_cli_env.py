"""The ``--vlm-*`` options read geoseg's own variables before the OpenAI client's, in every command.

The CLI fills each option, so the backend never sees the environment when it runs from the
command line: the option itself must know ``GEOSEG_VLM_*`` or an ``OPENAI_BASE_URL`` meant for
another tool (or a default such as ``auto`` / 60 s) silently wins over it.
"""

from __future__ import annotations

import pytest

from geoseg.cli import cli

COMMANDS = [("segment",), ("bench", "run"), ("serve",), ("trainfree", "calibrate")]


def _params(path: tuple[str, ...]) -> dict:
    """The parsed parameters of ``geoseg PATH`` with no arguments (required ones not enforced)."""
    cmd, ctx = cli, cli.make_context("geoseg", list(path), resilient_parsing=True)
    for name in path:
        cmd = cmd.get_command(ctx, name)
        ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
    return ctx.params


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_geoseg_variables_come_before_openai_ones(path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_MODEL", "other-model")
    monkeypatch.setenv("OPENAI_API_KEY", "other-key")
    monkeypatch.setenv("GEOSEG_VLM_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("GEOSEG_VLM_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct")
    monkeypatch.setenv("GEOSEG_VLM_KEY", "geoseg-key")
    monkeypatch.setenv("GEOSEG_VLM_FAMILY", "internvl")
    monkeypatch.setenv("GEOSEG_VLM_TIMEOUT", "7.5")
    monkeypatch.setenv("GEOSEG_VLM_MAX_PIXELS", "802816")
    monkeypatch.setenv("GEOSEG_VLM_MAX_TOKENS", "4096")
    p = _params(path)
    assert (p["vlm_url"], p["vlm_model"], p["vlm_key"]) == (
        "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct", "geoseg-key")
    assert (p["vlm_family"], p["vlm_timeout"], p["vlm_max_pixels"], p["vlm_max_tokens"]) == (
        "internvl", 7.5, 802816, 4096)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_openai_variables_are_the_fallback_and_defaults_stay(path, monkeypatch):
    for var in ("GEOSEG_VLM_URL", "GEOSEG_VLM_MODEL", "GEOSEG_VLM_KEY", "GEOSEG_VLM_FAMILY", "GEOSEG_VLM_TIMEOUT",
                "GEOSEG_VLM_MAX_PIXELS", "GEOSEG_VLM_MAX_TOKENS"):
        monkeypatch.setenv(var, "")  # set but empty counts as unset
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = _params(path)
    assert p["vlm_url"] == "http://127.0.0.1:9/v1" and p["vlm_model"] is None and p["vlm_key"] is None
    assert (p["vlm_family"], p["vlm_timeout"], p["vlm_max_pixels"], p["vlm_max_tokens"]) == ("auto", 60.0, None, None)


def test_a_bad_variable_value_is_one_line_naming_it(monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setenv("GEOSEG_VLM_TIMEOUT", "soon")
    r = CliRunner().invoke(cli, ["trainfree", "calibrate", "--data", "."])
    assert r.exit_code == 2 and "GEOSEG_VLM_TIMEOUT" in r.output and "'soon' is not a valid float" in r.output
