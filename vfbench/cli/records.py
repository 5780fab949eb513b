"""``vfbench records check``: list the files in ``records/`` that readers skip (library: ``vfbench.records``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vfbench.cli import app

records_app = typer.Typer(help="Inspect the result records of a results directory.", no_args_is_help=True)
app.add_typer(records_app, name="records")


@records_app.command("check")
def check_cmd(
    results: Optional[Path] = typer.Option(None, "--results", help="Results directory", show_default='./vfbench-results or VFBENCH_HOME'),
    move_aside: bool = typer.Option(False, "--move-aside", help="Move every bad record into records/unreadable/."),
):
    """Check every record against the record schema; print each bad file and why (exit 1 if any).

    `vfbench report` and `vfbench evaluate --all` skip bad records with a warning; this lists them
    all at once. Example: vfbench records check --results vfbench-results
    """
    from vfbench.errors import VfbenchError
    from vfbench.records import check_records
    from vfbench.results import ResultsStore

    store = ResultsStore.open(results)
    total, bad = 0, []
    for path, problem in check_records(store.records_dir):
        total += 1
        if problem:
            bad.append(path)
            typer.echo(problem)
    if move_aside and bad:
        import warnings

        from vfbench.readback import move_aside as move

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said below, once
            moved = [move(p, "is not a result record") for p in bad]
        typer.echo(f"moved {len(moved)} file(s) to {moved[0].parent}")
    typer.echo(f"{total} record file(s) in {store.records_dir}: {total - len(bad)} good, {len(bad)} bad")
    if bad and not move_aside:
        raise VfbenchError(f"{len(bad)} record file(s) in {store.records_dir} are not result records (listed above);"
                           " fix or delete them, or rerun with --move-aside")
