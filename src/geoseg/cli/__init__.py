"""The ``geoseg`` command line (click).

One module per command, as in rasterio's CLI; subcommands are imported lazily so
``geoseg --help`` stays fast and a missing optional extra only affects its command.
Library errors (:class:`geoseg.errors.GeosegError`) are printed as one line and
turn into a non-zero exit.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import click

from geoseg._version import __version__
from geoseg.errors import GeosegError
from geoseg.progress import set_progress

# command name -> "module:attribute" of a click command or group
_COMMANDS: dict[str, str] = {
    "segment": "geoseg.cli.segment:segment",
    "data": "geoseg.cli.data:data",
    "bench": "geoseg.cli.bench:bench",
    "train": "geoseg.cli.train:train",
    "trainfree": "geoseg.cli.trainfree:trainfree",
    "serve": "geoseg.cli.serve:serve",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, t in _COMMANDS.items() if importlib.util.find_spec(t.partition(":")[0]) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("geoseg"):
                raise click.ClickException(f"the '{cmd_name}' command is not available in this build ({exc})") from exc
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Instruction-driven segmentation of remote-sensing imagery."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Dask configures its own loggers at INFO when it is imported; through our handler its cluster
    # chatter would flood the terminal. Read from the environment at import (workers inherit it);
    # -vv shows it again.
    ctx.ensure_object(dict)
    if verbose < 2 and "DASK_LOGGING__DISTRIBUTED" not in os.environ:  # a user's own value is kept
        os.environ["DASK_LOGGING__DISTRIBUTED"] = "error" if quiet else "warning"
        ctx.obj["dask_log_default"] = True  # a command may choose another default (batch: errors only)
    set_progress(not quiet and sys.stderr.isatty() or (verbose > 0 and not quiet))
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="geoseg", standalone_mode=False)
    except GeosegError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
