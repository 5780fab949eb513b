"""Does a generator learn? Memorisation known answers (tests/test_learning.py, ``vfbench check learning``).

A generator trained on one clip (or a handful) must give that clip back when sampled with its default
sampler: the one-clip data distribution is a point, so every sample should land on it. A decreasing
loss does not show this: an eps-predicting net can reach a small loss and still sample noise (the
README's "Generators that learn" has the numbers). Two checks:

* ``memorise``: train with the shared trainer (AdamW, EMA, clipping: the real recipe), load the EMA
  weights, sample, and measure each sample's RMSE in uint8 levels to its nearest training clip
  (``nearest_clip_rmse``);
* ``denoise_from``: start the default sampler from a correctly noised training clip at step ``t``
  and run it to the end; a net that learnt its data returns the clip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from vfbench.clips import check_clips, uint8_to_unit, unit_to_uint8
from vfbench.diffusion import ddim_step, q_sample, timestep_pairs
from vfbench.errors import UsageError


class ClipSet(torch.utils.data.Dataset):
    """A fixed set of uint8 clips ``[K, T, C, H, W]`` as a training dataset (labels absent)."""

    def __init__(self, clips: torch.Tensor):
        self.clips = check_clips(clips, "clips")

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {"video": self.clips[index], "label": -1, "content": -1, "motion": -1}


def nearest_clip_rmse(samples: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
    """For every sample, the RMSE in uint8 levels to the nearest of ``clips`` (both uint8 ``[*, T, C, H, W]``)."""
    s = check_clips(samples, "samples").double().flatten(1)
    c = check_clips(clips, "clips").double().flatten(1)
    if s.shape[1] != c.shape[1]:
        raise UsageError(f"samples and clips must have the same clip shape, got {tuple(samples.shape[1:])} and "
                         f"{tuple(clips.shape[1:])}")
    return torch.cdist(s, c).min(dim=1).values / s.shape[1] ** 0.5


def build(name: str, clips: torch.Tensor, preset: str = "tiny", overrides: Optional[Mapping[str, Any]] = None):
    """A fresh generator ``name`` at ``preset`` for the clip shape of ``clips``."""
    from vfbench.config import from_dict, merge, to_dict
    from vfbench.registry import GENERATORS

    cls = GENERATORS.get(name)
    _, frames, _, size, _ = clips.shape
    cfg = cls.config_for(preset, frames, size)
    if overrides:
        cfg = from_dict(type(cfg), merge(to_dict(cfg), dict(overrides)), where=f"{name} config")
    return cls(cfg)


def memorise(name: str, clips: torch.Tensor, *, steps: int, lr: float, batch_size: int = 8, seed: int = 0,
             preset: str = "tiny", overrides: Optional[Mapping[str, Any]] = None, precision: str = "fp32",
             ema_decay: float = 0.999, run_dir: Optional[Path] = None):
    """Train generator ``name`` on ``clips`` with the shared trainer; returns ``(model with EMA weights, summary)``."""
    from vfbench.training import TrainConfig, train

    torch.manual_seed(seed)  # parameter initialisation
    model = build(name, clips, preset, overrides)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, precision=precision, device="cpu",
                      ema_decay=ema_decay, ckpt_every=steps, log_every=max(1, steps // 10))
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(Path(run_dir or tmp), model, ClipSet(clips), cfg, progress=False)
        state = torch.load(summary["checkpoint"], map_location="cpu", weights_only=True)
    model.load_state_dict(state["ema"])
    model.eval()
    return model, summary


@torch.no_grad()
def denoise_from(model, clips: torch.Tensor, t: int, seed: int = 0, steps: Optional[int] = None) -> torch.Tensor:
    """Noise ``clips`` (uint8) to step ``t`` with the model's own forward process and run its DDIM sampler
    (``steps`` respaced steps over the full chain, default the model's) from there to the end.

    VideoFusion noises with its decomposed noise (Eq. 9) and VIDM frame by frame along its autoregressive
    chain (content frame, then each motion frame conditioned on the frames made before it); VDM with
    i.i.d. noise. Returns uint8 clips like ``clips``.
    """
    g = torch.Generator().manual_seed(seed)
    x0 = uint8_to_unit(check_clips(clips, "clips")).to(model.device)
    cfg = model.config
    pairs = [(a, b) for a, b in timestep_pairs(cfg.num_timesteps, steps or cfg.sampling_steps) if a <= t]
    if not pairs:
        raise UsageError(f"t={t} is below the sampler's first step; pass a larger t")
    if getattr(model, "name", "") == "vidm":
        return _vidm_denoise_from(model, x0, pairs, g)
    if getattr(model, "name", "") == "videofusion":
        from vfbench.generators.videofusion_noise import decomposed_noise

        noise = decomposed_noise(torch.randn(x0.shape[0], *x0.shape[2:], generator=g), torch.randn(x0.shape, generator=g),
                                 model.lam).to(x0.device)
    else:
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
    start = torch.full((x0.shape[0],), pairs[0][0], dtype=torch.long)
    z = q_sample(model.schedule, x0, start.to(x0.device), noise)
    extra = [{} for _ in pairs]
    if getattr(model.config, "residual_condition", None) == "keyframe":
        # VideoFusion's sampler: the keyframe's chain first, then every frame conditioned on the finished keyframe
        z_key = z[:, model.key].clone()
        for i, (a, b) in enumerate(pairs):
            tv = torch.full((x0.shape[0],), a, dtype=torch.long, device=x0.device)
            extra[i]["base_hat"] = model.guided_base_noise(z_key, tv, None, 1.0)
            z_key = ddim_step(model.schedule, z_key, extra[i]["base_hat"], tv, b)
        keyframe = z_key.clamp(-1, 1)
        for e in extra:
            e["keyframe"] = keyframe
    renoise = bool(extra and "keyframe" in extra[0]) and model.config.keyframe_pass == "renoise"
    for (a, b), kw in zip(pairs, extra):
        tv = torch.full((x0.shape[0],), a, dtype=torch.long, device=x0.device)
        if renoise:  # the joint pass holds the finished keyframe noised with its base noise (videofusion_sampling)
            z[:, model.key] = q_sample(model.schedule, kw["keyframe"], tv, noise[:, model.key])
            kw = {**kw, "base_hat": model.guided_base_noise(z[:, model.key].contiguous(), tv, None, 1.0)}
        z = ddim_step(model.schedule, z, model.predict_noise(z, tv, **kw), tv, b)
    if renoise:
        z[:, model.key] = extra[0]["keyframe"]
    return unit_to_uint8(z).cpu()


def _vidm_denoise_from(model, x0: torch.Tensor, pairs, g: torch.Generator) -> torch.Tensor:
    from vfbench.prediction import output_to_eps

    cfg, s = model.config, model.schedule
    b = x0.shape[0]

    def run(frame: torch.Tensor, net) -> torch.Tensor:
        start = torch.full((b,), pairs[0][0], dtype=torch.long, device=frame.device)
        z = q_sample(s, frame, start, torch.randn(frame.shape, generator=g).to(frame.device))
        for a, p in pairs:
            tv = torch.full((b,), a, dtype=torch.long, device=frame.device)
            z = ddim_step(s, z, output_to_eps(s, z, tv, net(z, tv), cfg.prediction), tv, p)
        return model._as_frame(z)

    first = run(x0[:, 0], lambda z, tv: model.content(z, tv, None))
    out = [first]
    for k in range(1, x0.shape[1]):
        code = model.motion.motion_code(first, out[-1])
        index = torch.full((b,), k, dtype=torch.long, device=x0.device)
        out.append(run(x0[:, k], lambda z, tv: model.motion(z, tv, index, first, code, None)))
    return unit_to_uint8(torch.stack(out, dim=1)).cpu()


__all__ = ["ClipSet", "nearest_clip_rmse", "build", "memorise", "denoise_from"]
