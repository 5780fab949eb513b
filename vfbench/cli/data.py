"""``vfbench data``: index, cache and inspect datasets (library: ``vfbench.data.prepare``)."""

from __future__ import annotations

from typing import Optional

import typer

from vfbench.cli import app

data_app = typer.Typer(help="Index, pre-decode and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare_cmd(
    name: str = typer.Argument(..., help="dataset name (taichi, ucf101, sky, weizmann, folder)"),
    source: str = typer.Option(..., "--source", help="the dataset's root folder (downloaded by you)"),
    split: str = typer.Option("all", "--split", help="which split to index (all = every split)"),
    cache: bool = typer.Option(False, "--cache/--no-cache", help="also pre-decode every frame into a uint8 memory-mapped cache"),
    size: int = typer.Option(64, "--size", help="protocol frame size of the cache (pixels)"),
    frames: int = typer.Option(16, "--frames", help="clip length, to report sources too short for it"),
    stride: Optional[int] = typer.Option(None, "--stride", help="clip stride", show_default="the dataset's, 4 for taichi"),
    out: Optional[str] = typer.Option(None, "--out", show_default='VFBENCH_CACHE/prepared/', help="write here instead of the cache directory (VFBENCH_CACHE/prepared/)"),
):
    """Check every source as training decodes it, index it (frame counts, labels, skipped sources) and
    optionally cache its frames; nothing is written into the dataset folder.

    Example: vfbench data prepare taichi --source ~/data/taichi --cache --size 64
    """
    from vfbench.data.prepare import prepare
    from vfbench.errors import check_positive
    from vfbench.registry import DATASETS

    DATASETS.check(name)
    check_positive("--size", size)
    check_positive("--frames", frames)
    if stride is not None:
        check_positive("--stride", stride)
    summary = prepare(name, source, split=split, frames=frames, stride=stride, cache=cache, size=size, out=out,
                      progress=lambda msg: typer.echo(msg, err=True))
    typer.echo(f"{name} {split}: {summary['usable']} of {summary['sources']} sources usable,"
               f" {summary['skipped']} skipped ({summary['too_short']} too short, {summary['unreadable']} unreadable),"
               f" {summary['total_frames']} frames; index: {summary['index']}")
    if out is not None:
        typer.echo(f"outside the dataset root: give the dataset the option prepared={out} to use it")
    if cache:
        typer.echo(f"cache: {summary['cached_sources']} sources, {summary['cached_frames']} frames at"
                   f" {size}x{size} ({summary['cache_bytes'] / 2**20:.1f} MiB): {summary['cache']}")


@data_app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="dataset name (see `vfbench ls datasets`)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="dataset folder", show_default='$VFBENCH_DATA/<name>'),
    split: str = typer.Option("train", "--split", help="split to count (all = train + test where the dataset has both)"),
    frames: int = typer.Option(16, "--frames", help="clip length used to decide which sources are too short"),
    size: int = typer.Option(64, "--size", help="protocol size, to report whether a frame cache exists"),
):
    """Print a dataset's layout, split counts, skipped sources and prepared index/cache status.

    Example: vfbench data info ucf101 --data-root ~/data/ucf101 --split train
    """
    import warnings

    from vfbench.data import build_dataset
    from vfbench.registry import DATASETS

    DATASETS.check(name)
    with warnings.catch_warnings(record=True):  # the skipped sources are printed below instead
        warnings.simplefilter("always")
        ds = build_dataset(name, split=split, frames=frames, size=size, data_root=data_root)
    info = ds.describe()
    typer.echo(f"{name} ({split}): {len(ds)} clips, {info.get('num_classes', 0)} classes")
    for key in ("root", "clip_sampling", "frame_cache", "num_content", "num_motion"):
        if info.get(key) is not None:
            typer.echo(f"  {key}: {info[key]}")
    layout = getattr(ds, "layout", None)
    if layout:
        typer.echo(f"  layout: {layout}")
    for path, kind, why in getattr(ds, "skipped", []):  # every one, with its full reason
        typer.echo(f"  skipped {path}: {kind}: {why}")
