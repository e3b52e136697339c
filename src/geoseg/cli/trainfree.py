"""``geoseg trainfree``: tools of the training-free route (calibrating a grounding backend)."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.bench.readers import FORMATS
from geoseg.trainfree.conventions import FAMILIES

#: the grounding-endpoint options (reusable by any command that talks to a multimodal LLM). An unset
#: option takes geoseg's own variable first, then the OpenAI client's, as the backend does when
#: built in Python: the CLI fills the option, so without GEOSEG_VLM_* here an OPENAI_* value would
#: win over it and a default (``auto``, 60 s) over GEOSEG_VLM_FAMILY / GEOSEG_VLM_TIMEOUT.
VLM_OPTIONS = [
    click.option("--vlm-url", default=None, envvar=["GEOSEG_VLM_URL", "OPENAI_BASE_URL"], show_envvar=True,
                 help="OpenAI-compatible API base URL of the multimodal LLM, e.g. http://127.0.0.1:8000/v1."),
    click.option("--vlm-model", default=None, envvar=["GEOSEG_VLM_MODEL", "OPENAI_MODEL"], show_envvar=True,
                 help="Served model name (the first model the server lists when left out)."),
    click.option("--vlm-key", default=None, envvar=["GEOSEG_VLM_KEY", "OPENAI_API_KEY"], show_envvar=True,
                 help="API key (local servers usually need none)."),
    click.option("--vlm-family", type=click.Choice(["auto", *FAMILIES]), default="auto", show_default=True,
                 envvar="GEOSEG_VLM_FAMILY", show_envvar=True,
                 help="Model family: how the image is sized, the prompt, the coordinates of the answer "
                      "(auto: guessed from the model name)."),
    click.option("--vlm-timeout", default=60.0, show_default=True, type=float, envvar="GEOSEG_VLM_TIMEOUT",
                 show_envvar=True, help="Seconds per request."),
    click.option("--vlm-max-pixels", default=None, type=int, envvar="GEOSEG_VLM_MAX_PIXELS", show_envvar=True,
                 help="Image budget in pixels when the server was started with another one (Qwen's max_pixels)."),
    click.option("--vlm-max-tokens", default=None, type=click.IntRange(min=16), envvar="GEOSEG_VLM_MAX_TOKENS",
                 show_envvar=True, help="Answer length limit in tokens (default 512; a thinking model needs thousands)."),
]


def vlm_options(f):
    """Add the ``--vlm-*`` options to a click command."""
    for opt in reversed(VLM_OPTIONS):
        f = opt(f)
    return f


def vlm_kwargs(values: dict) -> dict:
    """The ``vlm_*`` keyword arguments of the ``trainfree`` backend from parsed options (unset ones dropped)."""
    return {k: v for k, v in values.items() if k.startswith("vlm_") and v is not None and v != ""}


@click.group()
def trainfree() -> None:
    """Training-free route (multimodal-LLM grounding + SAM): calibration of a grounding backend."""


@trainfree.command("calibrate")
@click.option("--data", required=True, type=click.Path(exists=True), help="Benchmark file or folder with target masks.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default=None,
              help="Benchmark format (autodetected when left out).")
@click.option("--split", default=None, help="Only this split of the benchmark (e.g. val).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Ask the model about the first N usable samples only: referring/reasoning ones with an "
                   "instruction and a non-empty target (a handful is enough).")
@vlm_options
@click.option("-o", "--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="Profile file; by default the backend's own profile, applied automatically from then on.")
@click.option("--loss", type=click.Choice(["soft_l1", "huber", "cauchy", "linear"]), default="soft_l1",
              show_default=True, help="Robust loss of the fit.")
def calibrate_cmd(data, fmt, split, limit, vlm_url, vlm_model, vlm_key, vlm_family, vlm_timeout, vlm_max_pixels,
                  vlm_max_tokens, out_path, loss) -> None:
    """Fit the grounding backend's box correction (scale and offset per coordinate) on labelled samples.

    The model is asked for the target of every referring/reasoning sample; the true box is
    the bounding box of the sample's mask. The profile is written under the backend's key
    (see --out) and used by the trainfree route instead of the fixed refinement rule.
    """
    from geoseg.bench.readers import load_benchmark
    from geoseg.trainfree.calibrate import calibrate
    from geoseg.trainfree.client import GroundingClient
    from geoseg.trainfree.refine import profile_path

    samples, fmt = load_benchmark(data, fmt, split)
    samples = [s for s in samples if s.task in ("referring", "reasoning") and (s.instruction or s.prompt.text)]
    first = f"; asking about the first {limit} with a non-empty target" if limit is not None else ""
    click.echo(f"{len(samples)} referring/reasoning samples ({fmt}) from {data}{first}", err=True)
    with GroundingClient(vlm_url, vlm_model, vlm_key, family=vlm_family, timeout=vlm_timeout,
                         max_pixels=vlm_max_pixels, **({"max_tokens": vlm_max_tokens} if vlm_max_tokens else {})) as client:
        key = client.backend_key
        profile = calibrate(client, samples, key, loss=loss, limit=limit,
                            meta={"data": str(data), "format": fmt, "split": split, "family": client.family.name,
                                  "model": client.model})
    dest = Path(out_path) if out_path else profile_path(key)
    profile.save(dest)
    r = profile.residuals
    click.echo(f"backend {key}: {profile.n} samples, mean box-corner error {r['mean_abs_before']:.1f} px -> "
               f"{r['mean_abs_after']:.1f} px (max {r['max_abs_after']:.1f} px after)")
    click.echo("scale  " + " ".join(f"{v:+.4f}" for v in profile.scale))
    click.echo("offset " + " ".join(f"{v:+.4f}" for v in profile.offset) + f" ({profile.space})")
    click.echo(f"wrote {dest}")
