"""The shared trainer: AdamW, EMA, clipping, mixed precision, DDP, checkpoints, logs, exact resume.

Determinism is by construction, not by saving and replaying RNG streams: everything random in
step ``s`` derives from ``(seed, s)`` (and the rank):

* data order: epoch ``e`` is ``randperm(len(dataset))`` seeded from ``(seed, "data", e)``; step
  ``s`` takes positions ``[s*G, (s+1)*G)`` of the concatenated epochs (``G`` = global batch), and
  rank ``r`` the ``r``-th slice of ``batch_size`` of them;
* the loss's noise / timesteps / dropout: the global torch RNG is reseeded from
  ``(seed, "noise", s, rank)`` inside ``torch.random.fork_rng`` (a generator's ``loss`` may use
  the global RNG; the caller's own RNG state is left untouched).

So a run resumed from the checkpoint at step N takes exactly the batches and noise an
uninterrupted run takes, and on the CPU ends with bit-identical weights (tests/test_trainer.py).
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from vfbench.atomic import FileLock, atomic_write, atomic_write_json
from vfbench.checkpoint import (capture_rng_state, derive_seed, drop_after, find_latest,
                                list_checkpoints, restore_rng_state, save_checkpoint)
from vfbench.config import to_dict
from vfbench.distributed import (DistInfo, all_reduce_gradients, all_reduce_sum, any_flag, barrier,
                                 broadcast_module, dist_info, init_distributed)
from vfbench.ema import EMA
from vfbench.errors import DataError, TrainingDiverged, UsageError, WeightsError, check_positive, check_range

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (``train:`` section of a config file)."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"   # "constant" | "cosine" (decay to 0 at ``steps``; see lr_factor)
    warmup_steps: int = 0           # linear learning-rate warm-up over the first N steps
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True         # decay min(ema_decay, (1+n)/(10+n)) at update n (see vfbench.ema)
    grad_clip: float = 1.0          # max global gradient norm; 0 disables clipping
    precision: str = "fp32"         # "fp32" | "bf16" (autocast on GPU and CPU) | "fp16" (GPU only) | "auto"
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"            # "auto" | "cpu" | "cuda" | "cuda:N"
    keep_checkpoints: int = 2       # newest checkpoints kept (end-of-run checkpoints always kept)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        check_positive("--steps (train.steps)", self.steps)
        check_positive("--batch-size (train.batch_size)", self.batch_size)
        from vfbench.options import check_lr, check_seed

        check_lr(self.lr, "--lr (train.lr)")
        check_seed(self.seed, "--seed (train.seed)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        check_range("--warmup-steps (train.warmup_steps)", self.warmup_steps, 0, None)
        check_range("--weight-decay (train.weight_decay)", self.weight_decay, 0, None)
        check_range("--ema-decay (train.ema_decay)", self.ema_decay, 0, 1)
        check_range("--grad-clip (train.grad_clip, 0 disables)", self.grad_clip, 0, None)
        check_positive("--ckpt-every (train.ckpt_every)", self.ckpt_every)
        check_positive("--log-every (train.log_every)", self.log_every)
        check_positive("train.keep_checkpoints (a --config file setting)", self.keep_checkpoints)
        check_range("--num-workers (train.num_workers)", self.num_workers, 0, None)
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self


def lr_factor(step: int, cfg: "TrainConfig") -> float:
    """The learning rate of optimiser step ``step`` (0-based) as a fraction of ``cfg.lr``.

    Linear warm-up over ``warmup_steps`` (Goyal et al. 2017), then either constant or a half-cosine
    decay to zero at ``cfg.steps`` (Loshchilov & Hutter 2017, SGDR without restarts). The cosine
    follows the run's total length: extending a finished cosine run (``--steps`` larger on resume)
    re-opens the schedule from where the longer run would be, which the log's lr column shows.
    """
    w = int(cfg.warmup_steps)
    warm = min(1.0, (step + 1) / w) if w > 0 else 1.0
    if cfg.lr_schedule == "constant":
        return warm
    span = max(1, int(cfg.steps) - w)
    progress = min(1.0, max(0.0, (step - w) / span))
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


# -- devices and precision -----------------------------------------------------------------------
def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    from vfbench.options import check_device

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        check_device(spec)  # a GPU this machine has (cuda:9 on a 1-GPU machine is refused here)
        if spec == "cuda":
            spec = f"cuda:{local_rank}"
    return torch.device(spec)


def amp_settings(precision: str, device: torch.device):
    """(autocast dtype or None, use GradScaler).

    bf16 autocast runs on GPUs and on CPUs (oneDNN's bf16 kernels; AMX-BF16 / AVX512-BF16 make it a
    real speed-up, benchmarks/bf16_training.py). fp16 needs a GradScaler and is a GPU feature: on a CPU
    it falls back to fp32 with a warning. Weights, optimiser state, EMA and the loss stay float32.
    """
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        warnings.warn(f"--precision {precision} applies on GPU only; training in fp32 on {device} "
                      f"(use --precision bf16 on a CPU)")
        return None, False
    return torch.float16, True


def cpu_bf16_native() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16), read from
    /proc/cpuinfo (Linux; False elsewhere). Without them CPU bf16 autocast is emulated and many times
    slower than fp32 (benchmarks/bf16_training.py)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def auto_precision(device: torch.device) -> str:
    """``bf16`` where it is a real speed lever (a CUDA GPU with bf16, or a CPU with native bf16 kernels),
    else ``fp32``: the demo's and the reference recipe's ``--precision auto``."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_bf16_native() else "fp32"


