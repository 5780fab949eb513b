"""``vfbench train`` and ``vfbench pretrain base``: thin commands over vfbench.training / vfbench.runs.

Settings resolve as defaults < ``--config`` file < CLI flags. The config file may hold the
sections ``generator:`` (fields of the generator's config, over the ``--preset``), ``train:``
(``TrainConfig``), ``dataset:`` (``name``, ``frames``, ``size``, ``data_root``, ``stride``,
``split``, ``seed`` and dataset options) and the key ``preset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import typer

from vfbench.cli import app
from vfbench.errors import UsageError, WeightsError

pretrain_app = typer.Typer(help="Pretrain components that runs reuse (VideoFusion's base generator).\n\n"
                                "Example: vfbench pretrain base --dataset shapes --preset small --steps 2000",
                           no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")

_FILE_KEYS = {"preset", "generator", "train", "dataset"}
_DATASET_DEFAULTS = {"name": "shapes", "split": "train", "frames": 16, "size": 64, "data_root": None,
                     "stride": None, "seed": 0}


@dataclass
class Setup:
    """Everything a training command resolved from defaults, the config file and the flags."""

    generator_name: str
    generator_cls: Any
    generator_config: Any
    dataset_kwargs: Dict[str, Any]
    dataset: Any
    train_cfg: Any
    preset: str


def _resolve(generator: str, config: Optional[Path], preset: Optional[str], dataset_over: Dict[str, Any],
             train_over: Dict[str, Any], gen_over: Dict[str, Any], class_cond: bool, recipe: str = "default") -> Setup:
    from vfbench.config import from_dict, load_config_file, merge, to_dict
    from vfbench.data import build_dataset
    from vfbench.registry import DATASETS, GENERATORS
    from vfbench.training import TrainConfig

    from vfbench.recipes import recipe_overrides

    GENERATORS.check(generator)  # did-you-mean before anything heavy
    recipe_over = recipe_overrides(generator, recipe)
    file = load_config_file(config) if config is not None else {}
    unknown = sorted(set(file) - _FILE_KEYS)
    if unknown:
        raise UsageError(f"config file {config} has unknown top-level key(s) {', '.join(unknown)};"
                         f" allowed: {', '.join(sorted(_FILE_KEYS))}")
    for section in ("generator", "train", "dataset"):
        if not isinstance(file.get(section, {}), dict):
            raise UsageError(f"config file {config}: '{section}' must be a mapping of keys to values")
    where = str(config) if config else "config"

    ds_kwargs = merge(merge(_DATASET_DEFAULTS, file.get("dataset", {})), dataset_over)
    DATASETS.check(ds_kwargs["name"])
    if ds_kwargs.get("data_root") is not None:
        ds_kwargs["data_root"] = str(ds_kwargs["data_root"])
    train_cfg = from_dict(TrainConfig, merge(merge(to_dict(TrainConfig()), file.get("train", {})), train_over),
                          where=f"{where} train")
    preset = preset or file.get("preset") or "small"

    cls = GENERATORS.get(generator)
    from vfbench.options import check_device, check_frames

    check_frames(ds_kwargs["frames"], cls, "--frames (dataset.frames)")
    check_device(train_cfg.device, "--device (train.device)")  # before any run folder exists
    fields = set(getattr(cls.Config, "__dataclass_fields__", {}))
    for key, flag in (("lam", "--lam"), ("mode", "--mode"), ("residual_condition", "--residual-condition"),
                      ("residual_temporal", "--residual-temporal" if gen_over.get("residual_temporal") else "--residual-per-frame"),
                      ("prediction", "--prediction"), ("base_prediction", "--base-prediction"),
                      ("residual_init", "--residual-init")):
        if gen_over.get(key) is not None and key not in fields:
            raise UsageError(f"{flag} does not apply to generator {generator!r} (it has no {key!r} setting); drop {flag}")
    ds_opts = {k: v for k, v in ds_kwargs.items() if k != "name"}
    dataset = build_dataset(ds_kwargs["name"], **ds_opts)
    num_classes = 0
    if class_cond:
        num_classes = int(getattr(dataset, "num_classes", 0))
        if num_classes <= 0:
            raise UsageError(f"--class-cond needs a labelled dataset, but {ds_kwargs['name']!r} has no class labels")
    base_cfg = cls.config_for(preset, int(ds_kwargs["frames"]), int(ds_kwargs["size"]), num_classes=num_classes)
    gen_cfg = from_dict(cls.Config, merge(merge(merge(to_dict(base_cfg), recipe_over), file.get("generator", {})),
                                          gen_over), where=f"{where} generator")
    describe = dataset.describe() if hasattr(dataset, "describe") else {}
    return Setup(generator, cls, gen_cfg, dict(ds_kwargs, describe=describe), dataset, train_cfg, preset)


def _on_main_then_all(device: str, make):
    """Run ``make()`` on rank 0 only under torchrun (creating a run folder is not idempotent across
    racing processes), then let the other ranks call it once rank 0 is done (it then just reopens)."""
    import torch

    from vfbench.distributed import barrier, dist_info, init_distributed

    if not dist_info().enabled:
        return make()
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    info = init_distributed(torch.device("cuda" if wants_cuda else "cpu"))
    out = make() if info.is_main else None
    barrier(info)
    return out if info.is_main else make()


def info_rank() -> int:
    from vfbench.distributed import dist_info

    return dist_info().rank


def _train_overrides(**kw) -> Dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _report(summary: Dict[str, Any]) -> None:
    sps = summary.get("steps_per_s")
    loss = summary.get("final_loss")
    typer.echo(f"trained to step {summary['steps']}"
               + (f" ({summary['steps_this_call']} steps at {sps:.3g} steps/s)" if sps else " (nothing left to do)")
               + (f", loss {loss:.4g}" if loss is not None else ""), err=True)


def _refuse_existing_run(results, name, default_name, dataset, config, resume: bool, force: bool,
                         folder: str = "runs") -> None:
    """The run-exists refusal, before the dataset is scanned (minutes on a real dataset): the same
    sentence ``create_run`` / ``prepare_run_dir`` give later, for the common case of a plain rerun.
    ``default_name`` maps the dataset name to the name used without --name; ``folder`` is where such
    folders live under the results directory (runs/, or pretrained/ for a pretrained base)."""
    if resume or force:
        return
    from vfbench.results import ResultsStore, check_run_name
    from vfbench.runs import has_progress

    if dataset is None and config is not None:
        from vfbench.config import load_config_file

        section = load_config_file(config).get("dataset")
        dataset = section.get("name") if isinstance(section, dict) else None
    run_name = check_run_name(name or default_name(dataset or _DATASET_DEFAULTS["name"]))
    run_dir = ResultsStore.open(results).root / folder / run_name
    if (run_dir / "config.json").is_file() and has_progress(run_dir):
        raise UsageError(f"run {run_name!r} exists already at {run_dir}; pass --resume to continue it,"
                         " --force to delete it and start over, or choose another --name")


@app.command("train")
def train_cmd(
    generator: str = typer.Argument(..., help="Generator name (see `vfbench ls generators`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name", show_default='shapes'),
    preset: Optional[str] = typer.Option(None, "--preset", show_default='small', help="Model size: tiny, small (default) or paper."),
    steps: Optional[int] = typer.Option(None, "--steps", show_default='1000', help="Total optimisation steps (a resumed run counts its done steps)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", show_default='8', help="Clips per step (per process under torchrun)."),
    lr: Optional[float] = typer.Option(None, "--lr", show_default='0.0001', help="Learning rate (groups may scale it, e.g. VideoFusion's base)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", show_default='constant', help="constant, or cosine (half-cosine decay to 0 at --steps)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", show_default='0', help="Linear learning-rate warm-up over the first N steps."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", show_default='0.0', help="AdamW weight decay."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", show_default='0.999', help="EMA decay of the sampling weights."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", show_default='1.0', help="Max gradient norm (0: off)."),
    precision: Optional[str] = typer.Option(None, "--precision", show_default='fp32', help="fp32, bf16 (autocast on GPU or CPU; fast on CPUs with AMX-BF16 or AVX512-BF16), fp16 (GPU only) or auto (bf16 where it is native, else fp32)."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", show_default='500', help="Checkpoint interval in steps."),
    log_every: Optional[int] = typer.Option(None, "--log-every", show_default='10', help="log.csv interval in steps."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", show_default='0', help="DataLoader worker processes."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip", show_default='16'),
    size: Optional[int] = typer.Option(None, "--size", help="Frame height and width", show_default='64'),
    data_root: Optional[Path] = typer.Option(None, "--data-root", show_default='none (built-in dataset)', help="Folder of a real dataset."),
    class_cond: bool = typer.Option(False, "--class-cond", help="Condition on the dataset's class labels."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name", show_default='GENERATOR-DATASET'),
    results: Optional[Path] = typer.Option(None, "--results", help="Results directory", show_default='./vfbench-results or VFBENCH_HOME'),
    config: Optional[Path] = typer.Option(None, "--config", show_default='none', help="YAML/TOML/JSON with generator:, train:, dataset: sections."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its newest complete checkpoint."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run of this name and start over."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default='0', help="Seed of the initialisation, data order and noise."),
    device: Optional[str] = typer.Option(None, "--device", show_default='auto', help="auto, cpu, cuda or cuda:N."),
    lam: Optional[float] = typer.Option(None, "--lam", show_default="the preset's", help="VideoFusion: share of base noise in non-key frames, in [0, 1]."),
    mode: Optional[str] = typer.Option(None, "--mode", show_default='stopgrad', help="VideoFusion: stopgrad, no-stopgrad or fixed."),
    pretrain_base_steps: Optional[int] = typer.Option(None, "--pretrain-base-steps", show_default='none', help="VideoFusion: first pretrain the base generator alone for N steps (VIDM: its content generator)."),
    base_init: Optional[str] = typer.Option(None, "--base-init", show_default='none', help="Start from a pretrained image DPM (file, folder or name): VideoFusion's base generator, VDM's spatial layers (a VideoFusion base), VIDM's content generator (a VIDM one)."),
    recipe: str = typer.Option("default", "--recipe", help="default (learns best: x0-prediction; VideoFusion's residual generator sees the keyframe and attends across frames; VIDM trained with MSE) or paper (eps-prediction, per-frame residual generator without conditioning, VIDM's Charbonnier penalty)."),
    prediction: Optional[str] = typer.Option(None, "--prediction", show_default="the recipe's", help="What the nets predict: x0, v or eps (overrides the recipe)."),
    base_prediction: Optional[str] = typer.Option(None, "--base-prediction", show_default="as --prediction", help="VideoFusion: what the base generator (the image DPM) predicts, when it differs from the residual generator: x0, v or eps."),
    residual_init: Optional[str] = typer.Option(None, "--residual-init", show_default="random", help="VideoFusion: random (the paper) or base: start the residual generator from the pretrained image DPM of --base-init / --pretrain-base-steps (at the base's widths)."),
    residual_condition: Optional[str] = typer.Option(None, "--residual-condition", show_default="the recipe's", help="VideoFusion: keyframe_x0, keyframe_latent or none (overrides the recipe)."),
    residual_temporal: Optional[bool] = typer.Option(None, "--residual-temporal/--residual-per-frame", show_default="the recipe's", help="VideoFusion: residual generator with temporal attention across frames (default recipe) or the paper's per-frame 2D net."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log loss terms, learning rates, EMA decay and sample previews for TensorBoard (RUN/tensorboard; needs the tensorboard package)."),
    preview_every: Optional[int] = typer.Option(None, "--preview-every", show_default="--ckpt-every", help="With --tensorboard: sample a preview filmstrip every N steps (0: none)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Train a generator on a dataset; checkpoints, log.csv and summary.json go to the run folder.

    Example: vfbench train videofusion --dataset shapes --preset tiny --frames 8 --size 32 --steps 200
    """
    from vfbench.results import ResultsStore
    from vfbench.runs import create_run, read_base_state
    from vfbench.training import pretrain_base, train

    if resume and force:
        raise UsageError("--resume and --force contradict each other; pass one of them")
    if preview_every is not None and preview_every < 0:
        raise UsageError(f"--preview-every must be 0 (no previews) or a positive number of steps, got {preview_every}")
    if tensorboard:
        from vfbench.tensorboard_log import TensorBoardLog  # noqa: F401  (a missing package fails here, before any work)

        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard"
                             " (or the extra: pip install -e \".[tensorboard]\")")
    if pretrain_base_steps is not None and base_init is not None:
        raise UsageError("pass either --pretrain-base-steps or --base-init, not both")
    if pretrain_base_steps is not None:
        from vfbench.errors import check_positive

        check_positive("--pretrain-base-steps", pretrain_base_steps)
    if mode is not None and mode not in ("stopgrad", "no-stopgrad", "fixed"):
        from vfbench.errors import did_you_mean

        raise UsageError(did_you_mean("--mode", mode, ["stopgrad", "no-stopgrad", "fixed"]))
    _refuse_existing_run(results, name, lambda ds: f"{generator}-{ds}", dataset, config, resume, force)
    setup = _resolve(
        generator, config, preset,
        _train_overrides(name=dataset, frames=frames, size=size, data_root=data_root),
        _train_overrides(steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, warmup_steps=warmup_steps,
                         weight_decay=weight_decay, ema_decay=ema_decay,
                         grad_clip=grad_clip, precision=precision, ckpt_every=ckpt_every, log_every=log_every,
                         num_workers=num_workers, seed=seed, device=device),
        _train_overrides(lam=lam, mode=mode, prediction=prediction, base_prediction=base_prediction,
                         residual_init=residual_init, residual_condition=residual_condition,
                         residual_temporal=residual_temporal), class_cond,
        recipe)
    store = ResultsStore.open(results)
    run_name = name or f"{generator}-{setup.dataset_kwargs['name']}"
    extra: Dict[str, Any] = {"preset": setup.preset, "class_cond": class_cond, "recipe": recipe}
    from vfbench.runs import build_generator

    if getattr(setup.generator_config, "residual_init", "random") == "base" and base_init is None \
            and pretrain_base_steps is None and not resume:
        raise UsageError("residual_init 'base' starts the residual generator from a pretrained image DPM, but none is "
                         "given; pass --base-init NAME (a `vfbench pretrain base` result) or --pretrain-base-steps N, "
                         "or use --residual-init random")
    # built (and given its --base-init weights) before the run folder exists: a failure here leaves nothing behind
    gen = build_generator(generator, setup.generator_config, seed=setup.train_cfg.seed)
    if base_init is not None:
        if not hasattr(gen, "load_base_state"):
            raise UsageError(f"--base-init applies to videofusion, vdm and vidm; {generator!r} has no image DPM to start from")
        base_state, extra["base_init"] = read_base_state(base_init, store, base_module=gen.base, generator=gen)
        try:
            gen.load_base_state(base_state)
        except WeightsError as exc:  # the generator's message does not know which file it was
            raise WeightsError(f"--base-init {extra['base_init']['source']}: {exc}") from None
    if pretrain_base_steps is not None:
        from vfbench.training import check_pretrainable

        check_pretrainable(gen)  # before the run folder exists
        extra["pretrain_base_steps"] = pretrain_base_steps
    from vfbench.training import check_not_training

    check_not_training(store.run_dir(run_name))  # before config.json is rewritten or --force deletes anything
    run_dir = _on_main_then_all(setup.train_cfg.device, lambda: create_run(
        store, run_name, generator, setup.generator_config, setup.dataset_kwargs, setup.train_cfg,
        resume=resume or (info_rank() > 0), force=force and info_rank() == 0, extra=extra))
    from vfbench.runs import adopt_recorded_sampling

    adopt_recorded_sampling(gen, run_dir)  # a resumed run keeps the sampler it recorded
    if info_rank() == 0:
        typer.echo(f"run folder: {run_dir}", err=True)

    if pretrain_base_steps is not None:
        from dataclasses import replace

        pre_cfg = replace(setup.train_cfg, steps=pretrain_base_steps,
                          ckpt_every=min(setup.train_cfg.ckpt_every, pretrain_base_steps))
        artefact = pretrain_base(run_dir / "pretrain", gen, setup.dataset, pre_cfg, resume=resume,
                                 progress=progress, dataset_info=setup.dataset_kwargs,
                                 artefact=run_dir / "base-pretrain.pt")
        typer.echo(f"pretrained base: {artefact}", err=True)
    if tensorboard and info_rank() == 0:
        typer.echo(f"tensorboard: tensorboard --logdir {run_dir / 'tensorboard'}", err=True)
    summary = train(run_dir, gen, setup.dataset, setup.train_cfg, resume=resume, progress=progress,
                    tensorboard=tensorboard, preview_every=preview_every)
    if info_rank() == 0:  # one report per job under torchrun
        _report(summary)
        typer.echo(str(run_dir))


