"""Long VDM videos by reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", Sec. 3.1, Eq. 7).

A VDM denoises windows of N = ``config.frames`` frames. ``sample_long_clips`` makes a clip of any length
window by window: the first window is an ordinary sample; every next window shares ``overlap`` frames
with the video so far (the known frames x^a, at window positions ``0 .. overlap-1``) and contributes its
``N - overlap`` new frames x^b.

At every denoising step t of a conditioned window (our notation: abar_t = prod alpha, so the VDM paper's
alpha_t is ``sqrt(abar_t)`` and its sigma_t is ``sqrt(1 - abar_t)``):

1. the known frames' latents are replaced by a forward-noised copy, ``z^a_t = q_sample(x^a, t, eps')`` with
   fresh noise eps' from the clip's own stream (the replacement method, Sec. 3.1);
2. the model predicts eps for the whole window (with classifier-free guidance for class-conditional
   models) and ``x_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``;
3. reconstruction guidance (Eq. 7) corrects the new frames' prediction:
   ``x~^b = x_hat^b - (w_r sqrt(abar_t) / 2) grad_{z^b_t} || x^a - x_hat^a(z_t) ||^2``
   (the gradient flows through the denoiser; the model's parameters receive none);
4. ``eps~^b = (z^b_t - sqrt(abar_t) x~^b) / sqrt(1 - abar_t)`` replaces eps^b in the usual DDIM / DDPM step
   (``vfbench.diffusion.ddim_step`` / ``ddpm_step``, exactly as ``VDM.sample``).

``w_r = 0`` is plain replacement sampling (no gradient is computed). With ``w_r = 1`` Eq. 7 is the
conditional mean under the paper's Gaussian approximation ``q(x^a | z_t) ~ N(x_hat^a, (sigma_t^2 /
alpha_t^2) I)``; the paper reports that larger weights (``w_r > 1``) work better than that and than plain
replacement. The default here, ``RECONSTRUCTION_WEIGHT = 2.0`` (defined in ``vdm.py``), is our choice, not
a number taken from the paper: a moderate ``w_r > 1``. On tiny test models every weight from 1 to 50
lowered the known frames' reconstruction error ``|| x^a - x_hat^a ||^2`` below replacement's, with the
gain levelling off near 5-10 and shrinking again beyond (Eq. 7 is a first-order step: very large weights
overshoot, and ``x_hat`` is clipped to [-1, 1]). A random tiny net says little about a trained one, so
the default stays close to the theoretical 1; tune it per model with ``guidance_weight=``.

The known frames are the *returned* frames (quantised through uint8), so every window conditions on
exactly the bytes the caller receives, and the returned video keeps them unchanged.

Randomness, as in ``VDM.sample``: from ``generator`` come the labels (if drawn) and one seed per clip;
every noise of a clip (each window's initial noise, per-step noise, the forward noising of its known
frames) comes from that clip's own generator, so clips do not depend on ``batch_size`` (up to float
rounding) and the same generator state gives the same bytes. The draws of the first window are exactly
those of ``VDM.sample``, so the first N frames of ``sample_long(n, L, g)`` are ``sample(n, g)`` (bit for
bit at the same ``batch_size``); a clip's label is the same in all its windows.

Cost: a conditioned window with ``w_r > 0`` makes one forward and one backward pass through the U-Net per
step (about 2.5x a plain window on a CPU at the ``small`` preset; with ``w_r = 0`` about 1.1x);
``ceil((L - N) / (N - overlap))`` windows follow the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from vfbench.clips import uint8_to_unit, unit_to_uint8
from vfbench.diffusion import DPMSolverPP2M, ddim_step, ddpm_step, q_sample, resolve_eta, timestep_pairs
from vfbench.errors import UsageError, check_range, did_you_mean
from vfbench.generators.vdm import RECONSTRUCTION_WEIGHT, SAMPLE_CONTROLS

LONG_CONTROLS = SAMPLE_CONTROLS + ("overlap", "guidance_weight")


@dataclass
class SamplingPlan:
    """Validated sampling options of one ``VDM.sample`` or ``sample_long_clips`` call."""

    pairs: List[Tuple[int, int]]
    sampler: str
    eta: float
    scale: float  # classifier-free guidance scale
    batch_size: int
    labels: Optional[torch.Tensor]  # [n] on the CPU, or None (unconditional)
    seeds: List[int]  # one per clip
    noise_device: torch.device


def make_plan(model, n: int, generator: Optional[torch.Generator] = None, *, batch_size: Optional[int] = None,
              sampler: Optional[str] = None, steps: Optional[int] = None, eta: Optional[float] = None,
              labels=None, guidance_scale: Optional[float] = None) -> SamplingPlan:
    """Resolve the controls (defaults from the config) and draw the labels, then one seed per clip, from
    ``generator``: the randomness contract of ``VDM.sample``."""
    c = model.config
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"the number of clips to sample must be a positive integer, got {n!r}")
    sampler = sampler or c.sampler
    steps = c.sampling_steps if steps is None else steps
    eta = resolve_eta(sampler, eta, c.eta)  # validates the sampler
    scale = c.guidance_scale if guidance_scale is None else float(guidance_scale)
    check_range("guidance_scale", scale, 0)
    batch_size = min(n, 32) if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    if sampler == "ddpm" and steps == c.num_timesteps:
        pairs = [(t, t - 1) for t in range(c.num_timesteps - 1, -1, -1)]
    else:
        pairs = timestep_pairs(c.num_timesteps, steps)  # validates steps
        if sampler == "ddpm":
            eta = 1.0
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    class_labels = model._sample_labels(n, labels, generator)
    seeds = torch.randint(0, 2 ** 62, (n,), generator=generator, device=generator.device).tolist()
    return SamplingPlan(pairs, sampler, eta, scale, batch_size, class_labels, seeds, generator.device)


class ClipNoise:
    """One generator per clip (seeded from the plan): the k-th draw of a clip never depends on its batch."""

    def __init__(self, seeds: Sequence[int], noise_device, device):
        self.gens = [torch.Generator(device=noise_device).manual_seed(int(s)) for s in seeds]
        self.noise_device, self.device = noise_device, device

    def draw(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.noise_device)
                            for g in self.gens]).to(self.device)


def check_overlap(overlap, frames: int) -> int:
    if frames < 2:
        raise UsageError(f"long VDM videos need windows of at least 2 frames to overlap, but this VDM makes {frames};"
                         " train it with --frames 2 or more")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= frames - 1:
        raise UsageError(f"overlap must be an integer in [1, {frames - 1}] (frames each new window shares with the"
                         f" video so far), got {overlap!r}; pass e.g. overlap={frames // 2}")
    return overlap


def check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise UsageError(f"guidance_weight (the reconstruction guidance weight w_r) must be a finite number >= 0"
                         f" (0 = plain replacement), got {weight!r}; e.g. guidance_weight={RECONSTRUCTION_WEIGHT}")
    return float(weight)


def _reconstruction_guided_eps(model, z: torch.Tensor, t_vec: torch.Tensor, labels, scale: float,
                               known: torch.Tensor, weight: float, sqrt_abar: float, sqrt_1m_abar: float,
                               record: Optional[list]) -> torch.Tensor:
    """eps for the window with the new frames' prediction corrected by Eq. 7 (see the module doc)."""
    o = known.shape[1]
    with torch.enable_grad():
        z_in = z.detach().requires_grad_(True)
        eps = model.guided_noise(z_in, t_vec, labels, scale).float()
        x_hat = (z_in - sqrt_1m_abar * eps) / sqrt_abar
        err = (known - x_hat[:, :o]).square().flatten(1).sum(1)  # || x^a - x_hat^a ||^2 per clip
        # the clips of a batch are independent (per-sample norms and attention), so the gradient of the
        # sum is each clip's own gradient; only z is differentiated, the parameters get no .grad
        (grad,) = torch.autograd.grad(err.sum(), z_in)
    if record is not None:
        record.append(err.detach() / known[0].numel())
    eps, x_hat = eps.detach(), x_hat.detach()
    x_tilde_b = x_hat[:, o:] - (weight * sqrt_abar / 2) * grad[:, o:]  # Eq. 7
    eps_tilde_b = (z[:, o:] - sqrt_abar * x_tilde_b) / sqrt_1m_abar
    return torch.cat([eps[:, :o], eps_tilde_b], dim=1)


