"""The ``vfbench`` command line: thin Typer commands that call library functions.

Errors: a ``VfbenchError`` becomes one sentence on stderr and its exit code (2 for usage errors,
1 for failures); any other exception is reported in one line too, with the traceback only under
``--debug``. Ctrl-C exits 130 with one line: what was kept and the command that resumes
(vfbench.cli.interrupt). ``--threads`` / vfbench.threads size the CPU thread pool once per call.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Optional

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


_ARGS: list = []  # this call's command line (main sets it)
_THREADS_LINE: list = []  # printed when a computing command starts (not for --help or a usage error)

# Commands that compute: they say once how many threads they use (``ls``, ``data info``... do not).
_HEAVY = {"train", "pretrain", "sample", "evaluate", "demo", "ablate", "compare", "report", "bench", "quality",
          "probe"}


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: Optional[int] = typer.Option(
        None, "--threads", show_default="OMP_NUM_THREADS, else the cores the load leaves free",
        help="CPU threads of every computation."),
):
    """vfbench: video diffusion benchmark (VideoFusion, VDM, VIDM; FVD, KVD, IS).

    Example: vfbench demo --quick
    """
    if debug:
        os.environ["VFBENCH_DEBUG"] = "1"
    from vfbench.threads import apply_threads, choose_threads

    choice = choose_threads(threads)
    apply_threads(choice)
    _THREADS_LINE[:] = [choice.describe()] if os.environ.get("RANK", "0") == "0" else []


def _no_type_beside_flags() -> None:
    """Typer's rich help prints ``<bool>`` beside on/off flags, which take no value: show nothing there."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - older Typer: click's help, which has no type column
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_vfbench", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._vfbench = True
    TyperOption.display_type_rich = display_type_rich


_no_type_beside_flags()


# Each command module adds its commands to ``app`` (one module per command group).
from vfbench.cli import ls as _ls  # noqa: E402,F401
from vfbench.cli import bench as _bench  # noqa: E402,F401
from vfbench.cli import ablate as _ablate  # noqa: E402,F401
from vfbench.cli import report as _report  # noqa: E402,F401
from vfbench.cli import demo as _demo  # noqa: E402,F401
from vfbench.cli import train as _train  # noqa: E402,F401
from vfbench.cli import sample as _sample  # noqa: E402,F401
from vfbench.cli import evaluate as _evaluate  # noqa: E402,F401
from vfbench.cli import data as _data  # noqa: E402,F401
from vfbench.cli import weights as _weights  # noqa: E402,F401
from vfbench.cli import quality as _quality  # noqa: E402,F401
from vfbench.cli import records as _records  # noqa: E402,F401
from vfbench.cli import protocols as _protocols  # noqa: E402,F401
from vfbench.cli import probe as _probe  # noqa: E402,F401


