"""What a denoiser predicts, and how its loss is weighted over timesteps.

Three parameterisations of the network output at ``z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``:

* ``eps``: the noise (DDPM, Ho et al. 2020 Eq. 14; the VideoFusion paper's choice, Table 8);
* ``v``: ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022, "Progressive
  Distillation", Sec. 4 and App. D; Imagen Video and most video diffusion models since);
* ``x0``: the clean sample.

They define the same model family, but not the same learning problem for a small, briefly trained
net. With ``eps`` the sampler's clean estimate is ``x0 = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``:
an eps error ``e`` becomes an x0 error ``e * sqrt(1/abar_t - 1)``, 22,000x at the cosine schedule's
last step and still 1x at mid t, where the whole signal of a ``shapes`` clip has std 0.15. With ``v``
the clean estimate is ``sqrt(abar_t) z_t - sqrt(1 - abar_t) v_hat``, whose error never exceeds v's;
with ``x0`` the net outputs it directly. Measured on one memorised ``shapes`` clip (README, "Generators
that learn"): eps-prediction sampled 57-64 uint8 levels away from it, v-prediction 16-17, x0-prediction
4-13, which is why ``x0`` is every generator's default (the ``paper`` recipe keeps eps).

Every generator converts its output with ``output_to_eps`` before the shared DDIM/DDPM steps
(``vfbench.diffusion``), so the samplers stay written in the papers' eps form.

Loss weighting: ``min_snr_gamma`` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
Weighting Strategy", Eq. 6-7): with ``snr = abar / (1 - abar)``, the x0-space weight ``min(snr, gamma)``
expressed for each target: ``min(snr, gamma) / snr`` for eps, ``min(snr, gamma) / (snr + 1)`` for v,
``min(snr, gamma)`` for x0. ``gamma = 0`` turns weighting off (weight 1).
"""

from __future__ import annotations

from typing import Optional

import torch

from vfbench.diffusion import DiffusionSchedule, Timesteps, _check_t, _compute_dtype, _gather
from vfbench.errors import UsageError

PREDICTIONS = ("eps", "v", "x0")


def check_prediction(prediction: str, option: str = "prediction") -> str:
    if prediction not in PREDICTIONS:
        raise UsageError(f"{option} must be one of {', '.join(PREDICTIONS)} (what the network predicts), "
                         f"got {prediction!r}")
    return prediction


def check_min_snr_gamma(gamma: float, option: str = "min_snr_gamma") -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0.0 <= float(gamma) < float("inf")):
        raise UsageError(f"{option} must be a finite number >= 0 (0 disables min-SNR weighting; Hang et al. use 5), "
                         f"got {gamma!r}")
    return float(gamma)


def _coefs(schedule: DiffusionSchedule, t: Timesteps, like: torch.Tensor):
    idx = _check_t(schedule, t, like)
    return _gather(schedule.sqrt_abar, idx, like), _gather(schedule.sqrt_one_minus_abar, idx, like)


def prediction_target(schedule: DiffusionSchedule, x0: torch.Tensor, noise: torch.Tensor, t: Timesteps,
                      prediction: str) -> torch.Tensor:
    """The regression target of ``prediction`` for ``z_t = q_sample(x0, t, noise)``."""
    check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    a, s = _coefs(schedule, t, x0)
    return (a * noise.to(a.dtype) - s * x0.to(a.dtype)).to(x0.dtype)


def output_to_eps(schedule: DiffusionSchedule, z_t: torch.Tensor, t: Timesteps, output: torch.Tensor,
                  prediction: str) -> torch.Tensor:
    """The noise estimate implied by a network output: ``eps = sqrt(1 - abar) z_t + sqrt(abar) v`` for v,
    ``(z_t - sqrt(abar) x0) / sqrt(1 - abar)`` for x0."""
    check_prediction(prediction)
    if prediction == "eps":
        return output
    a, s = _coefs(schedule, t, z_t)
    dt = _compute_dtype(z_t)
    z, o = z_t.to(dt), output.to(dt)
    eps = s * z + a * o if prediction == "v" else (z - a * o) / s
    # kept in the compute dtype: rounding this eps to a bf16 network output's dtype lets the sampler's
    # x0 = (z - sqrt(1 - abar) eps) / sqrt(abar) multiply the rounding by up to 1 / sqrt(abar) (thousands
    # at the first steps): bf16 sampling drew other clips (28 levels RMSE) and FVD 160 against 134
    return eps


def output_to_x0(schedule: DiffusionSchedule, z_t: torch.Tensor, t: Timesteps, output: torch.Tensor,
                 prediction: str) -> torch.Tensor:
    """The clean estimate implied by a network output: ``x0 = sqrt(abar) z_t - sqrt(1 - abar) v`` for v,
    ``(z_t - sqrt(1 - abar) eps) / sqrt(abar)`` for eps."""
    check_prediction(prediction)
    if prediction == "x0":
        return output
    a, s = _coefs(schedule, t, z_t)
    dt = _compute_dtype(z_t)
    z, o = z_t.to(dt), output.to(dt)
    x0 = a * z - s * o if prediction == "v" else (z - s * o) / a
    return x0  # in the compute dtype, as output_to_eps


def loss_weights(schedule: DiffusionSchedule, t: torch.Tensor, prediction: str, min_snr_gamma: float = 0.0,
                 like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample loss weights ``[B]`` (float32) for min-SNR-gamma weighting (module doc); ones when gamma = 0."""
    check_prediction(prediction)
    gamma = check_min_snr_gamma(min_snr_gamma)
    idx = torch.as_tensor(t).detach().to("cpu", torch.long).view(-1)
    device = like.device if like is not None else torch.as_tensor(t).device
    if gamma == 0.0:
        return torch.ones(idx.shape[0], dtype=torch.float32, device=device)
    abar = schedule.alphas_cumprod[idx]
    snr = abar / (1.0 - abar)
    clipped = snr.clamp(max=gamma)
    w = clipped / snr if prediction == "eps" else clipped / (snr + 1.0) if prediction == "v" else clipped
    return w.to(device=device, dtype=torch.float32)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_b w_b * mean(|pred_b - target_b|^2)``, in float32 (under autocast too)."""
    per_sample = (pred.float() - target.float()).square().flatten(1).mean(dim=1)
    return (weights.to(per_sample.device) * per_sample).mean()


__all__ = ["PREDICTIONS", "check_prediction", "check_min_snr_gamma", "prediction_target", "output_to_eps",
           "output_to_x0", "loss_weights", "weighted_mse"]