def denoise_window(model, plan: SamplingPlan, noise: ClipNoise, labels: Optional[torch.Tensor],
                   known: Optional[torch.Tensor] = None, weight: float = 0.0,
                   record: Optional[list] = None) -> torch.Tensor:
    """One window of N frames, ``[B, N, C, H, W]`` in [-1, 1] (float, on the model's device).

    ``known`` (``[B, o, C, H, W]`` in [-1, 1]) are the frames at positions ``0 .. o-1``: replaced by a
    forward-noised copy at every step, and, with ``weight > 0``, used for reconstruction guidance of the
    other frames (Ho et al. 2022, Sec. 3.1, Eq. 7). Without ``known`` this is exactly ``VDM.sample``'s
    chain (same draws, same arithmetic). ``record``, if a list, receives per step the reconstruction error
    ``mean (x^a - x_hat^a)^2`` of each clip (a tensor ``[B]``; a diagnostic for tests and tuning).
    """
    c, schedule = model.config, model.schedule
    shape = (c.frames, c.channels, c.size, c.size)
    z = noise.draw(shape)
    b = z.shape[0]
    o = 0 if known is None else known.shape[1]
    solver = DPMSolverPP2M(schedule, pairs=plan.pairs) if plan.sampler == "dpmpp_2m" else None  # this window's history
    for t, t_prev in plan.pairs:
        t_vec = torch.full((b,), t, dtype=torch.long, device=model.device)
        if o:
            z = torch.cat([q_sample(schedule, known, t_vec, noise.draw((o, *shape[1:]))), z[:, o:]], dim=1)
        sqrt_abar, sqrt_1m_abar = float(schedule.sqrt_abar[t]), float(schedule.sqrt_one_minus_abar[t])
        if o and weight > 0:
            eps = _reconstruction_guided_eps(model, z, t_vec, labels, plan.scale, known, weight, sqrt_abar,
                                             sqrt_1m_abar, record)
        else:
            eps = model.guided_noise(z, t_vec, labels, plan.scale).float()
            if o and record is not None:
                x_hat_a = (z[:, :o] - sqrt_1m_abar * eps[:, :o]) / sqrt_abar
                record.append((known - x_hat_a).square().flatten(1).mean(1))
        if solver is not None:
            z = solver.step(z, eps, t_vec, t_prev)
        elif plan.sampler == "ddpm" and t_prev == t - 1:
            z = ddpm_step(schedule, z, eps, t, noise=noise.draw(shape) if t > 0 else None)
        else:
            z = ddim_step(schedule, z, eps, t, t_prev, eta=plan.eta,
                          noise=noise.draw(shape) if plan.eta > 0 and t_prev >= 0 else None)
    return z


