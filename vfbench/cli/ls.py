"""``vfbench ls``: what is registered."""

from __future__ import annotations

from typing import Optional

import typer

from vfbench.cli import app
from vfbench.errors import UnknownNameError


@app.command("ls")
def ls_cmd(
    kind: Optional[str] = typer.Argument(None, help="generators, datasets, metrics or extractors (default: all)"),
):
    """List registered generators, datasets, metrics and extractors.

    Example: vfbench ls datasets
    """
    from vfbench.registry import REGISTRIES

    kinds = list(REGISTRIES) if kind is None else [kind]
    for k in kinds:
        if k not in REGISTRIES:
            raise UnknownNameError("registry", k, REGISTRIES)
        reg = REGISTRIES[k]
        typer.echo(f"{k}:")
        names = reg.names()
        width = max((len(n) for n in names), default=0)
        for n in names:
            meta = reg.meta(n)
            extra = meta.get("description", "")
            if "higher_is_better" in meta:
                extra += "  (higher is better)" if meta["higher_is_better"] else "  (lower is better)"
            typer.echo(f"  {n.ljust(width)}  {extra}".rstrip())
        if k == "metrics":
            typer.echo("  (also accepted: a metric at another clip count, e.g. fvd16_16f or fvd_shapes64, flagged in its"
                       " records; and an I3D metric under a preset, e.g. fvd2048_16f-latte: see `vfbench protocols`)")