@pretrain_app.command("base")
def pretrain_base_cmd(
    generator: str = typer.Option("videofusion", "--generator", help="Whose image DPM: videofusion (its base generator, also what --base-init gives VDM) or vidm (its content generator)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset whose frames are the images", show_default='shapes'),
    preset: Optional[str] = typer.Option(None, "--preset", show_default='small', help="Model size: tiny, small (default) or paper."),
    steps: Optional[int] = typer.Option(None, "--steps", show_default='1000', help="Pretraining steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", show_default='8', help="Clips per step (one random frame each)."),
    lr: Optional[float] = typer.Option(None, "--lr", show_default='0.0001', help="Learning rate of the base generator."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", show_default='0.999', help="EMA decay of the saved base weights."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip of the joint model", show_default='16'),
    size: Optional[int] = typer.Option(None, "--size", help="Frame height and width", show_default='64'),
    data_root: Optional[Path] = typer.Option(None, "--data-root", show_default='none (built-in dataset)', help="Folder of a real dataset."),
    class_cond: bool = typer.Option(False, "--class-cond", help="Class-conditional base (labelled datasets)."),
    prediction: Optional[str] = typer.Option(None, "--prediction", show_default="x0", help="What the image DPM predicts: x0, v or eps; the joint model that loads it (--base-init) must predict the same."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the artefact", show_default='GENERATOR-base-DATASET'),
    results: Optional[Path] = typer.Option(None, "--results", help="Results directory", show_default='./vfbench-results or VFBENCH_HOME'),
    config: Optional[Path] = typer.Option(None, "--config", show_default='none', help="YAML/TOML/JSON with generator:, train:, dataset: sections."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted pretraining."),
    force: bool = typer.Option(False, "--force", help="Delete an existing artefact of this name and start over."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default='0', help="Seed of the initialisation, data order and noise."),
    device: Optional[str] = typer.Option(None, "--device", show_default='auto', help="auto, cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, "--precision", show_default='fp32', help="fp32, bf16 (autocast on GPU or CPU; fast on CPUs with AMX-BF16 or AVX512-BF16), fp16 (GPU only) or auto (bf16 where it is native, else fp32)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Pretrain VideoFusion's base generator as an image DPM on single frames (paper Sec. 3.3), or
    with --generator vidm VIDM's content generator.

    Writes pretrained/NAME/base-pretrain.pt under the results folder; reuse it in any number of
    runs with `vfbench train videofusion --base-init NAME` (or `train vdm`, or `train vidm` for a VIDM one).

    Example: vfbench pretrain base --dataset shapes --preset small --steps 2000 --name shapes-base
    """
    from vfbench.results import ResultsStore, check_run_name
    from vfbench.runs import adopt_recorded_sampling, build_generator, prepare_run_dir
    from vfbench.training import pretrain_base

    if resume and force:
        raise UsageError("--resume and --force contradict each other; pass one of them")
    _refuse_existing_run(results, name, lambda ds: f"{generator}-base-{ds}", dataset, config, resume, force,
                         folder="pretrained")
    setup = _resolve(
        generator, config, preset,
        _train_overrides(name=dataset, frames=frames, size=size, data_root=data_root),
        _train_overrides(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed, device=device,
                         precision=precision),
        _train_overrides(prediction=prediction), class_cond)
    store = ResultsStore.open(results)
    art_name = check_run_name(name or f"{generator}-base-{setup.dataset_kwargs['name']}")
    from vfbench.training import check_not_training

    check_not_training(store.root / "pretrained" / art_name)
    out_dir = _on_main_then_all(setup.train_cfg.device, lambda: prepare_run_dir(
        store.root / "pretrained" / art_name, generator, setup.generator_config, setup.dataset_kwargs,
        setup.train_cfg, resume=resume or (info_rank() > 0), force=force and info_rank() == 0,
        extra={"kind": "base-pretrain", "preset": setup.preset, "class_cond": class_cond}))
    gen = build_generator(generator, setup.generator_config, seed=setup.train_cfg.seed)
    adopt_recorded_sampling(gen, out_dir)  # a resumed pretraining keeps the sampler it recorded
    artefact = pretrain_base(out_dir, gen, setup.dataset, setup.train_cfg, resume=resume, progress=progress,
                             dataset_info=setup.dataset_kwargs)
    if info_rank() == 0:
        typer.echo(str(artefact))
