"""``vfbench quality``: do a run's samples look like its data? (library: ``vfbench.quality``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vfbench.cli import app


@app.command("quality")
def quality_cmd(
    runs: List[str] = typer.Argument(..., help="run names (or run folders) to sample and score"),
    num: int = typer.Option(256, "--num", help="clips per row (the shapes protocol's 256; fewer renames the metric)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed of every row"),
    sample_batch: int = typer.Option(16, "--sample-batch", help="clips per sampling call"),
    sampling_steps: Optional[int] = typer.Option(None, "--sampling-steps", help="sampling steps of every row", show_default="each generator's own"),
    untrained: bool = typer.Option(True, "--untrained/--no-untrained", help="add an untrained generator's row (the ceiling)"),
    figure: Optional[Path] = typer.Option(None, "--figure", show_default='none', help="also write a PNG of real clips above each run's samples"),
    results: Optional[str] = typer.Option(None, "--results", help="results directory", show_default='$VFBENCH_HOME or ./vfbench-results'),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
):
    """One table: each run's FVD beside real-vs-real (floor) and an untrained model (ceiling), with pixel and
    frame-to-frame std and shapes-net's view of the samples (tables/quality.md).

    Example: vfbench quality videofusion-shapes vdm-shapes --figure docs/shapes-real-vs-samples.png
    """
    from vfbench.errors import check_positive
    from vfbench.quality import quality_table
    from vfbench.results import ResultsStore

    check_positive("--num", num)
    check_positive("--sample-batch", sample_batch)
    from vfbench.options import check_seed

    check_seed(seed)
    store = ResultsStore.open(results)
    if sampling_steps is not None:
        check_positive("--sampling-steps", sampling_steps)
    out = quality_table(store, runs, num=num, seed=seed, sample_batch=sample_batch, steps=sampling_steps,
                        untrained=untrained,
                        figure=figure, progress=progress, log=lambda s: typer.echo(s, err=True))
    typer.echo(out["markdown"])
    typer.echo(f"table: {store.root / 'tables' / 'quality.md'}")
    if figure is not None:
        typer.echo(f"figure: {figure}")
