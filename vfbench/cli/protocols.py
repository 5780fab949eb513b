"""``vfbench protocols`` / ``vfbench protocols diff A B``: the named FVD conventions (``metrics/conventions.py``)."""

from __future__ import annotations

import textwrap

import typer

from vfbench.cli import app

protocols_app = typer.Typer(help="List the named FVD conventions (presets) and compare two of them.",
                            invoke_without_command=True)
app.add_typer(protocols_app, name="protocols")


def _rows(rows, width: int = 100) -> str:
    left = max(len(r[0]) for r in rows)
    lines = []
    for label, *values in rows:
        text = " | ".join(values)
        wrapped = textwrap.wrap(text, width - left - 4) or [""]
        lines.append(f"  {label.ljust(left)}  {wrapped[0]}")
        lines += [f"  {' ' * left}  {w}" for w in wrapped[1:]]
    return "\n".join(lines)


@protocols_app.callback()
def protocols_cmd(ctx: typer.Context):
    """Every preset with each of its choices and its source (select one with evaluate --i3d-preset NAME).

    Example: vfbench protocols; vfbench protocols diff reference latte
    """
    if ctx.invoked_subcommand is not None:
        return
    from vfbench.metrics.conventions import presets

    typer.echo("FVD/KVD conventions (evaluate --i3d-preset NAME; every preset runs the TF-Hub reference weights"
               " with its own BatchNorm eps):")
    for name, choices in presets().items():
        typer.echo(f"{name}:")
        typer.echo(_rows([(label, value) for label, value in choices.items()]))


@protocols_app.command("diff")
def diff_cmd(a: str = typer.Argument(..., help="a preset"), b: str = typer.Argument(..., help="another preset")):
    """The choices where two presets differ.

    Example: vfbench protocols diff reference cd-fvd
    """
    from vfbench.metrics.conventions import diff

    rows = diff(a, b)
    if not rows:
        typer.echo(f"{a} and {b} make the same choices")
        return
    typer.echo(f"{a} vs {b}:")
    for label, va, vb in rows:
        typer.echo(f"  {label}:\n    {a}: {va}\n    {b}: {vb}")