# -- data order ----------------------------------------------------------------------------------
class StepBatchSampler:
    """Yields the dataset indices of steps ``start..stop-1`` for one rank, a pure function of
    (seed, step, rank, world size): see the module docstring."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise DataError("the training dataset is empty; check --dataset / --data-root")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._perms: Dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> List[int]:
        first = step * self.batch_size * self.world_size + self.rank * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[offset]))
        return out

    def state(self, step: int) -> Dict[str, Any]:
        pos = step * self.batch_size * self.world_size
        return {"scheme": "randperm-per-epoch", "seed": self.seed, "next_position": pos,
                "epoch": pos // self.n, "dataset_len": self.n, "batch_size": self.batch_size,
                "world_size": self.world_size}

    def __iter__(self):
        for s in range(self.start, self.stop):
            yield self.indices(s)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def default_collate():
    try:
        from vfbench.data import collate_clips  # the datasets' own collate, once it exists
        return collate_clips
    except ImportError:
        from torch.utils.data import default_collate as dc
        return dc


def _to_device(batch: Any, device: torch.device) -> Any:
    non_blocking = device.type == "cuda"
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# -- optimiser groups ----------------------------------------------------------------------------
def build_param_groups(model: nn.Module, param_groups: Any, lr: float) -> List[Dict[str, Any]]:
    """Per-module learning-rate groups (trainable parameters only, empty groups dropped)."""
    if param_groups is None:
        groups = model.param_groups(lr) if hasattr(model, "param_groups") else None
        if groups is None:
            groups = [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    elif callable(param_groups):
        groups = param_groups(lr)
    else:
        groups = param_groups
    out, seen = [], set()
    for i, g in enumerate(groups):
        g = dict(g)
        params = [p for p in g["params"] if p.requires_grad]
        for p in params:
            if id(p) in seen:
                raise UsageError(f"parameter group {g.get('name', i)!r} repeats a parameter of another group;"
                                 " fix the generator's param_groups()")
            seen.add(id(p))
        if params:
            g["params"] = params
            g.setdefault("lr", lr)
            g.setdefault("name", f"group{i}")
            out.append(g)
    if not out:
        raise UsageError("the model has no trainable parameters (all requires_grad=False); nothing to train")
    return out


# -- log.csv ---------------------------------------------------------------------------------------
class CsvLog:
    """``log.csv``: one row per ``log_every`` steps, appended and flushed (a kill loses at most the
    row being written); on resume the rows past the resumed step are dropped (atomic rewrite)."""

    FIXED = ("step", "loss")
    TAIL = ("lr", "steps_per_s", "time")

    def __init__(self, path: Path, resume_step: Optional[int], enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.columns: Optional[List[str]] = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        from vfbench.readback import move_aside, read_csv_rows

        rows = read_csv_rows(self.path)
        if rows is None:  # not CSV text: kept aside, and the log restarts at the resumed step
            move_aside(self.path, "is not UTF-8 CSV text")
            return
        if not rows:
            return
        header, kept = rows[0], []
        for row in rows[1:]:
            try:
                if len(row) == len(header) and int(row[0]) <= step:
                    kept.append(row)
            except ValueError:  # a half-written last line
                continue
        with atomic_write(self.path, "w") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(kept)
        self.columns = header

    def write(self, row: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.columns is None:
            terms = sorted(k for k in row if k not in self.FIXED + self.TAIL)
            self.columns = list(self.FIXED) + terms + list(self.TAIL)
            with atomic_write(self.path, "w") as fh:
                csv.writer(fh).writerow(self.columns)
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c, "")) for c in self.columns])
            fh.flush()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# -- the loop ------------------------------------------------------------------------------------
def _trainable(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _diverged(what: str, step: int, value: Any, last_ckpt: Optional[Path], lr: float) -> TrainingDiverged:
    kept = f"the last good checkpoint {last_ckpt} is kept" if last_ckpt else "no checkpoint had been written yet"
    return TrainingDiverged(f"training diverged at step {step}: the {what} is {value}; {kept};"
                            f" lower the learning rate (--lr, now {lr:g}) or set --grad-clip and rerun with --resume")


TRAIN_LOCK = ".train.lock"


def run_lock(run_dir: Path | str) -> "FileLock":
    """The run folder's exclusive lock (non-blocking): two trainers of one run at once are refused.

    A rerun of the same command in a second terminal while the first still trains would otherwise
    write the same checkpoints and log.csv and, on resume, move the first one's newer checkpoints
    aside. The lock dies with its process, so a killed run never leaves it behind.
    """
    run_dir = Path(run_dir)
    return FileLock(run_dir / TRAIN_LOCK, blocking=False,
                    what=f"run {run_dir} (it is being trained by another process)")


def check_not_training(run_dir: Path | str) -> None:
    """Raise ``LockHeld`` now if another process trains ``run_dir`` (before anything is rewritten)."""
    if Path(run_dir).is_dir() and dist_info().is_main:
        with run_lock(run_dir):
            pass


def train(run_dir: Path | str, generator: nn.Module, dataset, cfg: TrainConfig, resume: bool = False,
          loss_fn: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None, param_groups: Any = None,
          progress: bool = True, *, model_name: Optional[str] = None, tensorboard: bool = False,
          preview_every: Optional[int] = None) -> Dict[str, Any]:
    """Train ``generator`` on ``dataset`` for ``cfg.steps`` steps (total, counting resumed ones).

    ``loss_fn(batch) -> {"loss": ..., terms...}`` defaults to ``generator.loss``; ``param_groups``
    (a list, or a callable ``lr -> list``) defaults to ``generator.param_groups``. Returns the
    summary also written to ``summary.json``. The run folder is locked while training (rank 0):
    a second trainer of the same run fails at once with ``LockHeld``. ``tensorboard``: also write
    TensorBoard events to ``run_dir/tensorboard`` (vfbench.tensorboard_log), with sample previews every
    ``preview_every`` steps (default ``cfg.ckpt_every``; 0: none).
    """
    cfg.validate()
    lock = run_lock(run_dir) if dist_info().is_main else contextlib.nullcontext()
    with lock:
        return _train(run_dir, generator, dataset, cfg, resume, loss_fn, param_groups, progress, model_name,
                      tensorboard, preview_every)


def _train(run_dir, generator, dataset, cfg, resume, loss_fn, param_groups, progress, model_name,
           tensorboard=False, preview_every=None):
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    wants_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    info: DistInfo = init_distributed(torch.device("cuda" if wants_cuda else "cpu"))
    device = resolve_device(cfg.device, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    name = model_name or getattr(generator, "name", None) or type(generator).__name__
    gen_config = generator.config_dict() if hasattr(generator, "config_dict") else {}
    loss_fn = loss_fn or generator.loss

    model = generator.to(device)
    groups = build_param_groups(model, param_groups, cfg.lr)
    broadcast_module(model, info)  # every rank starts from rank 0's initialisation
    trainable = _trainable(model)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    wanted = [(g["lr"], g["weight_decay"]) for g in opt.param_groups]
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup)
    precision = auto_precision(device) if cfg.precision == "auto" else cfg.precision
    amp_dtype, use_scaler = amp_settings(precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    start, elapsed0, resumed_from, last_ckpt = 0, 0.0, None, None
    if resume:
        from vfbench.torch_files import checkpoint_limit

        found = find_latest(ckpt_dir, map_location=device, max_bytes=checkpoint_limit(model))
        if found is not None:
            last_ckpt, state = found
            if state["generator"] != name:
                raise WeightsError(f"checkpoint {last_ckpt} belongs to generator {state['generator']!r}, not"
                                   f" {name!r}; resume the right run or start a new one with another --name")
            from vfbench.runs import legacy_filled

            saved_cfg = legacy_filled(name, state.get("generator_config") or {})
            if saved_cfg and gen_config and saved_cfg != gen_config:
                raise WeightsError(f"checkpoint {last_ckpt} was trained with another {name} configuration;"
                                   " resume with the run's original settings or start a new run with another --name")
            try:
                model.load_state_dict(state["model"])
                ema.load_state_dict(state["ema"])
                ema.num_updates = int(state.get("ema_updates", state["step"]))
                opt.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise WeightsError(f"checkpoint {last_ckpt} does not match this {name} model ({exc});"
                                   " the run's configuration changed: start a new run with another --name") from None
            for g, (lr, wd) in zip(opt.param_groups, wanted):  # a resumed run may lower --lr
                g["lr"], g["weight_decay"] = lr, wd
            if use_scaler and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            restore_rng_state(state.get("rng", {}))
            start, elapsed0, resumed_from = int(state["step"]), float(state.get("elapsed_s", 0.0)), int(state["step"])
            order = state.get("data_order", {})
            if order and (order.get("world_size") != info.world_size or order.get("batch_size") != cfg.batch_size):
                warnings.warn("resuming with a different batch size or number of processes: the data order"
                              " after the resumed step differs from the original run's")
            if info.is_main:
                drop_after(ckpt_dir, start)
            del state
    elif info.is_main and list_checkpoints(ckpt_dir):
        raise UsageError(f"{run_dir} already has checkpoints; pass --resume to continue it or --force to start over")

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, info.rank, info.world_size)
    log = CsvLog(run_dir / "log.csv", start if resume else None, enabled=info.is_main)
    summary_path = run_dir / "summary.json"
    counts = {"params": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable)}

    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=default_collate(), pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", start)))
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    tb = None
    if tensorboard and info.is_main:
        from vfbench.tensorboard_log import TensorBoardLog

        tb = TensorBoardLog(run_dir / "tensorboard", cfg.ckpt_every if preview_every is None else preview_every,
                            seed=cfg.seed, resume_step=start)
    bar = None
    if progress and info.is_main and start < cfg.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {name}", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    t_log, steps_since_log = t0, 0
    acc: Dict[str, torch.Tensor] = {}
    last_logged: Dict[str, float] = {}
    step = start
    saved_step = start if resumed_from is not None else None
    interrupted = False

    def save(at: int) -> None:
        nonlocal last_ckpt, saved_step
        params = list(model.parameters())
        if any_flag(not _all_finite(params), device, info):  # never save a poisoned model
            raise _diverged("model weights", at, "non-finite", last_ckpt, cfg.lr)
        if info.is_main:
            last_ckpt = save_checkpoint(ckpt_dir, {
                "step": at, "generator": name, "generator_config": gen_config,
                "model": model.state_dict(), "ema": ema.state_dict(), "ema_updates": ema.num_updates, "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if use_scaler else {}, "rng": capture_rng_state(),
                "data_order": sampler.state(at), "train": to_dict(cfg),
                "elapsed_s": elapsed0 + time.perf_counter() - t0, "world_size": info.world_size,
                "loss": last_logged.get("loss"),
            }, keep=cfg.keep_checkpoints, final=at == cfg.steps)
        else:
            last_ckpt = ckpt_dir / f"step-{at:07d}.pt"
        saved_step = at
        barrier(info)

    from vfbench.interrupt import deferred_sigint

    stop_ctx = deferred_sigint()
    stop = stop_ctx.__enter__()
    model.train()
    try:
        for step_idx, batch in zip(range(start, cfg.steps), loader):
            batch = _to_device(batch, device)
            with torch.random.fork_rng(devices=rng_devices, device_type="cuda"):
                torch.manual_seed(derive_seed(cfg.seed, "noise", step_idx, info.rank))
                with autocast():
                    out = loss_fn(batch)
                loss = out["loss"]
                bad = not bool(torch.isfinite(loss.detach()).all())
                if any_flag(bad, device, info):
                    raise _diverged("loss", step_idx + 1, float(loss.detach().float()), last_ckpt, cfg.lr)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            all_reduce_gradients(trainable, info)
            factor = lr_factor(step_idx, cfg)
            for g, (lr, _wd) in zip(opt.param_groups, wanted):
                g["lr"] = lr * factor
            scaler.unscale_(opt)
            if cfg.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                # fp16 overflow is the GradScaler's business (it skips the step); otherwise stop.
                if not use_scaler and any_flag(not bool(torch.isfinite(norm)), device, info):
                    raise _diverged("gradient norm", step_idx + 1, float(norm), last_ckpt, cfg.lr)
            scaler.step(opt)
            scaler.update()
            ema.update(model)
            step = step_idx + 1
            steps_since_log += 1

            terms = {"loss": loss.detach().float()}
            for k, v in out.items():
                if k != "loss" and (isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)):
                    terms[k] = (v.detach() if isinstance(v, torch.Tensor) else torch.tensor(v)).float().reshape(())
            for k, v in terms.items():
                acc[k] = acc.get(k, torch.zeros((), device=device)) + v.to(device)

            if step % cfg.log_every == 0 or step == cfg.steps:
                keys = sorted(acc)
                vec = all_reduce_sum(torch.stack([acc[k] for k in keys]), info) / (steps_since_log * info.world_size)
                now = time.perf_counter()
                last_logged = {k: float(v) for k, v in zip(keys, vec.tolist())}
                sps = steps_since_log / max(now - t_log, 1e-9)
                log.write({"step": step, **last_logged, "lr": max(g["lr"] for g in opt.param_groups),
                           "steps_per_s": sps, "time": elapsed0 + now - t0})
                if bar is not None:
                    bar.set_postfix(loss=f"{last_logged['loss']:.4g}", refresh=False)
                if tb is not None:
                    tb.scalars(step, last_logged, {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)},
                               ema.current_decay())
                acc, t_log, steps_since_log = {}, now, 0
            if bar is not None:
                bar.update(1)

            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save(step)
            if tb is not None:
                tb.maybe_preview(step, model, ema, last=step == cfg.steps)
            if any_flag(stop.requested, device, info):  # Ctrl-C: the step is complete, keep it and stop
                interrupted = True
                break
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        stop_ctx.__exit__(None, None, None)
    if interrupted:
        from vfbench.errors import Interrupted

        if step > start and saved_step != step:
            save(step)
        where = f"checkpoint at step {step} of {cfg.steps} in {ckpt_dir}" if step > start or last_ckpt else \
            "no step completed and no checkpoint existed"
        raise Interrupted(where)

    wall = time.perf_counter() - t0
    done = step - start
    if last_ckpt is None:
        latest = list_checkpoints(ckpt_dir)
        last_ckpt = latest[0][1] if latest else None
    summary = {
        "generator": name, "steps": step, "start_step": start, "resumed_from": resumed_from,
        "steps_this_call": done, "wall_s": wall, "elapsed_s": elapsed0 + wall,
        "steps_per_s": done / wall if done and wall > 0 else None,
        "final_loss": last_logged.get("loss"), "final_terms": last_logged,
        "checkpoint": str(last_ckpt) if last_ckpt else None, "device": str(device),
        "precision": precision if amp_dtype is not None else "fp32", "world_size": info.world_size,
        "global_batch": cfg.batch_size * info.world_size, "num_params": counts["params"],
        "trainable_params": counts["trainable"], "ema_decay": cfg.ema_decay,
        # the configured (peak) rates: the schedule's current value is in log.csv
        "lr_groups": {g.get("name", str(i)): lr for i, (g, (lr, _wd)) in enumerate(zip(opt.param_groups, wanted))},
        "lr_schedule": cfg.lr_schedule, "warmup_steps": cfg.warmup_steps,
    }
    if info.is_main:
        atomic_write_json(summary_path, summary)
    return summary


# -- VideoFusion: pretraining the base generator (spec Sec. 4) --------------------------------------
def check_pretrainable(generator: nn.Module) -> None:
    """Refuse a generator without a separate image DPM (``base``, ``pretrain_loss``, ``load_base_state``)."""
    for attr in ("base", "pretrain_loss", "load_base_state"):
        if not hasattr(generator, attr):
            raise UsageError(f"generator {getattr(generator, 'name', type(generator).__name__)!r} has no"
                             " separate image DPM to pretrain; --pretrain-base-steps is for videofusion (its base"
                             " generator) and vidm (its content generator)")


def pretrain_base(out_dir: Path | str, generator: nn.Module, dataset, cfg: TrainConfig, resume: bool = False,
                  progress: bool = True, dataset_info: Optional[Dict[str, Any]] = None,
                  artefact: Optional[Path | str] = None) -> Path:
    """Train ``generator.base`` alone as an image DPM (``generator.pretrain_loss``) in ``out_dir``,
    write the EMA base weights to ``artefact`` (default ``out_dir/base-pretrain.pt``) and load them
    into ``generator``.

    Only the base's parameters are optimised, at the full ``cfg.lr`` (the small fine-tuning
    learning rate of ``param_groups`` is for joint training). A generator in mode ``fixed`` (frozen
    base) is pretrained through a ``stopgrad`` twin of the same architecture. With ``resume``, an
    existing artefact at ``cfg.steps`` is reused and an interrupted pretraining continues.
    """
    import dataclasses

    from vfbench.atomic import atomic_torch_save
    from vfbench.runs import BASE_FILE, BASE_FORMAT, read_base_artefact

    check_pretrainable(generator)
    out_dir = Path(out_dir)
    artefact = Path(artefact) if artefact is not None else out_dir / BASE_FILE
    obj = read_base_artefact(artefact, generator.base) if resume else None  # an unreadable one is moved aside
    if obj is not None and obj["step"] >= cfg.steps:
        generator.load_base_state(obj["state_dict"])
        return artefact
    work = generator
    if getattr(generator.config, "mode", None) == "fixed":
        with torch.random.fork_rng(devices=[]):
            work = type(generator)(dataclasses.replace(generator.config, mode="stopgrad"))
        work.load_state_dict(generator.state_dict())
    groups = [{"name": "base", "params": list(work.base.parameters()), "lr": cfg.lr}]
    train(out_dir, work, dataset, cfg, resume=resume, loss_fn=work.pretrain_loss, param_groups=groups,
          progress=progress)
    found = find_latest(out_dir / "checkpoints")
    if found is None:  # pragma: no cover - train always writes a final checkpoint
        raise WeightsError(f"base pretraining in {out_dir} wrote no checkpoint")
    _path, state = found
    prefix = next(name for name, module in work.named_children() if module is work.base) + "."  # VIDM: "content."
    base_sd = {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    if dist_info().is_main:
        atomic_torch_save(artefact, {
            "format": BASE_FORMAT, "generator": getattr(work, "name", type(work).__name__),
            "generator_config": work.config_dict() if hasattr(work, "config_dict") else {},
            "step": int(state["step"]), "state_dict": base_sd, "train": to_dict(cfg),
            "dataset": dict(dataset_info or {}),
        })
    barrier(dist_info())
    generator.load_base_state(base_sd)
    return artefact
