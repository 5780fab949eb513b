"""VideoFusion's decomposed noise (Luo et al., CVPR 2023, Sec. 3.2-3.3): pure tensor math, no networks.

A clip of N frames ``x^i`` (0-based here; the paper is 1-based) is noised with one **base noise**
``b`` shared by every frame and a per-frame **residual noise** ``r^i``:

    eps^i = sqrt(lam_i) b + sqrt(1 - lam_i) r^i                 (Eq. 7, with b shared)
    z_t^i = sqrt(abar_t) x^i + sqrt(1 - abar_t) eps^i            (Eq. 9)

with the keyframe ``k = N // 2`` carrying ``lam_k = 1`` so its noise is exactly ``b`` (Eq. 11).
Every ``eps^i`` is still N(0, I); two non-key frames' noises have correlation ``lam``. The
denoising side removes the predicted base noise before the residual generator (Eq. 12) and
recombines the two predictions (Eq. 13).

Shapes: a clip batch is ``[B, N, C, H, W]``, base noise ``[B, C, H, W]``, residual noise
``[B, N, C, H, W]`` (the keyframe's residual entry is drawn too, so the random streams do not
depend on lambda, but it is multiplied by ``sqrt(1 - lam_k) = 0``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from vfbench.diffusion import DiffusionSchedule, Timesteps, q_sample
from vfbench.errors import UsageError

LambdaSpec = Union[float, Sequence[float]]


def keyframe_index(frames: int) -> int:
    """The base frame ``floor(N / 2)`` of Sec. 3.3 (frame 8 of 16, 0-based)."""
    return frames // 2


def lambda_vector(lam: LambdaSpec, frames: int) -> Tuple[float, ...]:
    """The per-frame ``lam_i`` of Eq. 7: ``lam_k = 1`` at the keyframe, ``lam`` elsewhere (Sec. 3.3).

    ``lam`` is either one number for every non-key frame or a full vector of ``frames`` entries whose
    keyframe entry must be 1 (the keyframe is the base frame itself, ``Delta x^k = 0``).
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise UsageError(f"frames must be a positive integer, got {frames!r}")
    k = keyframe_index(frames)
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        _check_lambda_value(float(lam), "lam")
        return tuple(1.0 if i == k else float(lam) for i in range(frames))
    values = tuple(float(v) for v in lam)
    if len(values) != frames:
        raise UsageError(f"lam has {len(values)} per-frame values but the clip has {frames} frames;"
                         f" give one number or exactly {frames} values")
    for i, v in enumerate(values):
        _check_lambda_value(v, f"lam[{i}]")
    if values[k] != 1.0:
        raise UsageError(f"lam[{k}] (the keyframe N // 2) must be 1 because the keyframe is the base frame"
                         f" (Eq. 11), got {values[k]!r}")
    return values


def _check_lambda_value(value: float, option: str) -> None:
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise UsageError(f"{option} must be in [0, 1] (the share of the base noise in each frame), got {value!r}")


def lambda_tensor(lam: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """``lam`` as ``[1, N, 1, 1, 1]`` in ``like``'s dtype/device, to broadcast over ``[B, N, C, H, W]``."""
    return torch.tensor(lam, dtype=torch.float64).to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1, 1)


def decomposed_noise(base: torch.Tensor, residual: torch.Tensor, lam: Sequence[float]) -> torch.Tensor:
    """Eq. 7 with a shared base noise: ``eps^i = sqrt(lam_i) b + sqrt(1 - lam_i) r^i``.

    ``base`` is ``[B, C, H, W]`` (one per clip), ``residual`` ``[B, N, C, H, W]``; returns ``[B, N, C, H, W]``.
    """
    if base.ndim != 4 or residual.ndim != 5 or base.shape != residual.shape[:1] + residual.shape[2:]:
        raise UsageError(f"base noise must be [B, C, H, W] and residual noise [B, N, C, H, W] of the same clip"
                         f" shape, got {tuple(base.shape)} and {tuple(residual.shape)}")
    if residual.shape[1] != len(lam):
        raise UsageError(f"residual noise has {residual.shape[1]} frames but lambda has {len(lam)} entries")
    lam_t = lambda_tensor(lam, residual)
    return lam_t.sqrt() * base.unsqueeze(1) + (1.0 - lam_t).sqrt() * residual


