"""Sampling VideoFusion: DDIM (Fig. 4), DDPM (Appendix A, Algorithm 1) and DPM-Solver++(2M) (Lu et al. 2022,
Algorithm 2) with decomposed noise, and long videos by the replacement method with a fixed base noise (Sec. 4.6).

Initial latents carry the decomposition, ``z_T^k = b`` and ``z_T^i = sqrt(lam_i) b + sqrt(1 - lam_i) r^i``.
Each step makes one base call on the keyframe and one batched residual call on the other frames
(``VideoFusion.guided_noise``), then the ordinary DDIM / DDPM update per frame. DPM-Solver++(2M) works on the
per-frame data prediction that Eq. 13's ``epshat^i`` gives (``x0^i = (z^i - sqrt(1 - abar) epshat^i) / sqrt(abar)``):
the decomposition lives in the initial latents and in the network's estimate, and the solver's update is
per frame, so the deterministic sampler needs no other change (it adds no fresh noise). Fresh noise of a
stochastic step (DDPM, DDIM with eta > 0) is decomposed too: ``sigma (sqrt(lam_i) b' + sqrt(1 - lam_i) r'^i)``
with a new shared ``b'`` per step.

Randomness. Two streams feed a clip: the **base** stream (``b_T`` and every ``b'``) and the **residual**
stream (``r_T`` and every ``r'``). By default each clip gets its own pair of CPU generators, seeded from
``generator`` before anything else is drawn; so clip ``j`` is the same bytes whatever ``batch_size`` and
whatever the model's device. ``base_seed`` (``residual_seed``) replaces the base (residual) stream by one
shared by every clip of the call: all clips then share ``b`` (same content, different motion) or ``r``.
``base_noise`` / ``residual_noise`` give the initial noises explicitly.
"""

from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence, Tuple

import torch

from vfbench.clips import unit_to_uint8
from vfbench.diffusion import DPMSolverPP2M, ddim_step, ddpm_step, q_sample, resolve_eta, timestep_pairs
from vfbench.errors import UsageError, check_range
from vfbench.generator import make_generator
from vfbench.generators.videofusion import KEYFRAME_PASSES
from vfbench.generators.videofusion_noise import check_overlap, decomposed_noise

_SEED_HIGH = 2 ** 62


class PerClipNoise:
    """One CPU generator per clip, seeded up front: a clip's draws do not depend on its batch."""

    def __init__(self, seeds: torch.Tensor):
        self.seeds = [int(s) for s in seeds]
        self._gens: List[torch.Generator] = []

    def begin(self, lo: int, hi: int) -> "PerClipNoise":
        self._gens = [torch.Generator().manual_seed(s) for s in self.seeds[lo:hi]]
        return self

    def draw(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in self._gens])


