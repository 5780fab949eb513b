"""``vfbench ablate lambda|pretrain|stopgrad|vidm`` and ``vfbench compare`` (library: ``vfbench.ablation``)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import typer

from vfbench.cli import app

ablate_app = typer.Typer(help="Reproduce the papers' ablation tables on a chosen dataset.", no_args_is_help=True)
app.add_typer(ablate_app, name="ablate")


# Options shared by every command here (None = not given: the config file or the default decides).
DATASET = typer.Option(None, "--dataset", help="dataset to train and score on", show_default='shapes')
DATA_ROOT = typer.Option(None, "--data-root", show_default='none (built-in dataset)', help="folder of a real dataset")
PROTOCOL = typer.Option(None, "--protocol", show_default='mini', help="mini (CPU scale, default) or paper")
STEPS = typer.Option(None, "--steps", help="training steps of every run", show_default='300')
PRESET = typer.Option(None, "--preset", show_default='small', help="model size: tiny, small (default) or paper")
SEEDS = typer.Option(None, "--seeds", show_default='1', help="repeat each variant with K seeds (mean ± std)")
NUM_SAMPLES = typer.Option(None, "--num-samples", help="generated clips per run", show_default="the protocol's")
FRAMES = typer.Option(None, "--frames", help="clip length", show_default='16')
SIZE = typer.Option(None, "--size", help="frame size in pixels", show_default='64')
BATCH_SIZE = typer.Option(None, "--batch-size", help="training batch size", show_default="the trainer's")
LR = typer.Option(None, "--lr", help="learning rate", show_default="the trainer's 1e-4")
SAMPLE_BATCH = typer.Option(None, "--sample-batch", help="clips per sampling batch", show_default='16')
PREFIX = typer.Option(None, "--prefix", help="run-name prefix", show_default='ablate-<name> / compare')
RESULTS = typer.Option(None, "--results", help="results directory", show_default='$VFBENCH_HOME or ./vfbench-results')
CONFIG = typer.Option(None, "--config", show_default='none', help="YAML/TOML/JSON file with any of these options")
SAMPLING_STEPS = typer.Option(None, "--sampling-steps", show_default="each run's sampling_steps",
                              help="Sampling steps of each generator's own sampler (a sample set of its own: tag -ss<N>)")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="show progress bars")
PRETRAIN_STEPS = typer.Option(None, "--pretrain-steps", help="image-DPM pretraining steps of VideoFusion's base (one shared artefact)", show_default='= --steps')


def _run(spec_name: str, common: Dict[str, Any], extra: Optional[Dict[str, Any]] = None,
         spec_kwargs: Optional[Dict[str, Any]] = None) -> None:
    from vfbench.ablation import AblateConfig, run_table
    from vfbench.config import resolve
    from vfbench.results import ResultsStore

    c = dict(common)
    results, config, progress = c.pop("results"), c.pop("config"), c.pop("progress")
    cfg = resolve(AblateConfig, config, {**c, **(extra or {})})
    opts, ev = cfg.split()
    kwargs = dict(spec_kwargs or {})
    if spec_name == "lambda" and cfg.values is not None:
        kwargs["values"] = [float(v) for v in cfg.values]
    if spec_name == "compare":
        kwargs["dataset"] = opts.dataset
    store = ResultsStore.open(results)
    table, paths = run_table(store, spec_name, opts, ev, spec_kwargs=kwargs, progress=progress,
                             log=lambda s: typer.echo(s, err=True))
    typer.echo(table.to_markdown())
    typer.echo(f"table: {paths['md']}\n       {paths['csv']}")


def _values(text: Optional[str]):
    if text is None:
        return None
    from vfbench.errors import UsageError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--values must be comma-separated numbers such as 0.1,0.25,0.5,0.75, got {text!r}") from None


@ablate_app.command("lambda")
def lambda_cmd(
    values: Optional[str] = typer.Option(None, "--values", help="comma-separated lambdas", show_default='0.10,0.25,0.50,0.75'),
    pretrain_steps: Optional[int] = PRETRAIN_STEPS,
    dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT, protocol: Optional[str] = PROTOCOL,
    steps: Optional[int] = STEPS, preset: Optional[str] = PRESET, seeds: Optional[int] = SEEDS,
    num_samples: Optional[int] = NUM_SAMPLES, frames: Optional[int] = FRAMES, size: Optional[int] = SIZE,
    batch_size: Optional[int] = BATCH_SIZE, sample_batch: Optional[int] = SAMPLE_BATCH, lr: Optional[float] = LR,
    sampling_steps: Optional[int] = SAMPLING_STEPS,
    prefix: Optional[str] = PREFIX, results: Optional[str] = RESULTS, config: Optional[str] = CONFIG,
    progress: bool = PROGRESS,
):
    """Table 5: VideoFusion trained with each lambda (share of the shared base noise).

    Example: vfbench ablate lambda --values 0.1,0.5,0.9 --steps 300 --seeds 2
    """
    common = {k: v for k, v in locals().items() if k != "values"}
    _run("lambda", common, {"values": _values(values)})


@ablate_app.command("pretrain")
def pretrain_cmd(
    pretrain_steps: Optional[int] = PRETRAIN_STEPS,
    dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT, protocol: Optional[str] = PROTOCOL,
    steps: Optional[int] = STEPS, preset: Optional[str] = PRESET, seeds: Optional[int] = SEEDS,
    num_samples: Optional[int] = NUM_SAMPLES, frames: Optional[int] = FRAMES, size: Optional[int] = SIZE,
    batch_size: Optional[int] = BATCH_SIZE, sample_batch: Optional[int] = SAMPLE_BATCH, lr: Optional[float] = LR,
    sampling_steps: Optional[int] = SAMPLING_STEPS,
    prefix: Optional[str] = PREFIX, results: Optional[str] = RESULTS, config: Optional[str] = CONFIG,
    progress: bool = PROGRESS,
):
    """Table 6: VDM, VideoFusion w/o and w/ a pretrained base, at equal joint-training steps.

    Example: vfbench ablate pretrain --steps 300 --pretrain-steps 300
    """
    common = {k: v for k, v in locals().items() if k != "pretrain_steps"}
    _run("pretrain", common, {"pretrain_steps": pretrain_steps})


@ablate_app.command("stopgrad")
def stopgrad_cmd(
    pretrain_steps: Optional[int] = PRETRAIN_STEPS,
    dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT, protocol: Optional[str] = PROTOCOL,
    steps: Optional[int] = STEPS, preset: Optional[str] = PRESET, seeds: Optional[int] = SEEDS,
    num_samples: Optional[int] = NUM_SAMPLES, frames: Optional[int] = FRAMES, size: Optional[int] = SIZE,
    batch_size: Optional[int] = BATCH_SIZE, sample_batch: Optional[int] = SAMPLE_BATCH, lr: Optional[float] = LR,
    sampling_steps: Optional[int] = SAMPLING_STEPS,
    prefix: Optional[str] = PREFIX, results: Optional[str] = RESULTS, config: Optional[str] = CONFIG,
    progress: bool = PROGRESS,
):
    """Table 7: fixed base / joint training w/o / w stop-gradient, all from one pretrained base.

    Example: vfbench ablate stopgrad --steps 300 --seeds 2
    """
    common = {k: v for k, v in locals().items() if k != "pretrain_steps"}
    _run("stopgrad", common, {"pretrain_steps": pretrain_steps})


@ablate_app.command("vidm")
def vidm_cmd(
    dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT, protocol: Optional[str] = PROTOCOL,
    steps: Optional[int] = STEPS, preset: Optional[str] = PRESET, seeds: Optional[int] = SEEDS,
    num_samples: Optional[int] = NUM_SAMPLES, frames: Optional[int] = FRAMES, size: Optional[int] = SIZE,
    batch_size: Optional[int] = BATCH_SIZE, sample_batch: Optional[int] = SAMPLE_BATCH, lr: Optional[float] = LR,
    sampling_steps: Optional[int] = SAMPLING_STEPS,
    prefix: Optional[str] = PREFIX, results: Optional[str] = RESULTS, config: Optional[str] = CONFIG,
    progress: bool = PROGRESS,
):
    """VIDM Table 3: switch off truncation, robustness penalty, PosGN or the implicit motion condition.

    Example: vfbench ablate vidm --steps 300
    """
    _run("vidm", dict(locals()))


@app.command("compare")
def compare_cmd(
    pretrain_steps: Optional[int] = PRETRAIN_STEPS,
    dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT, protocol: Optional[str] = PROTOCOL,
    steps: Optional[int] = STEPS, preset: Optional[str] = PRESET, seeds: Optional[int] = SEEDS,
    num_samples: Optional[int] = NUM_SAMPLES, frames: Optional[int] = FRAMES, size: Optional[int] = SIZE,
    batch_size: Optional[int] = BATCH_SIZE, sample_batch: Optional[int] = SAMPLE_BATCH, lr: Optional[float] = LR,
    sampling_steps: Optional[int] = SAMPLING_STEPS,
    prefix: Optional[str] = PREFIX, results: Optional[str] = RESULTS, config: Optional[str] = CONFIG,
    progress: bool = PROGRESS,
):
    """VideoFusion vs VDM vs VIDM on one dataset at equal training steps (Tables 1-3 style).

    Example: vfbench compare --dataset shapes --steps 300 --seeds 2
    """
    _run("compare", dict(locals()))