def decomposed_q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: Timesteps, base: torch.Tensor,
                        residual: torch.Tensor, lam: Sequence[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9 / 11: noise every frame of a clip at its clip's step ``t`` with the decomposed noise.

    Returns ``(z_t, eps)``, both ``[B, N, C, H, W]``. One ``t`` per clip, shared by its frames.
    """
    eps = decomposed_noise(base, residual, lam)
    return q_sample(schedule, x0, t, eps), eps


def remove_base_noise(schedule: DiffusionSchedule, z_t: torch.Tensor, t: torch.Tensor, base_hat: torch.Tensor,
                      lam: Sequence[float]) -> torch.Tensor:
    """Eq. 12: ``z'^i_t = z_t^i - sqrt(lam_i) sqrt(1 - abar_t) bhat`` for the frames in ``z_t``.

    ``z_t`` is ``[B, M, C, H, W]`` (usually the M = N - 1 non-key frames), ``t`` ``[B]``, ``base_hat``
    ``[B, C, H, W]`` and ``lam`` the M matching lambda values.
    """
    coef = schedule.sqrt_one_minus_abar[t.detach().cpu()].to(device=z_t.device, dtype=z_t.dtype).view(-1, 1, 1, 1, 1)
    return z_t - lambda_tensor(lam, z_t).sqrt() * coef * base_hat.unsqueeze(1)


def residual_process(schedule: DiffusionSchedule, t: torch.Tensor, lam: Sequence[float], like: torch.Tensor):
    """The diffusion process the residual generator sees after Eq. 12.

    ``z'^i = sqrt(abar_t) x^i + sqrt(1 - abar_t) sqrt(1 - lam_i) r^i`` is a diffusion latent of ``x^i`` whose
    noise ``r^i`` has std ``s_i = sqrt((1 - abar_t)(1 - lam_i))`` and whose signal has ``a = sqrt(abar_t)``.
    Normalised by ``c = sqrt(a^2 + s_i^2)`` it is ``z'/c = alpha x + sigma r`` with ``alpha^2 + sigma^2 = 1``,
    the form in which v- and x0-prediction are defined (``vfbench.prediction``). Returns
    ``(alpha, sigma, c)``, each ``[B, M, 1, 1, 1]`` in ``like``'s compute dtype (float32 or wider).
    """
    dt = torch.promote_types(like.dtype, torch.float32)
    idx = t.detach().cpu()
    abar = schedule.alphas_cumprod[idx].view(-1, 1)
    lam_t = torch.tensor([float(v) for v in lam], dtype=torch.float64).view(1, -1)
    a2, s2 = abar.expand(-1, lam_t.shape[1]), (1.0 - abar) * (1.0 - lam_t)
    c = (a2 + s2).sqrt()
    shape = (idx.shape[0], lam_t.shape[1], 1, 1, 1)
    out = (a2.sqrt() / c, s2.sqrt() / c, c)
    return tuple(v.reshape(shape).to(device=like.device, dtype=dt) for v in out)


def residual_output_to_noise(z_prime: torch.Tensor, output: torch.Tensor, process, prediction: str) -> torch.Tensor:
    """``rhat`` (the residual noise estimate of Eq. 13) from the residual generator's output, which is
    ``r`` (eps), ``v = alpha r - sigma x`` (v) or ``x`` (x0) of ``residual_process``."""
    if prediction == "eps":
        return output
    alpha, sigma, c = process
    z = z_prime.to(alpha.dtype) / c
    o = output.to(alpha.dtype)
    # frames with lam_i = 1 have sigma = 0: their residual is multiplied by sqrt(1 - lam_i) = 0 in Eq. 13
    r = sigma * z + alpha * o if prediction == "v" else (z - alpha * o) / sigma.clamp_min(1e-12)
    return r  # in the compute dtype: a bf16 rounding here is amplified like output_to_eps's (vfbench.prediction)


def residual_target(x0: torch.Tensor, residual_noise: torch.Tensor, process, prediction: str) -> torch.Tensor:
    """The residual generator's regression target for clean frames ``x0`` and the residual noise it must
    find in ``z'`` (``residual_noise``; Eq. 14's effective target)."""
    if prediction == "eps":
        return residual_noise
    if prediction == "x0":
        return x0
    alpha, sigma, _ = process
    return alpha * residual_noise.to(alpha.dtype) - sigma * x0.to(alpha.dtype)


def compose_noise(base_hat: torch.Tensor, residual_hat: torch.Tensor, lam: Sequence[float], key: int) -> torch.Tensor:
    """Eq. 13: ``epshat^k = bhat`` and ``epshat^i = sqrt(lam_i) bhat + sqrt(1 - lam_i) rhat^i`` (i != k).

    ``base_hat`` is ``[B, C, H, W]``, ``residual_hat`` the ``[B, N - 1, C, H, W]`` predictions for the
    non-key frames in frame order; returns the full ``[B, N, C, H, W]`` predicted noise.
    """
    others = non_key_indices(len(lam), key)
    lam_other = [lam[i] for i in others]
    lam_t = lambda_tensor(lam_other, residual_hat)
    eps_other = lam_t.sqrt() * base_hat.unsqueeze(1) + (1.0 - lam_t).sqrt() * residual_hat
    return torch.cat([eps_other[:, :key], base_hat.unsqueeze(1), eps_other[:, key:]], dim=1)


def non_key_indices(frames: int, key: int) -> list:
    return [i for i in range(frames) if i != key]


# -- explicit noise sharing (Sec. 4.7) ------------------------------------------------------------

def group_ids(labels: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """Map labels to noise groups: equal labels >= 0 share a group; -1 (no label) is its own group.

    Groups are numbered by sorted label value first, then unlabelled clips in batch order, so the
    draw order (and therefore the bytes) depends only on the labels, not on how they are stored.
    """
    if labels is None:
        return torch.arange(batch)
    labels = torch.as_tensor(labels).detach().cpu().long().view(-1)
    if labels.numel() != batch:
        raise UsageError(f"noise-sharing labels have {labels.numel()} entries but the batch has {batch} clips")
    ids = torch.empty(batch, dtype=torch.long)
    known = labels >= 0
    uniq, inverse = torch.unique(labels[known], sorted=True, return_inverse=True)
    ids[known] = inverse
    ids[~known] = torch.arange(int((~known).sum())) + len(uniq)
    return ids


def draw_shared(shape: Sequence[int], ids: torch.Tensor, generator: Optional[torch.Generator],
                device: Union[str, torch.device], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One N(0, I) draw of ``shape`` per group, gathered to the batch: clips in a group get the same noise.

    Draws on the generator's device (the CPU default generator when ``generator`` is None, see
    ``VideoFusion.loss``) and moves to ``device``, so the bytes do not depend on the model's device.
    """
    num_groups = int(ids.max()) + 1 if ids.numel() else 0
    src = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn((num_groups, *shape), generator=generator, device=src, dtype=torch.float32)
    return noise[ids.to(src)].to(device=device, dtype=dtype)


def check_overlap(overlap: int, frames: int) -> int:
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < frames:
        raise UsageError(f"overlap must be an integer in [0, {frames - 1}] (frames shared by consecutive windows),"
                         f" got {overlap!r}")
    return overlap


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Empirical Pearson correlation of two equally shaped tensors (used by tests and diagnostics)."""
    a = a.double().flatten() - a.double().mean()
    b = b.double().flatten() - b.double().mean()
    return float((a @ b) / math.sqrt(float(a @ a) * float(b @ b)))
