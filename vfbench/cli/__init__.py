"""The ``vfbench`` command line: thin Typer commands that call library functions.

Errors: a ``VfbenchError`` becomes one sentence on stderr and its exit code (2 for usage errors,
1 for failures); any other exception is reported in one line too, with the traceback only under
``--debug``. Ctrl-C exits 130; whatever was already written stays (all writes are atomic).
"""

from __future__ import annotations

import os
import sys

import typer

from vfbench.errors import VfbenchError

app = typer.Typer(
    name="vfbench",
    help="Train, sample and score video diffusion generators under the field's exact protocols.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
):
    """vfbench: video diffusion benchmark (VideoFusion, VDM, VIDM; FVD, KVD, IS).

    Example: vfbench demo --quick
    """
    if debug:
        os.environ["VFBENCH_DEBUG"] = "1"


# Each command module adds its commands to ``app`` (one module per command group).
from vfbench.cli import ls as _ls  # noqa: E402,F401


def _debug() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("VFBENCH_DEBUG") == "1"


def main(argv=None) -> None:
    import click

    try:
        rv = app(args=argv, standalone_mode=False, prog_name="vfbench")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors from the parser
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: everything already written is kept; rerun the same command to resume", err=True)
        sys.exit(130)
    except VfbenchError as exc:
        if _debug():
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, never a traceback by default
        if _debug():
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
