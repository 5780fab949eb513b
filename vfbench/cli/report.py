"""``vfbench report``: one self-contained HTML file of a results directory (library: ``vfbench.reports.html``)."""

from __future__ import annotations

from typing import Optional

import typer

from vfbench.cli import app


@app.command("report")
def report_cmd(
    results: Optional[str] = typer.Option(None, "--results", help="results directory", show_default='$VFBENCH_HOME or ./vfbench-results'),
    out: Optional[str] = typer.Option(None, "--out", help="HTML file to write", show_default='<results>/reports/report.html'),
    title: str = typer.Option("vfbench report", "--title", help="heading of the report"),
    control_grid: bool = typer.Option(False, "--control-grid/--no-control-grid",
                                      help="sample VideoFusion's content/motion grid where it is not cached yet"
                                           " (the slow part of a report; cached grids are always shown)"),
    sampling_steps: Optional[int] = typer.Option(None, "--sampling-steps", show_default="the run's sampling_steps",
                                                 help="DDIM steps of the control grids"),
    screenshot: Optional[str] = typer.Option(None, "--screenshot", show_default="none",
                                             help="also write a PNG of the whole report (headless Chromium)"),
    screenshot_width: int = typer.Option(1280, "--screenshot-width",
                                         help="page width of --screenshot in px (390: a phone)"),
):
    """Write an HTML report (runs, metrics with CIs, tables beside the papers', plots, sample GIFs).

    Example: vfbench report --results vfbench-results
    docs/report.png: vfbench report --results DIR --control-grid --screenshot docs/report.png
    """
    from vfbench.errors import UsageError
    from vfbench.reports.html import write_report
    from vfbench.results import ResultsStore

    store = ResultsStore.open(results)
    if not store.root.is_dir():
        raise UsageError(f"results directory {store.root} does not exist; pass --results DIR or run"
                         " `vfbench demo` first")
    if sampling_steps is not None:
        from vfbench.errors import check_positive

        check_positive("--sampling-steps", sampling_steps)
    if screenshot is not None:
        from vfbench.reports.screenshot import find_chromium

        from vfbench.errors import check_range

        check_range("--screenshot-width", screenshot_width, 320, 4000)
        find_chromium()  # before the report is built
    path = write_report(store, out, title=title, control_grid=control_grid, sampling_steps=sampling_steps,
                        log=lambda s: typer.echo(s, err=True))
    typer.echo(str(path))
    if screenshot is not None:
        from pathlib import Path

        from vfbench.reports.screenshot import screenshot as take

        typer.echo(str(take(path, Path(screenshot), width=screenshot_width)))
