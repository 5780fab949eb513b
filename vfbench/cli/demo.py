"""``vfbench demo``: train, sample, score and compare the three generators on ``shapes``, then report.

Library: ``vfbench.ablation.run_demo``. Resumable: rerunning after an interruption skips every run,
sample set and evaluation already done (``vfbench.pipeline``).
"""

from __future__ import annotations

from typing import Optional

import typer

from vfbench.cli import app


@app.command("demo")
def demo_cmd(
    quick: bool = typer.Option(False, "--quick", help="a ~2-minute smoke run (tiny models, few steps and samples)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps per run", show_default='250; quick 10'),
    preset: Optional[str] = typer.Option(None, "--preset", show_default='tiny', help="model size: tiny (default), small or paper"),
    size: Optional[int] = typer.Option(None, "--size", help="frame size in pixels", show_default='16'),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default='64; quick 8', help="generated clips per run (default 64; quick 8); fewer than 256 renames the metrics"),
    sampling_steps: Optional[int] = typer.Option(None, "--sampling-steps", help="Sampling steps (each generator's own sampler)", show_default='10; quick 4'),
    lambdas: Optional[str] = typer.Option(None, "--lambdas", help="also run a lambda ablation with these values, e.g. 0.25 (~2 min each; the compare table's VideoFusion is lambda 0.5)", show_default='none'),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate of every run", show_default='2e-3'),
    pretrain_steps: Optional[int] = typer.Option(None, "--pretrain-steps", show_default='1000; quick 10', help="image-DPM pretraining steps of VideoFusion's base (shared by its runs)"),
    results: Optional[str] = typer.Option(None, "--results", help="results directory", show_default='$VFBENCH_HOME or ./vfbench-results'),
    config: Optional[str] = typer.Option(None, "--config", show_default='none', help="YAML/TOML/JSON file with any of these options"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
):
    """Pretrain VideoFusion's base, train small VideoFusion, VDM and VIDM on shapes, score them (mini
    protocol) and write the HTML report (prints its path); --lambdas adds a lambda ablation. Rerun to resume.

    Example: vfbench demo --quick --lambdas 0.25
    """
    from vfbench.ablation import DemoConfig, run_demo
    from vfbench.config import resolve
    from vfbench.results import ResultsStore

    over = {"quick": quick or None, "steps": steps, "preset": preset, "size": size, "num_samples": num_samples,
            "sampling_steps": sampling_steps, "lambdas": lambdas, "lr": lr, "pretrain_steps": pretrain_steps}
    cfg = resolve(DemoConfig, config, over)
    store = ResultsStore.open(results)
    path = run_demo(store, cfg, progress=progress, log=typer.echo, status=lambda s: typer.echo(s, err=True))
    if path is not None:
        typer.echo(f"report: {path}")