@torch.no_grad()
def sample_long_clips(model, n: int, length: int, generator: Optional[torch.Generator] = None, *,
                      overlap: Optional[int] = None, guidance_weight: Optional[float] = None,
                      **controls) -> torch.Tensor:
    """``n`` clips of ``length`` frames, uint8 ``[n, length, C, H, W]`` on the CPU, by reconstruction-guided
    extension (Ho et al. 2022, Sec. 3.1, Eq. 7; the module doc has the algorithm).

    ``overlap`` (default ``N // 2``): frames each new window shares with the video so far, in
    ``[1, N - 1]``. ``guidance_weight`` (w_r, default ``RECONSTRUCTION_WEIGHT`` = 2.0; 0 = plain
    replacement). The other controls are ``VDM.sample``'s (``batch_size``, ``sampler``, ``steps``, ``eta``,
    ``labels``, ``guidance_scale``). A ``length`` up to N gives the first window's first ``length`` frames.
    """
    if controls:
        unknown = sorted(k for k in controls if k not in SAMPLE_CONTROLS)
        if unknown:
            raise UsageError(did_you_mean("VDM long-video sampling control", unknown[0], LONG_CONTROLS))
    frames = model.config.frames
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise UsageError(f"length must be a positive number of frames, got {length!r}")
    overlap = check_overlap(frames // 2 if overlap is None else overlap, frames)
    weight = check_weight(RECONSTRUCTION_WEIGHT if guidance_weight is None else guidance_weight)
    plan = make_plan(model, n, generator, **controls)

    def long_clips(noise: ClipNoise, labels: Optional[torch.Tensor]) -> torch.Tensor:
        video = [unit_to_uint8(denoise_window(model, plan, noise, labels))]
        have = frames
        while have < length:
            known = uint8_to_unit(torch.cat(video, dim=1)[:, -overlap:])  # the returned bytes
            window = denoise_window(model, plan, noise, labels, known, weight)
            video.append(unit_to_uint8(window[:, overlap:]))
            have += frames - overlap
        return torch.cat(video, dim=1)[:, :length]

    return sample_in_batches(model, plan, long_clips)


def sample_in_batches(model, plan: SamplingPlan, make_clips) -> torch.Tensor:
    """``make_clips(noise, labels)`` (uint8) for each batch of ``plan.batch_size`` clips, in eval mode, with
    each batch's own per-clip noise streams; the results concatenated on the CPU."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(plan.seeds), plan.batch_size):
            noise = ClipNoise(plan.seeds[start:start + plan.batch_size], plan.noise_device, model.device)
            labels = plan.labels[start:start + plan.batch_size].to(model.device) if plan.labels is not None else None
            out.append(make_clips(noise, labels).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


__all__ = ["sample_long_clips", "sample_in_batches", "denoise_window", "make_plan", "ClipNoise", "SamplingPlan",
           "LONG_CONTROLS"]
