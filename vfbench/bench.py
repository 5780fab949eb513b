"""Efficiency benchmarks: VideoFusion against VDM on the same base U-Net (VideoFusion paper, Table 4),
and the small measuring tools the scripts under ``benchmarks/`` share.

What is compared (Sec. 4.4 of the paper): VDM is "re-implemented on the base generator's architecture"
(``VDM.config_for(preset)`` inflates ``unet_preset(preset, "base")`` with temporal attention and runs
it on all N frames); VideoFusion runs that same base U-Net on the keyframe only plus the smaller
residual U-Net (``unet_preset(preset, "residual")``) on the N - 1 other frames. Same preset, clip size,
batch, schedule and sampler for both.

Measured per variant:

* **per-step latency**: one denoising step (``predict_noise`` + the DDIM update) under
  ``torch.inference_mode``, median of ``repeats`` runs, the variants interleaved (A B A B ...) so a
  noisy machine slows both alike; the *ratio* is the result, absolute seconds are for this machine only;
* **whole-sample latency**: ``model.sample(batch, steps=sample_steps)`` (DDIM, eta 0), same interleaving;
* **training step**: ``loss(batch)`` + backward + AdamW step, same interleaving;
* **FLOPs** of one denoiser evaluation (``torch.utils.flop_counter``; convs, matmuls, attention), and
  **peak memory** of one denoising step and of one training step.

Peak memory. On CUDA it is ``torch.cuda.max_memory_allocated`` above what was allocated before the step
(after ``reset_peak_memory_stats``), the usual definition. On a CPU there is no allocator counter, so
the same quantity is *traced*: ``LiveTensorBytes`` (a ``TorchDispatchMode``) adds the storage size of
every tensor an operator creates and subtracts it when the last tensor using that storage is freed;
its maximum is the peak of live tensor bytes above the start, i.e. what ``max_memory_allocated``
reports on a GPU (minus library workspaces such as oneDNN's scratch pads). It is deterministic, so
unlike a timing it does not drift with the machine's load, and it works on the ``meta`` device: the
``analytic`` part of the report gives FLOPs and traced peak memory of the ``paper`` preset at the
paper's clip size without allocating anything. A process-level cross-check, ``rss=True``, runs each
variant in a fresh Python process and reports its peak RSS growth over one step (``VmHWM`` reset
through ``/proc/self/clear_refs``, glibc told to return freed blocks with ``MALLOC_MMAP_THRESHOLD_``),
which also counts weights, allocator slack and library scratch memory.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from vfbench.errors import UsageError

VARIANTS = ("vdm", "videofusion")

# VideoFusion paper, Table 4 (inference, per denoising step, one A100-80GB).
PAPER_TABLE4 = {
    "vdm": {"memory_gb": 63.82, "latency_s": 0.40},
    "videofusion": {"memory_gb": 49.85, "latency_s": 0.17},
    "memory_ratio": 49.85 / 63.82,
    "latency_ratio": 0.17 / 0.40,
}


# -- measuring tools ------------------------------------------------------------------------------

def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: Dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                      device: str | torch.device = "cpu") -> Dict[str, List[float]]:
    """Wall-clock seconds of each callable, run in the order A B A B ... ``repeats`` times after ``warmup``
    untimed rounds; the variants see the same machine load, so their ratio is stable when absolute
    times drift."""
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """Median (the figure used for ratios), min, max and the relative spread of a list of timings."""
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "n": len(times),
            "spread": (max(times) - min(times)) / med if med > 0 else 0.0}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


class LiveTensorBytes:
    """Trace the bytes of live tensor storages created inside the ``with`` block (any device, meta too).

    ``peak`` is the maximum, over the block, of the bytes of storages allocated in it and not yet freed
    (what ``torch.cuda.max_memory_allocated`` measures on a GPU, relative to the start); ``current`` is
    what is still alive at the end. An operator output whose storage is one of the operator's inputs'
    (a view, an in-place or ``out=`` result) is not a new allocation; tensors that existed before the
    block (weights, inputs) are therefore never counted.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._record(out, (args, kwargs))
                return out

        self._mode = _Mode()
        self._live: Dict[int, List[int]] = {}  # storage key -> [nbytes, number of tracked tensors]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._live[key]
            self.current -= entry[0]

    @staticmethod
    def _tensors(obj) -> List[torch.Tensor]:
        from torch.utils._pytree import tree_flatten

        return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]

    @staticmethod
    def _key(t: torch.Tensor) -> Optional[int]:
        try:
            return t.untyped_storage()._cdata
        except (RuntimeError, NotImplementedError):  # sparse / exotic tensors: not traced
            return None

    def _record(self, out, inputs) -> None:
        outs = self._tensors(out)
        if not outs:
            return
        input_keys = {self._key(t) for t in self._tensors(inputs)}
        for t in outs:
            key = self._key(t)
            if key is None:
                continue
            entry = self._live.get(key)
            if entry is None:
                if key in input_keys:  # a view / in-place result of a tensor from before the block
                    continue
                nbytes = int(t.untyped_storage().nbytes())
                self._live[key] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, key)

    def __enter__(self) -> "LiveTensorBytes":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of the convolutions, matmuls and attention that ``fn`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_bytes(fn: Callable[[], Any], device: str | torch.device = "cpu") -> Dict[str, int]:
    """Peak memory of ``fn`` above its start: CUDA's allocator counter on a GPU, the tensor trace elsewhere."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return {"peak_bytes": int(peak), "method": "cuda.max_memory_allocated"}
    with LiveTensorBytes() as trace:
        out = fn()
    del out
    return {"peak_bytes": int(trace.peak), "method": "traced live tensor bytes (TorchDispatchMode)"}


def matmul_flops_per_s(n: int = 1024, repeats: int = 5, dtype=torch.float32) -> float:
    """This CPU's fp32 matmul rate (FLOP/s, median of ``repeats``) at the current thread count: the
    roofline the other measurements are compared with."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times)


def machine_info() -> Dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def strict_json(obj: Any) -> Any:
    """``obj`` with tuples as lists and non-finite floats (NaN, inf) as ``None``: strict JSON."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_result(path, result: Dict[str, Any]) -> None:
    """Write a benchmark result as strict JSON (no NaN), atomically (a reader never sees a torn file)."""
    from pathlib import Path

    from vfbench.atomic import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, strict_json(result))


def default_out(name: str) -> str:
    from vfbench.results import default_results_dir

    return str(default_results_dir() / "bench" / f"{name}.json")


def denoiser_timing_setup(preset: str, frames: int, size: int, batch: int, threads: int, seed: int,
                          **config: Any):
    """``build_models``' nets, one noisy clip batch ``z`` and timestep ``t`` (500), and the result skeleton
    (config, machine, torch version) of a denoiser-timing benchmark, with torch's threads and seed set."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    models = build_models(preset, frames, size)
    z = torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))
    t = torch.full((batch,), 500, dtype=torch.long)
    res = {"config": dict(preset=preset, frames=frames, size=size, batch=batch, threads=threads, seed=seed, **config),
           "machine": machine_info(), "torch": torch.__version__, "generators": {}}
    return models, z, t, res


def denoiser_timing_parser(description: str, repeats: int = 7):
    """The command line shared by the scripts that time one denoiser call per variant on ``build_models``'
    nets (``benchmarks/channels_last.py``, ``benchmarks/compile_denoisers.py``)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    return ap


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain Markdown table (readable in a terminal, pasteable into a README)."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        if math.isnan(c):
            return "-"
        if c != 0 and (abs(c) >= 1e5 or abs(c) < 1e-3):
            return f"{c:.3g}"
        return f"{c:.4g}"
    return str(c)


# -- the Table 4 comparison -----------------------------------------------------------------------

@dataclass
class EfficiencyConfig:
    preset: str = "small"
    frames: int = 16
    size: int = 32
    batch: int = 1
    sample_steps: int = 5  # DDIM steps of the whole-sample measurement
    repeats: int = 5
    warmup: int = 1
    train: bool = True  # also time (and trace) one training step
    memory: bool = True
    rss: bool = False  # cross-check memory with peak RSS in a fresh process per variant (CPU only)
    analytic: bool = True  # FLOPs + traced memory of the paper preset on the meta device (nothing allocated)
    analytic_preset: str = "paper"
    analytic_size: int = 128
    analytic_batch: int = 1
    residual_width: int = 0  # 0: the preset's residual width; else override it (what-if for the ratio)
    channels_last: bool = True  # both variants channels-last, as `vfbench sample` runs on a CPU (False: NCHW)
    breakdown: bool = True  # also time the sub-networks (VDM without temporal layers, VF base / residual)
    threads: int = 1  # torch.set_num_threads on CPU (0: leave as is)
    device: str = "cpu"
    seed: int = 0

    def check(self) -> "EfficiencyConfig":
        from vfbench.nets.unet import unet_preset_names

        for name in ("frames", "size", "batch", "sample_steps", "repeats", "analytic_size", "analytic_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.warmup < 0 or self.threads < 0:
            raise UsageError("--warmup and --threads must be non-negative")
        for name in ("preset", "analytic_preset"):
            if getattr(self, name) not in unet_preset_names():
                raise UsageError(f"--{name.replace('_', '-')} must be one of {', '.join(unet_preset_names())}, "
                                 f"got {getattr(self, name)!r}")
        from vfbench.options import check_frames, check_seed

        check_seed(self.seed)
        check_frames(self.frames)
        return self


def build_models(preset: str, frames: int, size: int, device="cpu", residual_width: int = 0,
                 randomize_outputs: bool = True) -> Dict[str, torch.nn.Module]:
    """VDM and VideoFusion built on the same base U-Net preset (unconditional, default schedule).

    ``residual_width`` > 0 overrides the residual U-Net's width (head_dim follows it). Fresh U-Nets have
    zero-initialised output layers (they predict eps = 0); ``randomize_outputs`` gives those layers small
    random values so that outputs can be compared between code paths (timings do not change).
    """
    import dataclasses

    from vfbench.generators.vdm import VDM
    from vfbench.generators.videofusion import VideoFusion

    vdm = VDM(VDM.config_for(preset, frames, size))
    cfg = VideoFusion.config_for(preset, frames, size)
    if residual_width:
        cfg = dataclasses.replace(cfg, residual=dataclasses.replace(cfg.residual, base_width=residual_width,
                                                                    head_dim=residual_width))
    vf = VideoFusion(cfg)
    if randomize_outputs:
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for m in (vdm, vf):
                for p in m.parameters():
                    if not bool(p.any()):
                        p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return {"vdm": vdm.to(device), "videofusion": vf.to(device)}


def _step_fn(model, z: torch.Tensor, t_int: int, t_prev: int) -> Callable[[], torch.Tensor]:
    from vfbench.diffusion import ddim_step

    t = torch.full((z.shape[0],), t_int, dtype=torch.long, device=z.device)

    def step():
        with torch.inference_mode():
            eps = model.predict_noise(z, t)
            return ddim_step(model.schedule, z, eps, t_int, t_prev)

    return step


def _denoiser_fn(model, z: torch.Tensor, t_int: int) -> Callable[[], torch.Tensor]:
    # timesteps are index data: on the meta device they stay on the CPU (the models index tables with them)
    t = torch.full((z.shape[0],), t_int, dtype=torch.long, device="cpu" if z.device.type == "meta" else z.device)

    def run():
        with torch.no_grad():
            return model.predict_noise(z, t)

    return run


def _train_fn(model, batch: Dict[str, torch.Tensor], seed: int) -> Callable[[], float]:
    groups = model.param_groups(1e-4)
    opt = torch.optim.AdamW(groups, lr=1e-4)
    g = torch.Generator().manual_seed(seed)

    def step():
        model.train()
        out = model.loss(batch, generator=g)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out["loss"].detach())

    return step


def _meta_denoiser(name: str, preset: str, frames: int, size: int, batch: int):
    """(denoiser callable, parameter count) of one variant on the ``meta`` device.

    VDM: its space-time U-Net on the clip. VideoFusion: the base U-Net on the keyframe, Eq. 12's base-noise
    removal, the residual U-Net on the N - 1 other frames and Eq. 13's composition, spelled out here
    because the residual net validates its frame indices with data-dependent checks a meta tensor cannot
    answer; the residual net is built without the frame-index embedding (one embedding row per frame:
    its FLOPs and bytes are negligible), so the parameter count adds that table back.
    """
    import dataclasses

    from vfbench.generators.vdm import VDM
    from vfbench.generators.videofusion import VideoFusion
    from vfbench.nets.unet import UNet, count_parameters

    z = torch.empty(batch, frames, 3, size, size, device="meta")
    t = torch.full((batch,), 500, dtype=torch.long)
    if name == "vdm":
        cfg = VDM.config_for(preset, frames, size)
        with torch.device("meta"):
            net = UNet(cfg.unet).eval()

        def run():
            with torch.no_grad():
                return net(z.transpose(1, 2), t).transpose(1, 2)

        return run, count_parameters(net)
    cfg = VideoFusion.config_for(preset, frames, size)
    with torch.device("meta"):
        base = UNet(cfg.base).eval()
        residual = UNet(dataclasses.replace(cfg.residual, num_frame_indices=0)).eval()
    key = frames // 2
    others = [i for i in range(frames) if i != key]
    lam = 0.5

    def run():
        with torch.no_grad():
            bhat = base(z[:, key], t)
            zp = z[:, others] - (lam ** 0.5) * 0.7 * bhat.unsqueeze(1)
            # the residual's conditioning input (the keyframe, in pixels) repeated for every non-key frame
            extra = residual.cfg.extra_input_channels
            if residual.cfg.video:  # residual_temporal: one video call on all N frames (keyframe slot included)
                cond = z[:, key, :extra].unsqueeze(2).expand(-1, -1, frames, -1, -1) if extra else None
                rhat = residual(z.transpose(1, 2), t, cond=cond).transpose(1, 2)[:, others]
            else:
                cond = z[:, key].repeat_interleave(len(others), dim=0)[:, :extra] if extra else None
                rhat = residual(zp.flatten(0, 1), t.repeat_interleave(len(others)),
                                cond=cond).view(batch, len(others), 3, size, size)
            eps = torch.empty_like(z)
            eps[:, key] = bhat
            eps[:, others] = (lam ** 0.5) * bhat.unsqueeze(1) + ((1 - lam) ** 0.5) * rhat
            return eps

    return run, count_parameters(base) + count_parameters(residual) + frames * cfg.residual.embed_dim


def analytic_costs(preset: str = "paper", frames: int = 16, size: int = 128, batch: int = 1) -> Dict[str, Any]:
    """FLOPs and traced peak activation memory of one denoiser call per variant, computed on the ``meta``
    device (nothing is allocated, so the paper preset at the paper's clip size costs seconds)."""
    out: Dict[str, Any] = {"preset": preset, "frames": frames, "size": size, "batch": batch,
                           "note": "meta device: FLOPs of convs/matmuls/attention and traced live activation bytes "
                                   "of one denoiser call; weights counted as fp32"}
    for name in VARIANTS:
        fn, params = _meta_denoiser(name, preset, frames, size, batch)
        flops = count_flops(fn)
        with LiveTensorBytes() as trace:
            r = fn()
        del r
        out[name] = {"params": params, "param_bytes": 4 * params, "flops_per_step": flops,
                     "peak_activation_bytes": trace.peak,
                     "inference_bytes": trace.peak + 4 * params + 4 * batch * frames * 3 * size * size}
    for key in ("flops_per_step", "peak_activation_bytes", "inference_bytes", "params"):
        out[f"{key}_ratio"] = ratio(out["videofusion"][key], out["vdm"][key])
    return out


_RSS_PROBE = r"""
import gc, json, sys, torch
from vfbench.bench import build_models, _step_fn, _status_kb
a = json.loads(sys.argv[1])
torch.set_num_threads(max(1, a["threads"]))
torch.manual_seed(a["seed"])
model = build_models(a["preset"], a["frames"], a["size"], residual_width=a["residual_width"])[a["variant"]].eval()
if a["channels_last"]:
    model.to(memory_format=torch.channels_last)
z = torch.randn(a["batch"], a["frames"], 3, a["size"], a["size"])
step = _step_fn(model, z, 500, 480)
step(); gc.collect()
rss0 = _status_kb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
out = step()
print(json.dumps({"rss_before_kb": rss0, "hwm_kb": _status_kb("VmHWM")}))
"""


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def rss_probe(variant: str, cfg: EfficiencyConfig) -> Dict[str, Any]:
    """Peak RSS growth of one denoising step in a fresh process (Linux only)."""
    args = {"variant": variant, "preset": cfg.preset, "frames": cfg.frames, "size": cfg.size, "batch": cfg.batch,
            "threads": cfg.threads, "seed": cfg.seed, "residual_width": cfg.residual_width,
            "channels_last": cfg.channels_last}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, json.dumps(args)], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["peak_growth_bytes"] = 1024 * (rec["hwm_kb"] - rec["rss_before_kb"])
    return rec


def efficiency(cfg: Optional[EfficiencyConfig] = None, progress: Callable[[str], None] = lambda s: None,
               **overrides) -> Dict[str, Any]:
    """Run the Table 4 comparison; returns a JSON-able dict (``format_efficiency`` prints it)."""
    cfg = cfg or EfficiencyConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise UsageError(f"unknown efficiency option {k!r}")
        setattr(cfg, k, v)
    cfg.check()
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    old_threads = torch.get_num_threads()
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        return _efficiency(cfg, device, progress)
    finally:
        torch.set_num_threads(old_threads)


def _efficiency(cfg: EfficiencyConfig, device: torch.device, progress) -> Dict[str, Any]:
    from vfbench.nets.memory_format import to_channels_last
    from vfbench.nets.unet import count_parameters

    torch.manual_seed(cfg.seed)
    models = build_models(cfg.preset, cfg.frames, cfg.size, device, cfg.residual_width)
    for m in models.values():
        m.eval()
        if cfg.channels_last:
            to_channels_last(m)
    g = torch.Generator().manual_seed(cfg.seed)
    z = torch.randn(cfg.batch, cfg.frames, 3, cfg.size, cfg.size, generator=g).to(device)
    from vfbench.diffusion import timestep_pairs

    t_int, t_prev = timestep_pairs(1000, 50)[25]  # a mid-trajectory DDIM step
    res: Dict[str, Any] = {"benchmark": "efficiency", "config": asdict(cfg), "machine": machine_info(),
                           "paper_table4": PAPER_TABLE4, "variants": {}}
    for name, m in models.items():
        res["variants"][name] = {"params": count_parameters(m),
                                 "flops_per_step": count_flops(_denoiser_fn(m, z, t_int))}

    progress("per-step latency")
    steps = {name: _step_fn(m, z, t_int, t_prev) for name, m in models.items()}
    times = interleaved_times(steps, cfg.repeats, cfg.warmup, device)
    for name in models:
        res["variants"][name]["step"] = summarize(times[name])
        res["variants"][name]["step_gflops_per_s"] = res["variants"][name]["flops_per_step"] / times_median(times[name]) / 1e9

    if cfg.breakdown:
        progress("sub-network breakdown")
        res["breakdown"] = _breakdown(models, z, t_int, cfg, device)

    progress(f"whole-sample latency ({cfg.sample_steps} DDIM steps)")
    samples = {name: (lambda m=m: m.sample(cfg.batch, generator=torch.Generator().manual_seed(cfg.seed),
                                           steps=cfg.sample_steps, batch_size=cfg.batch))
               for name, m in models.items()}
    times = interleaved_times(samples, max(1, cfg.repeats // 2), 0, device)
    for name in models:
        res["variants"][name]["sample"] = summarize(times[name])

    if cfg.memory:
        progress("peak memory")
        for name, m in models.items():
            res["variants"][name]["step_memory"] = peak_bytes(steps[name], device)

    if cfg.train:
        progress("training step")
        video = torch.randint(0, 256, (cfg.batch, cfg.frames, 3, cfg.size, cfg.size), dtype=torch.uint8, generator=g)
        batch = {"video": video.to(device)}
        train_fns = {name: _train_fn(m, batch, cfg.seed) for name, m in models.items()}
        times = interleaved_times(train_fns, max(1, cfg.repeats // 2), 1, device)
        for name in models:
            res["variants"][name]["train_step"] = summarize(times[name])
        if cfg.memory:
            for name, m in models.items():
                res["variants"][name]["train_memory"] = peak_bytes(train_fns[name], device)
        for m in models.values():
            m.eval()

    if cfg.rss and device.type == "cpu" and sys.platform.startswith("linux"):
        progress("peak RSS (fresh process per variant)")
        for name in models:
            res["variants"][name]["step_rss"] = rss_probe(name, cfg)

    if cfg.analytic:
        progress(f"analytic costs ({cfg.analytic_preset}, {cfg.frames}x{cfg.analytic_size}x{cfg.analytic_size}, meta device)")
        res["analytic"] = analytic_costs(cfg.analytic_preset, cfg.frames, cfg.analytic_size, cfg.analytic_batch)

    v, f = res["variants"]["vdm"], res["variants"]["videofusion"]
    ratios = {"flops": ratio(f["flops_per_step"], v["flops_per_step"]),
              "step_latency": ratio(f["step"]["median_s"], v["step"]["median_s"]),
              "sample_latency": ratio(f["sample"]["median_s"], v["sample"]["median_s"])}
    if cfg.memory:
        ratios["step_memory"] = ratio(f["step_memory"]["peak_bytes"], v["step_memory"]["peak_bytes"])
    if cfg.train:
        ratios["train_step"] = ratio(f["train_step"]["median_s"], v["train_step"]["median_s"])
        if cfg.memory:
            ratios["train_memory"] = ratio(f["train_memory"]["peak_bytes"], v["train_memory"]["peak_bytes"])
    if "step_rss" in f and "peak_growth_bytes" in f["step_rss"] and "peak_growth_bytes" in v["step_rss"]:
        ratios["step_rss"] = ratio(f["step_rss"]["peak_growth_bytes"], v["step_rss"]["peak_growth_bytes"])
    res["ratios"] = ratios
    return res


def times_median(times: Sequence[float]) -> float:
    return statistics.median(times)


def _breakdown(models, z: torch.Tensor, t_int: int, cfg: EfficiencyConfig, device) -> Dict[str, Any]:
    """Where a denoising step's time goes: VDM with and without its temporal layers; VideoFusion's base
    U-Net on the keyframe and residual U-Net on the N - 1 other frames. Interleaved, medians; FLOPs and
    achieved GFLOP/s per part (a part far below the others runs at poor hardware utilisation)."""
    vdm, vf = models["vdm"], models["videofusion"]
    b, n = z.shape[:2]
    t = torch.full((b,), t_int, dtype=torch.long, device=z.device)
    m = len(vf.others)
    extra = vf.residual.cfg.extra_input_channels
    if vf.residual.cfg.video:  # residual_temporal: one video call on all N frames (keyframe slot included)
        m = n
        zr = z.transpose(1, 2).contiguous()
        tr, fi = t, torch.arange(n, device=z.device).expand(b, n)
        cr = torch.zeros(b, extra, *zr.shape[2:], device=z.device, dtype=zr.dtype) if extra else None
    else:
        zr = z[:, vf.others].flatten(0, 1).contiguous()
        tr = t.repeat_interleave(m)
        fi = torch.tensor(vf.others, device=z.device).repeat(b)
        cr = torch.zeros(zr.shape[0], extra, *zr.shape[2:], device=z.device, dtype=zr.dtype) if extra else None
    zk = z[:, vf.key].contiguous()
    parts = {
        "vdm: full space-time U-Net": lambda: vdm.unet(z.transpose(1, 2), t),
        "vdm: spatial layers only (temporal off)": lambda: vdm.unet(z.transpose(1, 2), t, temporal=False),
        "videofusion: base U-Net, keyframe": lambda: vf.base(zk, t),
        f"videofusion: residual U-Net, {m} frames": lambda: vf.residual(zr, tr, frame_index=fi, cond=cr),
    }
    out: Dict[str, Any] = {}
    flops = {k: count_flops(_no_grad(f)) for k, f in parts.items()}
    times = interleaved_times({k: _no_grad(f) for k, f in parts.items()}, cfg.repeats, cfg.warmup, device)
    for k in parts:
        med = statistics.median(times[k])
        out[k] = {"median_s": med, "gflops": flops[k] / 1e9, "gflops_per_s": flops[k] / med / 1e9}
    return out


def _no_grad(fn):
    def run():
        with torch.inference_mode():
            return fn()

    return run


def format_efficiency(res: Dict[str, Any]) -> str:
    c = res["config"]
    v, f = res["variants"]["vdm"], res["variants"]["videofusion"]
    r = res["ratios"]
    mib = 1024 ** 2
    rows = [
        ["parameters (M)", v["params"] / 1e6, f["params"] / 1e6, ratio(f["params"], v["params"]), "-"],
        ["GFLOPs / denoiser call", v["flops_per_step"] / 1e9, f["flops_per_step"] / 1e9, r["flops"], "-"],
        ["step latency (s, median)", v["step"]["median_s"], f["step"]["median_s"], r["step_latency"],
         f"{PAPER_TABLE4['vdm']['latency_s']} -> {PAPER_TABLE4['videofusion']['latency_s']} s = "
         f"{PAPER_TABLE4['latency_ratio']:.3f}"],
        ["achieved GFLOP/s in a step", v["step_gflops_per_s"], f["step_gflops_per_s"],
         ratio(f["step_gflops_per_s"], v["step_gflops_per_s"]), "-"],
        [f"sample latency, {c['sample_steps']} DDIM steps (s)", v["sample"]["median_s"], f["sample"]["median_s"],
         r["sample_latency"], "-"],
    ]
    if "step_memory" in v:
        rows.append(["step peak memory (MiB)", v["step_memory"]["peak_bytes"] / mib, f["step_memory"]["peak_bytes"] / mib,
                     r["step_memory"], f"{PAPER_TABLE4['vdm']['memory_gb']} -> {PAPER_TABLE4['videofusion']['memory_gb']} GB"
                     f" = {PAPER_TABLE4['memory_ratio']:.3f}"])
    if "step_rss" in v and "step_rss" in r:
        rows.append(["step peak RSS growth (MiB, fresh process)", v["step_rss"]["peak_growth_bytes"] / mib,
                     f["step_rss"]["peak_growth_bytes"] / mib, r["step_rss"], "-"])
    if "train_step" in v:
        rows.append(["training step (s, median)", v["train_step"]["median_s"], f["train_step"]["median_s"],
                     r["train_step"], "-"])
    if "train_memory" in v:
        rows.append(["training peak memory (MiB)", v["train_memory"]["peak_bytes"] / mib,
                     f["train_memory"]["peak_bytes"] / mib, r["train_memory"], "-"])
    rw = f" (residual width {c['residual_width']})" if c.get("residual_width") else ""
    cl = ", channels-last" if c.get("channels_last") else ""
    head = (f"Table 4 (efficiency): preset {c['preset']}{rw}{cl}, {c['frames']}x{c['size']}x{c['size']}, batch {c['batch']}, "
            f"device {c['device']}, threads {res['machine']['threads'] if c['threads'] == 0 else c['threads']}, "
            f"{c['repeats']} interleaved repeats (medians)")
    out = [head, format_table(rows, ["", "VDM", "VideoFusion", "VF / VDM", "paper (A100)"])]
    bd = res.get("breakdown")
    if bd:
        out.append("\nBreakdown of one denoiser call (interleaved medians)")
        out.append(format_table([[k, v["median_s"], v["gflops"], v["gflops_per_s"]] for k, v in bd.items()],
                                ["part", "seconds", "GFLOPs", "GFLOP/s"]))
    a = res.get("analytic")
    if a:
        gib = 1024 ** 3
        arows = [["GFLOPs / denoiser call", a["vdm"]["flops_per_step"] / 1e9, a["videofusion"]["flops_per_step"] / 1e9,
                  a["flops_per_step_ratio"]],
                 ["peak activations (GiB)", a["vdm"]["peak_activation_bytes"] / gib,
                  a["videofusion"]["peak_activation_bytes"] / gib, a["peak_activation_bytes_ratio"]],
                 ["weights + input + activations (GiB)", a["vdm"]["inference_bytes"] / gib,
                  a["videofusion"]["inference_bytes"] / gib, a["inference_bytes_ratio"]]]
        out.append(f"\nAnalytic (meta device, nothing run): preset {a['preset']}, {a['frames']}x{a['size']}x{a['size']}, "
                   f"batch {a['batch']}")
        out.append(format_table(arows, ["", "VDM", "VideoFusion", "VF / VDM"]))
    return "\n".join(out)


__all__ = ["strict_json", "EfficiencyConfig", "efficiency", "format_efficiency", "analytic_costs", "LiveTensorBytes", "count_flops",
           "peak_bytes", "interleaved_times", "summarize", "matmul_flops_per_s", "machine_info", "write_result",
           "format_table", "default_out", "PAPER_TABLE4", "VARIANTS", "build_models"]


# -- the paper protocol's wall time ---------------------------------------------------------------

PROTOCOL_GENERATORS = ("vdm", "videofusion", "vidm")


@dataclass
class ProtocolConfig:
    """``vfbench bench protocol``: how long the paper protocol (``num`` generated clips of
    ``frames x size x size`` per generator, then I3D FVD/KVD against ``num`` real clips) takes here."""

    generators: Sequence[str] = PROTOCOL_GENERATORS
    preset: str = "paper"
    frames: int = 16
    size: int = 128
    num: int = 2048
    measure_size: int = 32  # the clip size the per-step cost is measured at (scaled to ``size`` by counted FLOPs)
    batch: int = 4  # clips per measured sampling call
    sampler: Optional[str] = None  # None: each generator's own (its config's sampler and sampling_steps)
    steps: Optional[int] = None
    repeats: int = 2
    i3d_clips: int = 2
    gpu_tflops: float = 100.0  # achieved (not peak) TFLOP/s assumed for the FLOP-based GPU estimate
    threads: int = 1
    seed: int = 0

    def check(self) -> "ProtocolConfig":
        from vfbench.diffusion import check_sampler
        from vfbench.nets.unet import unet_preset_names

        for name in ("frames", "size", "num", "measure_size", "batch", "repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if isinstance(self.i3d_clips, bool) or not isinstance(self.i3d_clips, int) or self.i3d_clips < 0:
            raise UsageError(f"--i3d-clips must be a whole number >= 0 (0 skips the FVD/KVD part), got {self.i3d_clips!r}")
        if self.preset not in unet_preset_names():
            raise UsageError(f"--preset must be one of {', '.join(unet_preset_names())}, got {self.preset!r}")
        unknown = [g for g in self.generators if g not in PROTOCOL_GENERATORS]
        if unknown or not self.generators:
            raise UsageError(f"--generators must name some of {', '.join(PROTOCOL_GENERATORS)}, got "
                             f"{', '.join(self.generators) or 'none'}")
        if self.sampler is not None:
            check_sampler(self.sampler)
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise UsageError(f"--steps must be a positive integer, got {self.steps!r}")
        if not (self.gpu_tflops > 0 and math.isfinite(self.gpu_tflops)):
            raise UsageError(f"--gpu-tflops must be a positive number (achieved TFLOP/s of the GPU), got {self.gpu_tflops!r}")
        return self


def _protocol_model(name: str, preset: str, frames: int, size: int):
    from vfbench.nets.memory_format import to_channels_last
    from vfbench.registry import GENERATORS

    cls = GENERATORS.get(name)
    # measured on the CPU, in the layout `vfbench sample` uses there (memory format "auto")
    return to_channels_last(cls(cls.config_for(preset, frames, size)).eval())


def _unet_flops_ratio(name: str, preset: str, frames: int, size: int, measure_size: int) -> Optional[float]:
    """FLOPs of one denoiser call at ``size`` over those at ``measure_size`` (meta device, counted), for the
    generators ``_meta_denoiser`` builds; None for the others."""
    if name not in VARIANTS:
        return None
    big = count_flops(_meta_denoiser(name, preset, frames, size, 1)[0])
    small = count_flops(_meta_denoiser(name, preset, frames, measure_size, 1)[0])
    return big / small


def protocol_estimate(cfg: Optional[ProtocolConfig] = None, progress: Callable[[str], None] = lambda s: None
                      ) -> Dict[str, Any]:
    """Measured per-step sampling cost of each generator and I3D's per-clip cost on this machine, turned into
    the wall time of the paper protocol (module doc of ``vfbench.cli.bench``; README "benchmarks")."""
    cfg = (cfg or ProtocolConfig()).check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    res: Dict[str, Any] = {"config": asdict(cfg), "machine": machine_info(), "generators": {}}
    res["config"]["generators"] = list(cfg.generators)
    for name in cfg.generators:
        progress(f"{name}: per-step cost at {cfg.frames}x{cfg.measure_size}x{cfg.measure_size}, preset {cfg.preset}")
        torch.manual_seed(cfg.seed)
        model = _protocol_model(name, cfg.preset, cfg.frames, cfg.measure_size)
        mc = model.config
        sampler = cfg.sampler or mc.sampler
        steps = cfg.steps or mc.sampling_steps
        nfe = model.network_evaluations(steps=steps, sampler=sampler) if hasattr(model, "network_evaluations") else steps
        measure_steps = 2

        def draw():
            with torch.inference_mode():
                return model.sample(cfg.batch, torch.Generator().manual_seed(cfg.seed), steps=measure_steps,
                                    sampler="ddim", eta=0.0)

        times = interleaved_times({name: draw}, repeats=cfg.repeats, warmup=1)[name]
        per_clip_step = statistics.median(times) / (cfg.batch * measure_steps)
        flops_small = count_flops(lambda: model.sample(1, torch.Generator().manual_seed(0), steps=1,
                                                       sampler="ddim", eta=0.0))
        scale = _unet_flops_ratio(name, cfg.preset, cfg.frames, cfg.size, cfg.measure_size)
        how = "counted (meta device) at both sizes"
        if scale is None:  # convolutions scale with the pixel count; stated, not counted
            scale = (cfg.size / cfg.measure_size) ** 2
            how = "pixel-count scaling (convolutions; attention grows faster)"
        flops_clip_step = flops_small * scale
        cpu_s = per_clip_step * scale * steps * cfg.num
        res["generators"][name] = {
            "sampler": sampler, "steps": steps, "network_evaluations_per_clip": nfe,
            "measured_s_per_clip_step": per_clip_step, "measured_times_s": times,
            "measured_gflops_per_clip_step": flops_small / 1e9, "achieved_gflops_per_s": flops_small / per_clip_step / 1e9,
            "flops_scale_to_size": scale, "flops_scale_method": how,
            "gflops_per_clip_step_at_size": flops_clip_step / 1e9,
            "cpu_sampling_hours": cpu_s / 3600,
            "gpu_sampling_hours_from_flops": flops_clip_step * steps * cfg.num / (cfg.gpu_tflops * 1e12) / 3600,
        }
        del model
    res["gpu_note"] = (f"GPU: no GPU here; counted FLOPs / {cfg.gpu_tflops:g} TFLOP/s achieved (an assumption, "
                       "--gpu-tflops), not a measurement" if not torch.cuda.is_available() else
                       f"GPU present ({torch.cuda.get_device_name(0)}) but not measured: rerun the sampling on it")
    res["fvd_kvd"] = None
    if cfg.i3d_clips:
        res["fvd_kvd"] = _i3d_cost(cfg, progress)
    return res


def _i3d_cost(cfg: ProtocolConfig, progress) -> Dict[str, Any]:
    progress(f"I3D: per-clip cost at {cfg.frames}x224x224 (random weights: the speed does not depend on them)")
    from vfbench.metrics.i3d import I3D
    from vfbench.metrics.i3d_fused import FusedI3D, preprocess_ndhwc

    torch.manual_seed(cfg.seed)
    i3d = FusedI3D(I3D())
    clips = torch.randint(0, 256, (cfg.i3d_clips, cfg.frames, 3, cfg.size, cfg.size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(cfg.seed))

    def extract():
        with torch.inference_mode():
            return i3d(preprocess_ndhwc(clips))

    i3d_times = interleaved_times({"i3d": extract}, repeats=cfg.repeats, warmup=1)["i3d"]
    i3d_per_clip = statistics.median(i3d_times) / cfg.i3d_clips
    i3d_flops = count_flops(extract) / cfg.i3d_clips
    eval_clips = 2 * cfg.num  # generated + real (the real statistics are cached after the first evaluation)
    return {"measured_s_per_clip": i3d_per_clip, "measured_times_s": i3d_times, "gflops_per_clip": i3d_flops / 1e9,
                      "clips": eval_clips, "cpu_hours": i3d_per_clip * eval_clips / 3600,
                      "cpu_hours_cached_real": i3d_per_clip * cfg.num / 3600,
                      "gpu_hours_from_flops": i3d_flops * eval_clips / (cfg.gpu_tflops * 1e12) / 3600,
                      "note": "I3D features of the generated and the real clips; KVD and FVD share them (the "
                              "statistics are negligible)"}


def format_protocol(res: Dict[str, Any]) -> str:
    c = res["config"]
    f = res["fvd_kvd"] or {"cpu_hours": float("nan"), "gpu_hours_from_flops": float("nan")}
    rows = []
    for name, g in res["generators"].items():
        rows.append([name, f"{g['sampler']} {g['steps']}", g["network_evaluations_per_clip"],
                     g["measured_s_per_clip_step"], g["achieved_gflops_per_s"], g["gflops_per_clip_step_at_size"],
                     g["cpu_sampling_hours"], g["cpu_sampling_hours"] + f["cpu_hours"],
                     g["gpu_sampling_hours_from_flops"] + f["gpu_hours_from_flops"]])
    head = ["generator", "sampler", "NFE / clip", f"s / clip-step @{c['measure_size']}", "GFLOP/s achieved",
            f"GFLOPs / clip-step @{c['size']}", f"CPU h: {c['num']} samples", "CPU h: + FVD/KVD",
            "GPU h (FLOPs): all"]
    lines = [f"paper protocol: {c['num']} clips of {c['frames']}x{c['size']}x{c['size']} per generator, preset "
             f"{c['preset']}, {c['threads']} CPU thread(s); per-step cost measured at {c['measure_size']}x"
             f"{c['measure_size']} (batch {c['batch']}) and scaled by counted FLOPs",
             format_table(rows, head),
             "FVD/KVD: not measured (--i3d-clips 0)" if res["fvd_kvd"] is None else f"FVD/KVD: I3D {f['measured_s_per_clip']:.2f} s/clip ({f['gflops_per_clip']:.0f} GFLOPs) x {f['clips']} clips"
             f" = {f['cpu_hours']:.2f} CPU h ({f['cpu_hours_cached_real']:.2f} h with the real statistics cached)",
             res["gpu_note"]]
    return "\n".join(lines)
