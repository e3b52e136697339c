"""``geoseg serve``: the interactive map page and REST API on one port."""

from __future__ import annotations

import click

from geoseg.cli.trainfree import vlm_kwargs, vlm_options
from geoseg.errors import GeosegError, reason, require


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes the server to the network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--backend", default="unified", show_default=True,
              help="Segmenter backend: unified, classical, trainfree, sam, sam2.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Weights for the backend.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-upload-mb", default=200.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Uploads larger than this are refused with 413.")
@click.option("--max-images", default=8, show_default=True, type=click.IntRange(min=1),
              help="Open images kept in memory with their embeddings.")
@click.option("--image-root", "image_roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder whose files clients may open by path (repeatable); none: uploads only.")
@click.option("--upload-dir", type=click.Path(), default=None,
              help="Folder for uploads while their image is open (each server uses a locked subfolder of its own, "
                   "removed at shutdown; ones of killed servers are removed at start). Default: a temporary folder.")
@vlm_options  # --backend trainfree: the multimodal LLM that grounds each instruction
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, backend: str, checkpoint: str | None, device: str,
          max_upload_mb: float, max_images: int, image_roots: tuple[str, ...], upload_dir: str | None,
          **vlm) -> None:
    """Serve the web page and the REST API (OpenAPI schema at /openapi.json).

    Open http://HOST:PORT/ in a browser, open an image, then click points, drag a box
    or type an instruction. The backend is loaded once at start.

    \b
    Examples:
      geoseg serve --backend classical --port 8080
      geoseg serve --backend classical --upload-dir /srv/geoseg-uploads
      geoseg serve --backend trainfree --vlm-url http://127.0.0.1:8001/v1 --vlm-model Qwen/Qwen2.5-VL-7B-Instruct
    """
    require("fastapi", "serve")
    uvicorn = require("uvicorn", "serve")
    from geoseg.serve import create_app

    app = create_app(backend, checkpoint, max_upload_mb=max_upload_mb, max_images=max_images, image_roots=image_roots,
                     upload_dir=upload_dir, backend_options=vlm_kwargs(vlm) if backend == "trainfree" else None,
                     device=device)  # checks --upload-dir (and --checkpoint, --device) before listening
    try:
        proto = app.state.store.prototype  # load the weights now: a bad backend fails before listening
        proto.warm_up()  # and what it loads lazily (unified: the text encoder), so no request pays for it
    except GeosegError:
        raise
    except Exception as exc:  # noqa: BLE001 - a backend that cannot be built is a user-facing problem
        raise GeosegError(f"cannot load backend {backend!r}: {type(exc).__name__}: {reason(exc)}",
                          "check --backend, --checkpoint and --device") from exc
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    if not quiet:
        click.echo(f"geoseg serve: backend {proto.name} ({', '.join(sorted(proto.capabilities))}) "
                   f"on http://{host}:{port}/  (Ctrl+C to stop)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")
