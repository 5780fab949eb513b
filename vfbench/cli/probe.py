"""``vfbench probe temporal|count``: metric diagnostics (library: ``vfbench.probe``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vfbench.cli import app

probe_app = typer.Typer(help="Metric diagnostics: temporal sensitivity and sample-count bias.", no_args_is_help=True)
app.add_typer(probe_app, name="probe")

DATASET = typer.Option("shapes", "--dataset", help="real clips from this dataset")
DATA_ROOT = typer.Option(None, "--data-root", show_default="none (built-in dataset)", help="folder of a real dataset (any folder of videos: --dataset folder)")
FRAMES = typer.Option(16, "--frames", help="clip length")
SIZE = typer.Option(32, "--size", help="clip size in pixels (the extractor's own resize takes it to its input)")
SEED = typer.Option(0, "--seed", help="seed of the clip choice and the corruptions")
RESULTS = typer.Option(None, "--results", help="results directory", show_default="$VFBENCH_HOME or ./vfbench-results")
DEVICE = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N")
BATCH = typer.Option(8, "--batch-size", help="clips per extractor batch")
OFFLINE = typer.Option(False, "--offline", help="never download weights")
I3D_WEIGHTS = typer.Option(None, "--i3d-weights", help="I3D weights file", show_default="the converted cache")


@probe_app.command("temporal")
def temporal_cmd(
    extractor: Optional[str] = typer.Option(None, "--extractor", show_default="shapes-net,i3d on shapes, else i3d",
                                            help="comma-separated extractors"),
    num: int = typer.Option(64, "--num", help="real clips per set (two disjoint sets are read)"),
    clips: Optional[Path] = typer.Option(None, "--clips", show_default="the dataset's train split",
                                         help="a folder of real videos (or frame folders) to probe instead"),
    dataset: str = DATASET, data_root: Optional[Path] = DATA_ROOT, frames: int = FRAMES, size: int = SIZE,
    seed: int = SEED, results: Optional[Path] = RESULTS, device: str = DEVICE, batch_size: int = BATCH,
    offline: bool = OFFLINE, i3d_weights: Optional[Path] = I3D_WEIGHTS,
):
    """Can the metric see motion? FVD between real clips and the same clips shuffled, reversed, frozen, and
    blurred / noised with the shuffle's pixel change; 'floor' is two disjoint real sets.

    Example: vfbench probe temporal --dataset shapes --extractor shapes-net --num 128
    """
    from vfbench.errors import check_positive
    from vfbench.probe import run_temporal, temporal_table
    from vfbench.results import ResultsStore

    check_positive("--num", num)
    check_positive("--batch-size", batch_size)
    store = ResultsStore.open(results)
    names = [x.strip() for x in extractor.split(",") if x.strip()] if extractor else None
    recs = run_temporal(store, dataset=dataset, extractors=names, num=num, frames=frames, size=size,
                        data_root=data_root, clips_dir=clips, seed=seed, device=device, batch_size=batch_size, offline=offline,
                        i3d_weights=i3d_weights, log=lambda s: typer.echo(s, err=True))
    typer.echo(temporal_table(recs))
    typer.echo(f"{len(recs)} record(s) written to {store.records_dir}")


@probe_app.command("count")
def count_cmd(
    extractor: Optional[str] = typer.Option(None, "--extractor", show_default="shapes-net on shapes, else i3d",
                                            help="the extractor"),
    max_clips: int = typer.Option(512, "--max", help="the largest N (clips on each side)"),
    samples: Optional[Path] = typer.Option(None, "--samples", show_default="the dataset's test split",
                                           help="a folder of generated clips to compare with the real ones"),
    repeats: int = typer.Option(1, "--repeats", help="random subsets averaged at each N"),
    dataset: str = DATASET, data_root: Optional[Path] = DATA_ROOT, frames: int = FRAMES, size: int = SIZE,
    seed: int = SEED, results: Optional[Path] = RESULTS, device: str = DEVICE, batch_size: int = BATCH,
    offline: bool = OFFLINE, i3d_weights: Optional[Path] = I3D_WEIGHTS,
):
    """How far does FVD move with the number of clips? FVD at N = 128, 256, ... --max and its extrapolation
    to infinitely many clips (linear in 1/N, as FID-infinity).

    Example: vfbench probe count --dataset shapes --max 1024
    """
    from vfbench.errors import check_positive
    from vfbench.probe import count_table, run_count
    from vfbench.results import ResultsStore

    check_positive("--max", max_clips)
    check_positive("--repeats", repeats)
    check_positive("--batch-size", batch_size)
    store = ResultsStore.open(results)
    rec = run_count(store, dataset=dataset, extractor=extractor, max_clips=max_clips, samples=samples, frames=frames,
                    size=size, data_root=data_root, seed=seed, repeats=repeats, device=device, batch_size=batch_size,
                    offline=offline, i3d_weights=i3d_weights, log=lambda s: typer.echo(s, err=True))
    typer.echo(count_table(rec))
    typer.echo(f"1 record written to {store.records_dir}")