class SharedNoise:
    """One stream shared by every clip of a call: the k-th draw of any batch is the same tensor.

    The k-th draw comes from its own generator seeded with a hash of ``(stream, seed, k)``, so batches need
    no cache, and the base and residual streams never coincide even when given the same seed.
    """

    def __init__(self, seed: int, stream: str):
        self.seed, self.stream = int(seed), stream
        self._count, self._size = 0, 0

    def begin(self, lo: int, hi: int) -> "SharedNoise":
        self._count, self._size = 0, hi - lo
        return self

    def draw(self, shape: Sequence[int]) -> torch.Tensor:
        key = hashlib.blake2b(f"{self.stream}:{self.seed}:{self._count}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key, "little") % _SEED_HIGH)
        self._count += 1
        return torch.randn(tuple(shape), generator=g).unsqueeze(0).expand(self._size, *shape)


def _explicit_noise(noise: Optional[torch.Tensor], n: int, shape: Tuple[int, ...], option: str) -> Optional[torch.Tensor]:
    """A user's initial noise of one clip (``shape``, shared) or of each clip (``[n, *shape]``)."""
    if noise is None:
        return None
    noise = torch.as_tensor(noise, dtype=torch.float32).cpu()
    if tuple(noise.shape) == shape:
        return noise.unsqueeze(0).expand(n, *shape)
    if tuple(noise.shape) == (n, *shape):
        return noise
    raise UsageError(f"{option} must have shape {list(shape)} (shared by all clips) or {[n, *shape]}, "
                     f"got {list(noise.shape)}")


def _labels(model, n: int, labels, generator: torch.Generator) -> Optional[torch.Tensor]:
    """Class labels for class-conditional models: given (int or [n]), or drawn uniformly from ``generator``.
    The label ``num_classes`` is the null label (an unconditional sample)."""
    k = model.config.num_classes
    if k == 0:
        if labels is not None:
            raise UsageError("labels were given but this VideoFusion is unconditional (num_classes=0); drop --labels")
        return None
    if labels is None:
        return torch.randint(0, k, (n,), generator=generator, device=generator.device).cpu()
    labels = torch.as_tensor(labels).long().cpu().view(-1)
    if labels.numel() == 1:
        labels = labels.expand(n).clone()
    if labels.numel() != n or int(labels.min()) < 0 or int(labels.max()) > k:
        raise UsageError(f"labels must be one class or {n} classes in [0, {k}] ({k} = unconditional), got "
                         f"{labels.tolist()[:8]}")
    return labels


class _Plan:
    """Validated sampling options shared by ``sample_clips`` and ``sample_long_clips``."""

    def __init__(self, model, n, generator, *, base_noise=None, residual_noise=None, base_seed=None,
                 residual_seed=None, labels=None, guidance_scale=None, sampler=None, steps=None, eta=None,
                 batch_size=None, keyframe_pass=None):
        cfg = model.config
        self.keyframe_pass = cfg.keyframe_pass if keyframe_pass is None else keyframe_pass
        if self.keyframe_pass not in KEYFRAME_PASSES:
            raise UsageError(f"keyframe_pass must be one of {', '.join(KEYFRAME_PASSES)}, got {self.keyframe_pass!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"n (the number of clips) must be a positive integer, got {n!r}")
        self.sampler = cfg.sampler if sampler is None else sampler
        self.eta = resolve_eta(self.sampler, eta, cfg.eta)  # validates the sampler
        self.steps = cfg.sampling_steps if steps is None else steps
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= cfg.num_timesteps:
            raise UsageError(f"steps must be an integer in [1, {cfg.num_timesteps}], got {self.steps!r}")
        if self.sampler == "ddpm":
            # respaced ancestral sampling with the "fixed small" variance is DDIM with eta = 1
            self.eta = 1.0
        self.guidance_scale = float(check_range("guidance_scale", cfg.guidance_scale if guidance_scale is None
                                                else guidance_scale, 0))
        self.batch_size = min(n, 32) if batch_size is None else batch_size
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.pairs = timestep_pairs(cfg.num_timesteps, self.steps)
        self.full_ddpm = self.sampler == "ddpm" and self.steps == cfg.num_timesteps

        g = make_generator(generator=generator)
        seeds = torch.randint(0, _SEED_HIGH, (n, 2), generator=g, device=g.device).cpu()
        self.labels = _labels(model, n, labels, g)
        frame = (cfg.channels, cfg.size, cfg.size)
        self.base_init = _explicit_noise(base_noise, n, frame, "base_noise")
        self.residual_init = _explicit_noise(residual_noise, n, (cfg.frames, *frame), "residual_noise")
        self.base_stream = PerClipNoise(seeds[:, 0]) if base_seed is None else SharedNoise(base_seed, "base")
        self.residual_stream = (PerClipNoise(seeds[:, 1]) if residual_seed is None
                                else SharedNoise(residual_seed, "residual"))
        self.n, self.frame = n, frame

    def chunks(self):
        for lo in range(0, self.n, self.batch_size):
            hi = min(self.n, lo + self.batch_size)
            yield lo, hi, self.base_stream.begin(lo, hi), self.residual_stream.begin(lo, hi)


def denoise_window(model, plan: _Plan, base: torch.Tensor, residual: torch.Tensor, base_stream, residual_stream,
                   labels: Optional[torch.Tensor], known: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Run the reverse process on one window of N frames; returns x0 in [-1, 1], ``[B, N, C, H, W]``.

    ``base`` ``[B, C, H, W]`` and ``residual`` ``[B, N, C, H, W]`` are the initial noises (CPU). ``known``
    (``[B, o, C, H, W]`` in [-1, 1]) conditions the window by replacement (Sec. 4.6): before every model
    call the first ``o`` latents are replaced by ``q_sample(known, t, eps_window)``, a forward-noised copy
    noised with the window's own decomposed noise (so its base component is the clip's ``b``); at the
    end the known frames are returned as they were.
    """
    device = model.device
    lam, schedule = model.lam, model.schedule
    eps_window = decomposed_noise(base, residual, lam).to(device)
    z = eps_window.clone()  # z_T^k = b, z_T^i = sqrt(lam_i) b + sqrt(1 - lam_i) r^i
    size = z.shape[0]
    labels = labels.to(device) if labels is not None else None
    o = 0 if known is None else known.shape[1]
    key = model.key
    keyframe, base_hats, base_draws = None, None, None
    if model.config.residual_condition == "keyframe":
        keyframe, base_hats, base_draws = _base_first(model, plan, eps_window, base_stream, labels, known)
    # keyframe_pass="renoise": the joint pass holds the finished keyframe, forward-noised with its own base noise
    # b at every step, as training noises the real keyframe (Eq. 9, 11); a known keyframe already is (its base
    # predictions from the first pass are on exactly these latents)
    renoise = keyframe is not None and plan.keyframe_pass == "renoise" and o <= key
    solver = _solver(model, plan)
    for step, (t, t_prev) in enumerate(plan.pairs):
        t_vec = torch.full((size,), t, dtype=torch.long, device=device)
        if o:
            z[:, :o] = q_sample(schedule, known, t_vec, eps_window[:, :o])
        if renoise:
            # contiguous: a strided view of z would take another conv kernel per batch size (not bit-identical)
            z_key = q_sample(schedule, keyframe, t_vec, eps_window[:, key]).contiguous()
            z[:, key] = z_key
            base_hat = model.guided_base_noise(z_key, t_vec, labels, plan.guidance_scale)
        else:
            base_hat = None if base_hats is None else base_hats[step]
        eps_hat = model.guided_noise(z, t_vec, labels, plan.guidance_scale, keyframe=keyframe, base_hat=base_hat)
        stochastic = (t > 0) if plan.full_ddpm else (plan.eta > 0 and t_prev >= 0)
        fresh = None
        if stochastic:  # Appendix A: the added noise is decomposed too, with a new shared b'
            b_new = base_draws[step] if base_draws is not None else base_stream.draw(plan.frame)
            fresh = decomposed_noise(b_new, residual_stream.draw((model.config.frames, *plan.frame)), lam).to(device)
        z = _update(schedule, plan, z, eps_hat, t_vec, t_prev, fresh, solver)
    if o:
        z[:, :o] = known
    if renoise:
        z[:, key] = keyframe
    return z


def _solver(model, plan: _Plan) -> Optional[DPMSolverPP2M]:
    """A fresh DPM-Solver++(2M) history for one chain (None for DDIM / DDPM, which keep none)."""
    return DPMSolverPP2M(model.schedule, pairs=plan.pairs) if plan.sampler == "dpmpp_2m" else None


def _update(schedule, plan: _Plan, z, eps_hat, t_vec, t_prev, fresh, solver: Optional[DPMSolverPP2M] = None):
    if solver is not None:
        return solver.step(z, eps_hat, t_vec, t_prev)
    if plan.full_ddpm:
        return ddpm_step(schedule, z, eps_hat, t_vec, noise=fresh)
    if plan.eta > 0 and fresh is None:
        fresh = torch.zeros_like(z)  # the last step (t_prev = -1) has sigma = 0
    return ddim_step(schedule, z, eps_hat, t_vec, t_prev, eta=plan.eta, noise=fresh)


def _base_first(model, plan: _Plan, eps_window: torch.Tensor, base_stream, labels, known):
    """``residual_condition="keyframe"``: run the keyframe's chain alone first (the base generator is an image
    DPM, and the keyframe's noise is exactly ``b``, Eq. 11), so that the residual generator can be conditioned
    on the finished keyframe from the first step on, as the paper's prior gives the central frame's embedding
    before the video is denoised. Returns the keyframe, the base predictions of every step and the base
    noise draws of stochastic steps, which the joint pass reuses: its keyframe follows the same arithmetic
    and ends on the same bytes, and the base net runs once per step, as before."""
    schedule, key, device = model.schedule, model.key, model.device
    z_key = eps_window[:, key].clone()
    size = z_key.shape[0]
    known_key = known is not None and known.shape[1] > key
    hats, draws = [], []
    solver = _solver(model, plan)  # its own history: the keyframe chain runs apart from the joint pass
    for t, t_prev in plan.pairs:
        t_vec = torch.full((size,), t, dtype=torch.long, device=device)
        if known_key:
            z_key = q_sample(schedule, known[:, key], t_vec, eps_window[:, key])
        hat = model.guided_base_noise(z_key, t_vec, labels, plan.guidance_scale)
        hats.append(hat)
        stochastic = (t > 0) if plan.full_ddpm else (plan.eta > 0 and t_prev >= 0)
        raw = base_stream.draw(plan.frame) if stochastic else None  # lam_k = 1: the keyframe's fresh noise is b'
        draws.append(raw)
        z_key = _update(schedule, plan, z_key, hat, t_vec, t_prev, None if raw is None else raw.to(device), solver)
    if known_key:
        z_key = known[:, key]
    return z_key.clamp(-1.0, 1.0), hats, draws


def _initial_noises(plan: _Plan, lo: int, hi: int, base_stream, residual_stream, frames: int):
    base = plan.base_init[lo:hi] if plan.base_init is not None else base_stream.draw(plan.frame)
    residual = plan.residual_init[lo:hi] if plan.residual_init is not None else residual_stream.draw((frames, *plan.frame))
    return base, residual


class _EvalMode:
    """Sampling runs the networks in eval mode (no dropout) and restores the training flag afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def sample_clips(model, n: int, generator: Optional[torch.Generator] = None, **controls) -> torch.Tensor:
    """``n`` clips as uint8 ``[n, N, C, H, W]``.

    Controls: ``base_noise`` (``[C, H, W]`` shared, or ``[n, C, H, W]``), ``residual_noise``
    (``[N, C, H, W]`` or ``[n, N, C, H, W]``), ``base_seed``, ``residual_seed`` (see the module doc),
    ``labels`` (class-conditional models; drawn uniformly when omitted), ``guidance_scale``, ``sampler``
    (``ddim`` | ``ddpm`` | ``dpmpp_2m``, DPM-Solver++(2M), deterministic), ``steps`` (default ``sampling_steps``; DDPM with ``steps = num_timesteps`` is
    Algorithm 1 exactly, with fewer steps the respaced ancestral chain, i.e. DDIM with eta = 1), ``eta``,
    ``batch_size`` (default min(n, 32); it changes speed and memory, not the bytes: the noise is per clip;
    with the temporal residual net at toy clip lengths, e.g. 4 frames, batches of frames can take another
    conv kernel and a value can move by one uint8 level; at 16 frames the bytes are identical, tested).
    ``generator=None`` means a generator seeded with 0.
    """
    plan = _Plan(model, n, generator, **controls)
    frames = model.config.frames
    out = []
    with _EvalMode(model):
        for lo, hi, base_stream, residual_stream in plan.chunks():
            base, residual = _initial_noises(plan, lo, hi, base_stream, residual_stream, frames)
            labels = plan.labels[lo:hi] if plan.labels is not None else None
            x0 = denoise_window(model, plan, base, residual, base_stream, residual_stream, labels)
            out.append(unit_to_uint8(x0).cpu())
    return torch.cat(out)


@torch.no_grad()
def sample_long_clips(model, n: int, length: int, generator: Optional[torch.Generator] = None, *,
                      overlap: Optional[int] = None, **controls) -> torch.Tensor:
    """``n`` clips of ``length`` frames, uint8 ``[n, length, C, H, W]`` (Sec. 4.6).

    The first window is exactly ``sample_clips`` with the same arguments. Each next window shares
    ``overlap`` frames with the video so far: it is denoised with those frames known (replacement at every
    step), the **same base noise** ``b`` as the first window and fresh residual noise from the residual
    stream, and contributes its N - overlap new frames.

    In VideoFusion the frames of a window interact only through the keyframe: ``bhat`` comes from the
    keyframe latent and the residual generator sees one frame at a time (Eq. 12-13). Replacement therefore
    conditions the new frames only when the keyframe position ``N // 2`` is among the known ones, so the
    default overlap is ``N // 2 + 1`` (the known frames occupy positions ``0 .. overlap - 1``). A smaller
    overlap links windows through the shared ``b`` alone.
    """
    frames = model.config.frames
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise UsageError(f"length must be a positive number of frames, got {length!r}")
    overlap = min(frames // 2 + 1, frames - 1) if overlap is None else overlap
    check_overlap(overlap, frames)
    plan = _Plan(model, n, generator, **controls)
    out = []
    with _EvalMode(model):
        for lo, hi, base_stream, residual_stream in plan.chunks():
            base, residual = _initial_noises(plan, lo, hi, base_stream, residual_stream, frames)
            labels = plan.labels[lo:hi] if plan.labels is not None else None
            video = [denoise_window(model, plan, base, residual, base_stream, residual_stream, labels)]
            have = frames
            while have < length:
                known = torch.cat(video, dim=1)[:, have - overlap:have] if overlap else None
                residual = residual_stream.draw((frames, *plan.frame))
                window = denoise_window(model, plan, base, residual, base_stream, residual_stream, labels, known)
                video.append(window[:, overlap:])
                have += frames - overlap
            out.append(unit_to_uint8(torch.cat(video, dim=1)[:, :length]).cpu())
    return torch.cat(out)


__all__ = ["sample_clips", "sample_long_clips", "denoise_window", "PerClipNoise", "SharedNoise"]
