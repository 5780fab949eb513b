"""Run directories: create one (refusing to clobber a different run) and load a trained generator.

``runs/<name>/config.json`` records everything needed to rebuild the model and redo the run::

    {"generator": "videofusion", "generator_config": {...}, "dataset": {...}, "train": {...},
     "extra": {...}, "provenance": {...}}

``load_run`` rebuilds the generator from that file through the registry and loads the EMA (or
raw) weights of a checkpoint with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from vfbench.atomic import atomic_write_json
from vfbench.checkpoint import checkpoint_name, derive_seed, find_latest, load_checkpoint
from vfbench.config import to_dict
from vfbench.errors import UsageError, VfbenchError, WeightsError
from vfbench.provenance import provenance
from vfbench.readback import read_json_object
from vfbench.torch_files import checkpoint_limit, load_torch_file, module_state_bytes, weights_limit
from vfbench.results import ResultsStore

# Train settings a resumed run may change (they do not alter the data order or the noise).
RESUMABLE_TRAIN_KEYS = {"steps", "lr", "grad_clip", "ckpt_every", "log_every", "num_workers", "device",
                        "keep_checkpoints", "precision"}
# Generator settings used only when sampling. A resumed run keeps the values it recorded, so that a change of
# vfbench's default sampler (DDIM-50 -> DPM-Solver++(2M) 10 steps) neither blocks the resume of a run trained
# before it nor changes how that run's samples are drawn; `--control sampler=... --sampling-steps N` overrides.
RUN_SAMPLING_KEYS = ("sampler", "sampling_steps")


def build_generator(name: str, config: Any, seed: Optional[int] = None):
    """Instantiate registered generator ``name`` from a config dataclass or dict.

    With ``seed``, the parameter initialisation is drawn from ``(seed, "init")`` inside a forked
    RNG, so the same config and seed always give the same initial weights.
    """
    from vfbench.registry import GENERATORS

    cls = GENERATORS.get(name)
    cfg_dict = to_dict(config) if not isinstance(config, dict) else dict(config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(derive_seed(seed, "init"))
        return cls.from_config_dict(cfg_dict)


def legacy_filled(generator_name: Any, generator_config: Any) -> Any:
    """``generator_config`` as saved by an older version, with the fields it predates filled in by their legacy
    values (``Generator.with_legacy_defaults``): a field added since does not make an old run "different"."""
    from vfbench.registry import GENERATORS

    if not isinstance(generator_config, dict) or not isinstance(generator_name, str):
        return generator_config
    try:
        cls = GENERATORS.get(generator_name)
    except VfbenchError:
        return generator_config
    fill = getattr(cls, "with_legacy_defaults", None)
    return fill(generator_config) if fill is not None else generator_config


def _diff(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> list:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def create_run(store: ResultsStore, name: str, generator_name: str, generator_config: Any,
               dataset_kwargs: Dict[str, Any], train_cfg: Any, *, resume: bool = False, force: bool = False,
               extra: Optional[Dict[str, Any]] = None) -> Path:
    """Create (or reopen for ``resume``) ``runs/<name>`` and write its ``config.json``.

    An existing run is never silently reused: the same command without ``--resume`` is refused
    (it would overwrite the checkpoints), a different configuration is refused even with
    ``--resume`` (except the train settings in ``RESUMABLE_TRAIN_KEYS``), and ``--force``
    deletes the old run and starts over.
    """
    return prepare_run_dir(store.run_dir(name), generator_name, generator_config, dataset_kwargs, train_cfg,
                           resume=resume, force=force, extra=extra)


# What a run folder holds once training has done anything: a start that failed before its first
# checkpoint (a bad device, an unreadable dataset, a refused --base-init) leaves none of these, and the
# plain retry then starts the run afresh instead of being told the run exists.
_PROGRESS = ("checkpoints/step-*.pt", "pretrain/checkpoints/step-*.pt", "base-pretrain.pt", "samples/*",
             "summary.json")


def has_progress(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return any(next(run_dir.glob(pattern), None) is not None for pattern in _PROGRESS)


def prepare_run_dir(run_dir: Path, generator_name: str, generator_config: Any, dataset_kwargs: Dict[str, Any],
                    train_cfg: Any, *, resume: bool = False, force: bool = False,
                    extra: Optional[Dict[str, Any]] = None) -> Path:
    """``create_run`` for any folder (e.g. a pretrained base under ``pretrained/<name>``)."""
    run_dir = Path(run_dir)
    name = run_dir.name
    new = {"generator": generator_name, "generator_config": to_dict(generator_config),
           "dataset": dict(dataset_kwargs), "train": to_dict(train_cfg), "extra": dict(extra or {})}
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    elif cfg_path.is_file() and not has_progress(run_dir):
        # a start that failed before its first checkpoint: nothing to keep, the retry starts afresh
        from vfbench.readback import json_object_or_none

        old = json_object_or_none(cfg_path, warn=False) or {}
        if not _diff({k: old.get(k) for k in new}, new):
            return run_dir  # the same settings (e.g. the other ranks of a torchrun job): nothing to rewrite
    elif cfg_path.is_file():
        old = read_json_object(cfg_path, "run config", "restore it, or pass --force to delete the run and start over")
        old["generator_config"] = legacy_filled(old.get("generator"), old.get("generator_config"))
        old_gen = old.get("generator_config")
        if resume and isinstance(old_gen, dict) and isinstance(new["generator_config"], dict):
            for key in RUN_SAMPLING_KEYS:
                if key in old_gen and key in new["generator_config"]:
                    new["generator_config"][key] = old_gen[key]
        old_core = {k: old.get(k) for k in new}
        changed = _diff(old_core, new)
        if not resume:
            what = f"with a different configuration ({', '.join(changed[:6])})" if changed else "already"
            raise UsageError(f"run {name!r} exists {what} at {run_dir}; pass --resume to continue it,"
                             " --force to delete it and start over, or choose another --name")
        blocking = [k for k in changed if not (k.startswith("train.") and k[6:] in RESUMABLE_TRAIN_KEYS)]
        if blocking:
            raise UsageError(f"cannot resume run {name!r}: its configuration differs in {', '.join(blocking[:6])};"
                             " use the original settings, --force to start over, or another --name")
        if not changed:
            return run_dir
        new["provenance"] = old.get("provenance", {})
        new["resumed_provenance"] = provenance()
        atomic_write_json(cfg_path, new)
        return run_dir
    elif run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise UsageError(f"{run_dir} exists but has no config.json; pass --force to delete it or choose another --name")
    new["provenance"] = provenance()
    atomic_write_json(cfg_path, new)
    return run_dir


def adopt_recorded_sampling(gen: Any, run_dir: Path | str) -> None:
    """Give ``gen`` the sampling settings (``RUN_SAMPLING_KEYS``) its run folder's config.json records.

    Called after ``create_run(..., resume=True)``, which keeps a resumed run's recorded sampling settings:
    the generator being trained must carry the same ones, or its checkpoints would not match the run's
    config (``load_run`` and the trainer's resume both compare them)."""
    import dataclasses

    recorded = read_json_object(Path(run_dir) / "config.json", "run config").get("generator_config")
    config = getattr(gen, "config", None)
    if not isinstance(recorded, dict) or not dataclasses.is_dataclass(config):
        return
    changes = {k: recorded[k] for k in RUN_SAMPLING_KEYS
               if k in recorded and hasattr(config, k) and getattr(config, k) != recorded[k]}
    if changes:
        gen.config = dataclasses.replace(config, **changes)


def run_dataset(ds: Dict[str, Any], split: Optional[str] = None):
    """The dataset a run's config.json ``dataset`` section names (its split unless ``split`` is given)."""
    from vfbench.data import build_dataset

    kw = {k: ds[k] for k in ("frames", "size", "data_root", "stride", "seed") if ds.get(k) is not None}
    return build_dataset(str(ds["name"]), split=split or str(ds.get("split") or "train"), **kw)


def read_run_config(run_dir: Path) -> Dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a vfbench run (no config.json); pass a folder under runs/ of the results directory")
    cfg = read_json_object(path, "run config", "restore it or train the run again")
    for key, kind in (("generator", str), ("generator_config", dict)):
        if not isinstance(cfg.get(key), kind):
            raise VfbenchError(f"{path} lacks {key!r} or holds the wrong type there; the run's config was edited"
                               " or truncated: restore it")
    return cfg


def _resolve_checkpoint(run_dir: Path, checkpoint: Any, max_bytes: Optional[int] = None) -> Tuple[Path, Dict[str, Any]]:
    ckpt_dir = run_dir / "checkpoints"
    if checkpoint is None:
        found = find_latest(ckpt_dir, max_bytes=max_bytes)
        if found is None:
            raise WeightsError(f"run {run_dir} has no complete checkpoint in {ckpt_dir}; train it first"
                               " (vfbench train ... --resume continues an interrupted run)")
        return found
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        path = ckpt_dir / checkpoint_name(int(checkpoint))
    else:
        path = Path(checkpoint)
    return path, load_checkpoint(path, max_bytes=max_bytes)


def load_run(run_dir: Path | str, ema: bool = True, checkpoint: Any = None,
             device: Any = "cpu", memory_format: str = "auto") -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild a run's generator and load its EMA (default) or raw weights, in eval mode.

    ``checkpoint``: None (the newest complete one), a step number, or a path. ``memory_format``:
    ``auto`` (channels-last on a CPU, where denoiser calls take 2-37% less time with it,
    ``benchmarks/channels_last.py``; contiguous elsewhere), ``contiguous`` or ``channels_last``; outputs
    differ only by float rounding. Returns the generator and the run's config with ``checkpoint``,
    ``step``, ``weights`` and ``memory_format`` added.
    """
    from vfbench.nets.memory_format import resolve_memory_format, to_channels_last

    memory_format = resolve_memory_format(memory_format, device)
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    try:  # built first: its size bounds the bytes the checkpoint may declare
        gen = build_generator(cfg["generator"], cfg["generator_config"])
    except VfbenchError:
        gen = None  # the checks below name the cause (a checkpoint of another generator or architecture)
    path, state = _resolve_checkpoint(run_dir, checkpoint, checkpoint_limit(gen) if gen is not None else None)
    if state["generator"] != cfg["generator"]:
        raise WeightsError(f"checkpoint {path} was written by generator {state['generator']!r} but run"
                           f" {run_dir.name} is a {cfg['generator']!r} run; pass a checkpoint of this run")
    saved_cfg = legacy_filled(cfg["generator"], state.get("generator_config"))
    run_cfg = legacy_filled(cfg["generator"], cfg["generator_config"])
    if saved_cfg and saved_cfg != run_cfg:
        diff = _diff(saved_cfg, run_cfg)
        raise WeightsError(f"checkpoint {path} has a different {cfg['generator']} architecture than"
                           f" {run_dir / 'config.json'} (differs in {', '.join(diff[:6])}); pass a checkpoint of this run")
    if gen is None:
        gen = build_generator(cfg["generator"], cfg["generator_config"])
    weights = state["ema"] if ema else state["model"]
    try:
        gen.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(f"checkpoint {path} does not fit generator {cfg['generator']!r} as configured"
                           f" ({' '.join(first[:2])[:300]}); it comes from another architecture or version") from None
    gen.to(device).eval()
    if memory_format == "channels_last":
        to_channels_last(gen)
    info = dict(cfg, checkpoint=str(path), step=int(state["step"]), weights="ema" if ema else "raw",
                run=run_dir.name, run_dir=str(run_dir), memory_format=memory_format)
    return gen, info


# -- pretrained base generators (VideoFusion Sec. 3.3) ----------------------------------------------
BASE_FORMAT = "vfbench-base-v1"
BASE_FILE = "base-pretrain.pt"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


# What a base's outputs mean: weights trained under another parameterisation or noise schedule fit the
# module but compute other numbers (an x0-predicting base read as v-predicting denoises nothing)
BASE_SEMANTICS = ("prediction", "schedule", "num_timesteps")


def check_base_semantics(made_with: Mapping[str, Any], generator: Any, source: str) -> None:
    """Refuse a pretrained base whose recorded ``BASE_SEMANTICS`` differ from ``generator``'s (one WeightsError
    naming the option and both values); ``prediction`` is the image DPM's (VideoFusion's ``base_prediction``
    where set). A file that records no config (a plain state dict) is not checked."""
    name = getattr(generator, "name", type(generator).__name__)
    cfg = getattr(generator, "config", None)
    theirs = {key: made_with.get(key) for key in BASE_SEMANTICS}
    ours = {key: getattr(cfg, key, None) for key in BASE_SEMANTICS}
    # a VideoFusion base may predict otherwise than its residual generator (its base_prediction)
    theirs["prediction"] = made_with.get("base_prediction") or theirs["prediction"]
    ours["prediction"] = getattr(generator, "base_prediction", None) or ours["prediction"]
    for key in BASE_SEMANTICS:
        if theirs[key] is not None and ours[key] is not None and theirs[key] != ours[key]:
            flag = "--" + key.replace("_", "-")
            # VideoFusion can keep its residual generator's parameterisation and give the base the file's
            own = "--base-prediction" if key == "prediction" and hasattr(cfg, "base_prediction") else flag
            raise WeightsError(f"--base-init {source} was trained with {key}={theirs[key]!r} but this {name} uses "
                               f"{key}={ours[key]!r}, so its outputs would mean something else; pretrain a base with "
                               f"{key}={ours[key]!r} (vfbench pretrain base {flag} ...) or train with {own} {theirs[key]}")


def read_base_state(source: Any, store: Optional[ResultsStore] = None,
                    base_module: Optional[torch.nn.Module] = None,
                    generator: Any = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The state dict of a pretrained base U-Net and a description of where it came from.

    ``source``: a ``base-pretrain.pt`` file, a folder holding one (``vfbench pretrain base`` output
    or a run trained with ``--pretrain-base-steps``), a training checkpoint or run folder (its EMA
    ``base.*`` weights), or a name under ``pretrained/`` or ``runs/`` of the results directory.
    ``base_module`` (the base the weights are for) bounds the bytes the file may declare; ``generator`` (the
    one the weights are for) is checked against the config the base was trained with (``check_base_semantics``). A file that
    cannot be loaded is one WeightsError naming it; inside the results directory (a vfbench artefact
    that ``--resume`` rebuilds) it is also moved into ``unreadable/`` beside it, so the retry is not blocked.
    """
    p = Path(str(source))
    if not p.exists() and store is not None:
        for cand in (store.root / "pretrained" / str(source), store.runs_dir / str(source)):
            if cand.exists():
                p = cand
                break
    if p.is_dir():
        if (p / BASE_FILE).is_file():
            p = p / BASE_FILE
        elif (p / "config.json").is_file():
            gen, info = load_run(p, ema=True)
            if not hasattr(gen, "base"):
                raise WeightsError(f"run {p} is a {info['generator']!r} run without a base generator; pass a"
                                   " VideoFusion run or a base-pretrain.pt file to --base-init")
            if generator is not None:
                check_base_semantics(info.get("generator_config") or {}, generator, str(p))
            return gen.base.state_dict(), {"source": str(p), "step": info["step"], "kind": "run"}
    if not p.is_file():
        raise UsageError(f"--base-init {source!r} is neither a file, a folder with {BASE_FILE}, a run folder,"
                         " nor a pretrained base name; create one with vfbench pretrain base --name NAME")
    from vfbench.provenance import sha256_file

    ours = store is not None and _inside(p, store.root) and p.name == BASE_FILE
    if ours and p.parent.parent.name == "pretrained":
        fix = f"rebuild it with `vfbench pretrain base --name {p.parent.name} --resume` (same options as before)"
    elif ours:
        fix = f"rebuild it by rerunning the training of {p.parent.name} with --resume"
    else:
        fix = f"pass a {BASE_FILE} written by vfbench pretrain base, a training checkpoint or a state dict"
    limit = None if base_module is None else checkpoint_limit(base_module) + 4 * module_state_bytes(base_module)
    try:  # the base alone, or a whole training checkpoint holding it: the generator's limit covers both
        obj = load_torch_file(p, what="pretrained base (--base-init)", fix=fix, max_bytes=limit,
                              limit_what="a checkpoint holding this base can hold")
        if isinstance(obj, dict) and obj.get("format") == BASE_FORMAT:
            sd, kind = obj.get("state_dict"), "base-pretrain"
        elif isinstance(obj, dict) and obj.get("format") == "vfbench-checkpoint-v1":
            sd, kind = obj.get("ema"), "checkpoint"
        else:
            sd, kind = obj, "state_dict"
        if not (isinstance(sd, dict) and sd and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in sd.items())):
            raise WeightsError(f"{p} is not a base checkpoint (expected {BASE_FILE}, a training checkpoint or a state"
                               f" dict of tensors); {fix}")
    except WeightsError as exc:
        if ours:  # a vfbench artefact: keep it aside so that the rebuild (--resume) is not blocked by it
            from vfbench.readback import move_aside

            dest = move_aside(p, warn=False)
            raise WeightsError(f"{exc} (the file was moved to {dest})") from None
        raise
    step = obj.get("step") if isinstance(obj, dict) else None
    if generator is not None and kind != "state_dict" and isinstance(obj.get("generator_config"), dict):
        check_base_semantics(obj["generator_config"], generator, str(p))
    desc = dict({"source": str(p), "sha256": sha256_file(p), "kind": kind},
                **({"step": step} if kind != "state_dict" else {}))
    return dict(sd), desc


def read_base_artefact(path: Path, base_module: torch.nn.Module) -> Optional[Dict[str, Any]]:
    """A ``base-pretrain.pt`` that ``pretrain_base(resume=True)`` may reuse, or None: missing, or unreadable
    (then moved into ``unreadable/`` beside it with a warning naming it, and rebuilt from the pretraining
    checkpoints, so a damaged artefact never blocks ``--resume``)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = load_torch_file(path, what="pretrained base", fix="it is rebuilt from the pretraining checkpoints",
                              max_bytes=weights_limit(base_module), limit_what="this base's weights take")
        if not (isinstance(obj, dict) and obj.get("format") == BASE_FORMAT and isinstance(obj.get("state_dict"), dict)
                and isinstance(obj.get("step"), int)):
            raise WeightsError(f"pretrained base {path} is not a {BASE_FORMAT} file")
    except WeightsError as exc:
        import warnings

        from vfbench.readback import move_aside

        dest = move_aside(path, warn=False)
        warnings.warn(f"{exc}; it was moved to {dest} and is rebuilt from the pretraining checkpoints")
        return None
    return obj