def _debug(argv=None) -> bool:
    args = sys.argv[1:] if argv is None else list(argv)
    return "--debug" in args or os.environ.get("VFBENCH_DEBUG") == "1"


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _parser_exceptions():
    """(exit, abort, usage/click) exception classes of click *and* of the click copy that Typer >= 0.17
    vendors as ``typer._click`` (whose classes do not derive from click's)."""
    exits, aborts, clicks = [], [], []
    try:  # Typer >= 0.17 no longer depends on click; it is only there when something else installed it
        import click

        exits, aborts, clicks = [click.exceptions.Exit], [click.exceptions.Abort], [click.ClickException]
    except ImportError:
        pass
    try:
        import typer.exceptions as te

        exits += [c for c in (getattr(te, "Exit", None),) if c is not None]
        aborts += [c for c in (getattr(te, "Abort", None),) if c is not None]
    except ImportError:  # pragma: no cover - older Typer re-exports click's own classes
        pass
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        clicks.append(VendoredClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(exits), tuple(aborts), tuple(clicks)


def _announcing(callback):
    def run(*args, **kwargs):
        for line in _THREADS_LINE:
            typer.echo(line, err=True)
        _THREADS_LINE.clear()
        return callback(*args, **kwargs)

    return run


def _announce_threads(command, heavy: bool = False) -> None:
    """Computing commands print the thread line as they start: after their arguments parsed (a usage
    error stays one line) and never for --help."""
    subs = getattr(command, "commands", None)
    if subs is None:
        if heavy and command.callback is not None:
            command.callback = _announcing(command.callback)
        return
    for name, sub in subs.items():
        _announce_threads(sub, heavy or name in _HEAVY)


def _invoke(args):
    """Parse and run like ``app(...)`` does, minus its wrapper, which turns Ctrl-C into a bare exit code
    and so loses what the interrupted work kept."""
    import typer.main

    command = typer.main.get_command(app)
    _announce_threads(command)
    with command.make_context("vfbench", list(args)) as ctx:
        return command.invoke(ctx)


def _option_value(opts) -> Optional[str]:
    """The value given on this call's command line to an option named ``opts`` (for the message)."""
    for i, arg in enumerate(_ARGS):
        for o in opts:
            if arg == o and i + 1 < len(_ARGS):
                return _ARGS[i + 1]
            if arg.startswith(o + "="):
                return arg[len(o) + 1:]
    return None


def _usage_sentence(exc) -> str:
    """A parser error (unknown command or option, bad value, missing argument) as one sentence with
    the same shape as every other ``error:`` line: the problem, then the fix."""
    from vfbench.errors import did_you_mean

    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command", None)
    path = ctx.command_path if ctx is not None and ctx.command_path else "vfbench"
    kind = type(exc).__name__
    msg = " ".join(exc.format_message().split())
    if msg.startswith("No such command") and hasattr(command, "commands"):
        name = msg.split("'")[1] if "'" in msg else ""
        msg = did_you_mean("command", name, [n for n, c in command.commands.items() if not c.hidden])
    elif kind == "NoSuchOption" and command is not None:
        import difflib

        names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        close = difflib.get_close_matches(exc.option_name, names, n=2, cutoff=0.6)
        msg = f"unknown option {exc.option_name}" + (f": did you mean {' or '.join(close)}?" if close else "")
    elif kind == "BadParameter" and getattr(exc, "param", None) is not None and exc.param.opts:
        param = exc.param  # click keeps the type in .type, Typer >= 0.2x in .type_descriptor
        ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        type_name = getattr(getattr(param, "type", None), "name", None) or getattr(ann, "__name__", "")
        what = {"integer": "a whole number", "int": "a whole number", "float": "a number"}.get(type_name)
        value = _option_value(exc.param.opts)
        if what and value is not None:
            msg = f"{exc.param.opts[-1]} must be {what}, got {value!r}"
    msg = msg[:1].lower() + msg[1:]
    return f"{msg.rstrip('.')} (see {path} --help)"


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as ``warning: <message>``: no source path, no code line (the CLI's one language)."""
    return f"warning: {message}\n"


def main(argv=None) -> None:
    exits, aborts, clicks = _parser_exceptions()
    debug_env = os.environ.get("VFBENCH_DEBUG")
    thread_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    _ARGS[:] = sys.argv[1:] if argv is None else list(argv)
    import warnings

    # the format, not the display: warnings recorded by a caller (catch_warnings(record=True)) stay recorded
    format_before = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        rv = _invoke(_ARGS)
    except exits as exc:
        sys.exit(exc.exit_code)
    except aborts:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except clicks as exc:  # usage errors from the parser: unknown option, bad value, missing argument
        typer.echo(f"error: {_usage_sentence(exc)}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt as exc:
        from vfbench.cli.interrupt import interrupted_line

        typer.echo(interrupted_line(exc, _ARGS), err=True)
        sys.exit(130)
    except VfbenchError as exc:
        if _debug(argv):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a write outside vfbench.atomic (a log append, a library's own file): explain it
        if _debug(argv) or exc.errno not in _WRITE_ERRNOS:
            if _debug(argv):
                raise
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            sys.exit(1)
        from pathlib import Path

        from vfbench.atomic import _explain_oserror

        where = Path(exc.filename or "(unknown file)")
        if exc.errno in (errno.EACCES, errno.EPERM):
            msg = (f"permission denied on {where}; fix its permissions or choose another location with"
                   " --results or VFBENCH_HOME")
        else:
            msg = str(_explain_oserror(where, exc))
        typer.echo(f"error: {msg}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, never a traceback by default
        if _debug(argv):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
    finally:  # ``--debug`` of one in-process call must not leak into the next one
        if debug_env is None:
            os.environ.pop("VFBENCH_DEBUG", None)
        warnings.formatwarning = format_before
        for key, value in thread_env.items():  # the chosen thread count is this call's, not the caller's
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    sys.exit(rv if isinstance(rv, int) else 0)
