"""Gaussian diffusion math shared by every generator: schedules, forward noising, DDIM/DDPM steps.

References
----------
* Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM): forward process
  Eq. 4 ``q(z_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``, posterior Eq. 6-7, linear schedule.
* Nichol & Dhariwal 2021, "Improved DDPM", Eq. 17: the cosine schedule (s = 0.008, betas
  clipped at 0.999).
* Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (DDIM), Eq. 12 (the update) and
  Eq. 16 (sigma_t(eta)).
* Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
  Probabilistic Models", Algorithm 2 (multistep second order, "2M") in the data-prediction form, with
  ``lambda_t = log(alpha_t / sigma_t)``, ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``.

Every table is float64 (computed once, on the CPU); coefficients are gathered at the requested
timesteps and applied in at least float32, so half-precision activations do not lose the tiny
``sqrt(1 - abar_t)`` of early steps. Timesteps ``t`` are integers in ``[0, T-1]``, either one per
sample (a LongTensor ``[B]``) or a Python int for the whole batch; coefficients broadcast over any
trailing dimensions (images ``[B, C, H, W]``, videos ``[B, T, C, H, W]`` or ``[B, C, T, H, W]``).

Randomness is always explicit: the step functions take the noise from the caller (VideoFusion
passes decomposed noise), and ``sample_timesteps`` takes a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Union

import torch

from vfbench.errors import UnknownNameError, UsageError

Timesteps = Union[int, torch.Tensor]

# -- named schedules ----------------------------------------------------------------------------
# A schedule, once committed, is never changed (results and checkpoints depend on it); add a new
# name instead. tests/test_diffusion.py pins table values of each.

_BETA_FUNCTIONS: Dict[str, Callable[[int], torch.Tensor]] = {}


def _register_betas(name: str):
    def deco(fn: Callable[[int], torch.Tensor]):
        _BETA_FUNCTIONS[name] = fn
        return fn

    return deco


@_register_betas("cosine")
def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM Eq. 17: ``abar(t) = f(t)/f(0)``, ``f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2)``,
    ``beta_t = min(1 - abar(t+1)/abar(t), 0.999)``."""

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


@_register_betas("linear")
def linear_betas(num_timesteps: int) -> torch.Tensor:
    """DDPM's linear schedule 1e-4 .. 0.02 at T = 1000, rescaled by 1000/T so other T keep the same
    total noise (Improved DDPM, Sec. 3.2 / their released code's convention)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def schedule_names() -> List[str]:
    return sorted(_BETA_FUNCTIONS)


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """The precomputed float64 tables of one noise schedule (DDPM notation: alpha_t = 1 - beta_t,
    abar_t = prod_{s<=t} alpha_s; index 0 is the first, least noisy step)."""

    name: str
    num_timesteps: int
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor  # abar_t
    alphas_cumprod_prev: torch.Tensor  # abar_{t-1}, with abar_{-1} = 1
    sqrt_abar: torch.Tensor
    sqrt_one_minus_abar: torch.Tensor
    sqrt_recip_abar: torch.Tensor
    sqrt_recipm1_abar: torch.Tensor  # sqrt(1/abar - 1)
    posterior_variance: torch.Tensor  # beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t  (DDPM Eq. 7)
    posterior_log_variance_clipped: torch.Tensor  # log beta~_t with the t=0 zero replaced by t=1's value
    posterior_mean_coef_x0: torch.Tensor  # sqrt(abar_{t-1}) beta_t / (1 - abar_t)
    posterior_mean_coef_zt: torch.Tensor  # sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)

    @classmethod
    def from_betas(cls, name: str, betas: torch.Tensor) -> "DiffusionSchedule":
        betas = betas.to(torch.float64).cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise UsageError("betas must be a non-empty 1-D tensor; pass one value per diffusion step")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise UsageError(f"schedule {name!r} has betas outside (0, 1); every beta_t must lie strictly between 0 and 1")
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # beta~_0 = 0: keep the clipped log finite the way DDPM/Improved-DDPM do.
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(betas) > 1 else torch.log(betas)
        return cls(
            name=name,
            num_timesteps=len(betas),
            betas=betas,
            alphas=alphas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sqrt_abar=abar.sqrt(),
            sqrt_one_minus_abar=(1.0 - abar).sqrt(),
            sqrt_recip_abar=abar.rsqrt(),
            sqrt_recipm1_abar=(1.0 / abar - 1.0).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log_var,
            posterior_mean_coef_x0=abar_prev.sqrt() * betas / (1.0 - abar),
            posterior_mean_coef_zt=alphas.sqrt() * (1.0 - abar_prev) / (1.0 - abar),
        )

    @classmethod
    def named(cls, name: str = "cosine", num_timesteps: int = 1000) -> "DiffusionSchedule":
        """A registered schedule (``cosine``, ``linear``) with ``num_timesteps`` steps (cached)."""
        if name not in _BETA_FUNCTIONS:
            raise UnknownNameError("noise schedule", name, _BETA_FUNCTIONS)
        if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
            raise UsageError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
        return _named_schedule(name, num_timesteps)

    # abar is the name used in the papers' equations
    @property
    def abar(self) -> torch.Tensor:
        return self.alphas_cumprod


@lru_cache(maxsize=32)
def _named_schedule(name: str, num_timesteps: int) -> DiffusionSchedule:
    return DiffusionSchedule.from_betas(name, _BETA_FUNCTIONS[name](num_timesteps))


# -- helpers ------------------------------------------------------------------------------------

def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; half types are lifted to float32 for the update arithmetic."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_t(schedule: DiffusionSchedule, t: Timesteps, x: torch.Tensor, allow_minus_one: bool = False) -> torch.Tensor:
    """Timesteps as a CPU LongTensor of shape [] or [B] (validated against the schedule)."""
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex():
            raise UsageError(f"timesteps must be an integer tensor, got dtype {t.dtype}; pass t.long()")
        idx = t.detach().to("cpu", torch.long)
        if idx.ndim > 1:
            raise UsageError(f"timesteps must be a scalar or a 1-D tensor [B], got shape {tuple(idx.shape)}")
        if idx.ndim == 1 and idx.shape[0] != x.shape[0]:
            raise UsageError(f"timesteps have {idx.shape[0]} entries but the batch has {x.shape[0]}; pass one t per sample")
    else:
        idx = torch.tensor(int(t), dtype=torch.long)
    lo = -1 if allow_minus_one else 0
    if idx.numel() and (int(idx.min()) < lo or int(idx.max()) >= schedule.num_timesteps):
        raise UsageError(f"timesteps must lie in [{lo}, {schedule.num_timesteps - 1}] for this {schedule.num_timesteps}-step "
                         f"schedule, got values in [{int(idx.min())}, {int(idx.max())}]")
    return idx


def _gather(table: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[idx] reshaped to broadcast against x ([B, 1, 1, ...]), in x's compute dtype and device."""
    vals = table[idx]
    if vals.ndim == 1:
        vals = vals.view(-1, *([1] * (x.ndim - 1)))
    return vals.to(device=x.device, dtype=_compute_dtype(x))


def _abar_prev_table(schedule: DiffusionSchedule) -> torch.Tensor:
    """abar indexed by t_prev + 1, so that t_prev = -1 (the end of sampling) gives abar = 1."""
    return torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod])


# -- forward process ----------------------------------------------------------------------------

def q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: Timesteps, noise: torch.Tensor) -> torch.Tensor:
    """DDPM Eq. 4: ``z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
    if noise.shape != x0.shape:
        raise UsageError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    idx = _check_t(schedule, t, x0)
    dt = _compute_dtype(x0)
    z = _gather(schedule.sqrt_abar, idx, x0) * x0.to(dt) + _gather(schedule.sqrt_one_minus_abar, idx, x0) * noise.to(dt)
    return z.to(x0.dtype)


def predict_x0(schedule: DiffusionSchedule, z_t: torch.Tensor, t: Timesteps, eps: torch.Tensor) -> torch.Tensor:
    """Invert Eq. 4 for x0 given the (predicted) noise: ``x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    idx = _check_t(schedule, t, z_t)
    dt = _compute_dtype(z_t)
    x0 = _gather(schedule.sqrt_recip_abar, idx, z_t) * z_t.to(dt) - _gather(schedule.sqrt_recipm1_abar, idx, z_t) * eps.to(dt)
    return x0.to(z_t.dtype)


def predict_eps(schedule: DiffusionSchedule, z_t: torch.Tensor, t: Timesteps, x0: torch.Tensor) -> torch.Tensor:
    """The noise implied by z_t and an x0 estimate: ``eps = (z_t / sqrt(abar_t) - x0) / sqrt(1/abar_t - 1)``."""
    idx = _check_t(schedule, t, z_t)
    dt = _compute_dtype(z_t)
    eps = (_gather(schedule.sqrt_recip_abar, idx, z_t) * z_t.to(dt) - x0.to(dt)) / _gather(schedule.sqrt_recipm1_abar, idx, z_t)
    return eps.to(z_t.dtype)


def sample_timesteps(schedule: DiffusionSchedule, batch: int, generator: torch.Generator,
                     device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """One uniformly drawn training timestep per sample, LongTensor [batch] on ``device``."""
    if generator is None:
        raise UsageError("sample_timesteps needs an explicit torch.Generator; pass generator=torch.Generator().manual_seed(seed)")
    t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator, device=generator.device)
    return t.to(device) if device is not None else t


# -- reverse process ----------------------------------------------------------------------------

def ddim_timesteps(num_timesteps: int, num_steps: int) -> List[int]:
    """``num_steps`` evenly respaced timesteps of a ``num_timesteps`` process, descending, starting at
    T-1 and ending at 0 (for num_steps >= 2), all distinct. Pair each with the next one and -1 last."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= num_timesteps:
        raise UsageError(f"sampling steps must be an integer in [1, {num_timesteps}] (the number of diffusion "
                         f"timesteps), got {num_steps!r}")
    if num_steps == 1:
        return [num_timesteps - 1]
    # round(i (T-1) / (S-1)) in exact integer arithmetic; spacing >= 1 since S <= T, so all unique
    steps = [(2 * i * (num_timesteps - 1) + (num_steps - 1)) // (2 * (num_steps - 1)) for i in range(num_steps)]
    return steps[::-1]


def timestep_pairs(num_timesteps: int, num_steps: int) -> List[tuple]:
    """``[(t, t_prev), ...]`` for a respaced sampler; the last pair has t_prev = -1 (to x0)."""
    ts = ddim_timesteps(num_timesteps, num_steps)
    return list(zip(ts, ts[1:] + [-1]))


def ddim_sigma(schedule: DiffusionSchedule, t: Timesteps, t_prev: Timesteps, eta: float, x: torch.Tensor) -> torch.Tensor:
    """DDIM Eq. 16: ``sigma = eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev)``."""
    idx = _check_t(schedule, t, x)
    idx_prev = _check_t(schedule, t_prev, x, allow_minus_one=True)
    abar = _gather(schedule.alphas_cumprod, idx, x)
    abar_prev = _gather(_abar_prev_table(schedule), idx_prev + 1, x)
    return eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()


def ddim_step(schedule: DiffusionSchedule, z_t: torch.Tensor, eps: torch.Tensor, t: Timesteps, t_prev: Timesteps,
              eta: float = 0.0, noise: Optional[torch.Tensor] = None, clip_x0: bool = True) -> torch.Tensor:
    """One DDIM update, Song et al. Eq. 12:

    ``z_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma * noise``

    with ``x0_hat = predict_x0(z_t, eps)`` and sigma from Eq. 16. ``t_prev = -1`` is the final step
    (abar_prev = 1, the output is x0_hat). With ``clip_x0`` the x0 estimate is clipped to [-1, 1] and
    eps is recomputed from it, so both terms stay consistent with the clipped prediction.
    ``noise`` must be given by the caller when ``eta > 0`` (except on the final step, where sigma = 0).
    """
    check_eta(eta)
    idx = _check_t(schedule, t, z_t)
    idx_prev = _check_t(schedule, t_prev, z_t, allow_minus_one=True)
    if bool((idx_prev >= idx).any()):
        raise UsageError("ddim_step needs t_prev < t (sampling runs from noise towards data); check the timestep order")
    dt = _compute_dtype(z_t)
    z, e = z_t.to(dt), eps.to(dt)
    x0 = _gather(schedule.sqrt_recip_abar, idx, z_t) * z - _gather(schedule.sqrt_recipm1_abar, idx, z_t) * e
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        e = (_gather(schedule.sqrt_recip_abar, idx, z_t) * z - x0) / _gather(schedule.sqrt_recipm1_abar, idx, z_t)
    abar_prev = _gather(_abar_prev_table(schedule), idx_prev + 1, z_t)
    sigma = ddim_sigma(schedule, idx, idx_prev, eta, z_t) if eta > 0 else torch.zeros_like(abar_prev)
    z_prev = abar_prev.sqrt() * x0 + (1.0 - abar_prev - sigma ** 2).clamp_min(0).sqrt() * e
    if eta > 0 and bool((idx_prev >= 0).any()):  # the final step to x0 has sigma = 0 and needs no noise
        if noise is None:
            raise UsageError("ddim_step with eta > 0 needs the fresh noise from the caller; pass noise=torch.randn(..., generator=g)")
        if noise.shape != z_t.shape:
            raise UsageError(f"noise shape {tuple(noise.shape)} must equal z_t shape {tuple(z_t.shape)}")
        z_prev = z_prev + sigma * noise.to(dt)
    return z_prev.to(z_t.dtype)


def ddpm_step(schedule: DiffusionSchedule, z_t: torch.Tensor, eps: torch.Tensor, t: Timesteps,
              noise: Optional[torch.Tensor] = None, clip_x0: bool = True) -> torch.Tensor:
    """One ancestral DDPM step (Ho et al. Eq. 6-7) with the "fixed small" variance beta~_t:

    ``z_{t-1} = coef_x0 * x0_hat + coef_zt * z_t + sqrt(beta~_t) * noise``; no noise is added where t == 0.
    ``noise`` is given by the caller (required whenever some t > 0).
    """
    idx = _check_t(schedule, t, z_t)
    dt = _compute_dtype(z_t)
    z = z_t.to(dt)
    x0 = _gather(schedule.sqrt_recip_abar, idx, z_t) * z - _gather(schedule.sqrt_recipm1_abar, idx, z_t) * eps.to(dt)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    mean = _gather(schedule.posterior_mean_coef_x0, idx, z_t) * x0 + _gather(schedule.posterior_mean_coef_zt, idx, z_t) * z
    if bool((idx > 0).any()):
        if noise is None:
            raise UsageError("ddpm_step at t > 0 needs the fresh noise from the caller; pass noise=torch.randn(..., generator=g)")
        if noise.shape != z_t.shape:
            raise UsageError(f"noise shape {tuple(noise.shape)} must equal z_t shape {tuple(z_t.shape)}")
        # beta~_0 = 0 already, but mask explicitly so t == 0 is exactly the mean
        std = _gather(schedule.posterior_variance, idx, z_t).sqrt() * _gather((torch.arange(schedule.num_timesteps) > 0).double(), idx, z_t)
        mean = mean + std * noise.to(dt)
    return mean.to(z_t.dtype)


SAMPLERS = ("ddim", "ddpm", "dpmpp_2m")


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise UsageError(f"sampler must be one of {', '.join(SAMPLERS)} (dpmpp_2m = DPM-Solver++(2M)), got {sampler!r}")
    return sampler


def resolve_eta(sampler: str, eta: Optional[float], default: float) -> float:
    """The DDIM ``eta`` a chain of ``sampler`` runs with: ``eta`` if given, else the config's ``default``.
    ``dpmpp_2m`` is a deterministic ODE solver: it ignores the config's (DDIM) eta and refuses an explicit
    ``eta > 0``."""
    check_sampler(sampler)
    if sampler != "dpmpp_2m":
        return check_eta(default if eta is None else eta)
    if eta is not None and check_eta(eta) > 0:
        raise UsageError(f"eta={eta} adds DDIM noise but sampler dpmpp_2m is deterministic; drop eta or use "
                         "sampler=ddim (or ddpm) for a stochastic chain")
    return 0.0


def half_log_snr(schedule: DiffusionSchedule) -> torch.Tensor:
    """``lambda_t = log(alpha_t / sigma_t) = 0.5 log(abar_t / (1 - abar_t))`` (DPM-Solver++ Sec. 2), float64,
    indexed by t."""
    abar = schedule.alphas_cumprod
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def dpmpp_2m_step(schedule: DiffusionSchedule, z_t: torch.Tensor, x0: torch.Tensor, t: Timesteps, t_prev: Timesteps,
                  x0_last: Optional[torch.Tensor] = None, t_last: Optional[Timesteps] = None) -> torch.Tensor:
    """One step of DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (data prediction), from t to t_prev < t.

    With ``h = lambda_{t_prev} - lambda_t``:

    ``z_prev = (sigma_prev / sigma_t) z_t - alpha_prev (exp(-h) - 1) D``

    where ``D = x0`` (the first step, ``x0_last`` None: first order, which is DDIM with eta = 0) or, given the
    data prediction ``x0_last`` at the previous, noisier timestep ``t_last``,
    ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_last`` with ``r = (lambda_t - lambda_{t_last}) / h``.
    ``t_prev = -1`` is the final step to sigma = 0 (lambda = +inf, so h is infinite and r = 0): it is taken
    first order, whose limit is ``z_prev = x0``, as DDIM's final step (the authors' "lower order final").
    ``x0`` is the caller's (clipped) data prediction at t; coefficients in float64 tables, applied in at
    least float32.
    """
    idx = _check_t(schedule, t, z_t)
    idx_prev = _check_t(schedule, t_prev, z_t, allow_minus_one=True)
    if bool((idx_prev >= idx).any()):
        raise UsageError("dpmpp_2m_step needs t_prev < t (sampling runs from noise towards data); check the timestep order")
    if x0.shape != z_t.shape:
        raise UsageError(f"x0 shape {tuple(x0.shape)} must equal z_t shape {tuple(z_t.shape)}")
    dt = _compute_dtype(z_t)
    if bool((idx_prev < 0).any()):
        if not bool((idx_prev < 0).all()):
            raise UsageError("dpmpp_2m_step got t_prev = -1 for some samples only; step a batch to the end together")
        return x0.to(z_t.dtype)

    def bcast(v: torch.Tensor) -> torch.Tensor:  # a [B] or [] coefficient against z_t
        return (v.view(-1, *([1] * (z_t.ndim - 1))) if v.ndim else v).to(z_t.device, dt)

    lam = half_log_snr(schedule)
    h = lam[idx_prev] - lam[idx]
    sigma_ratio = schedule.sqrt_one_minus_abar[idx_prev] / schedule.sqrt_one_minus_abar[idx]
    x0_coef = -schedule.sqrt_abar[idx_prev] * torch.expm1(-h)
    d = x0.to(dt)
    if x0_last is not None:
        if t_last is None:
            raise UsageError("dpmpp_2m_step with x0_last needs its timestep t_last")
        if x0_last.shape != z_t.shape:
            raise UsageError(f"x0_last shape {tuple(x0_last.shape)} must equal z_t shape {tuple(z_t.shape)}")
        idx_last = _check_t(schedule, t_last, z_t)
        if bool((idx_last <= idx).any()):
            raise UsageError("dpmpp_2m_step needs t_last > t (the previous, noisier step); check the timestep order")
        half_inv_r = bcast(0.5 * h / (lam[idx] - lam[idx_last]))  # 1 / (2r)
        d = (1.0 + half_inv_r) * d - half_inv_r * x0_last.to(dt)

    z_prev = bcast(sigma_ratio) * z_t.to(dt) + bcast(x0_coef) * d
    return z_prev.to(z_t.dtype)


LOWER_ORDER_FINAL_BELOW = 15  # the authors' lower_order_final: first order into the last timestep below 15 steps


class DPMSolverPP2M:
    """The history one reverse chain of DPM-Solver++(2M) carries (the previous data prediction and its t).

    ``step(z_t, eps, t, t_prev)`` takes the model's noise estimate (every generator speaks eps; VideoFusion's
    per-frame Eq. 13 estimate included), forms the data prediction ``x0 = predict_x0(z_t, eps)`` (clipped to
    [-1, 1] with ``clip_x0``, the static thresholding of DPM-Solver++ Sec. 5) and applies ``dpmpp_2m_step``.
    One instance per chain and window: its history must not cross into another chain.

    ``pairs`` (the chain's ``[(t, t_prev), ...]``) turns on the authors' "lower order final" (DPM-Solver++
    reference code, ``lower_order_final`` for fewer than 15 steps): the step that lands on the last model
    timestep is taken first order. On the cosine schedule's evenly spaced timesteps that step is the
    widest in lambda (10 steps: t = 111 -> 0, lambda 1.67 -> 5.05, after a step of 0.69), so the 2M
    extrapolation weight there is ``1/(2r) = 2.45``: ``D = 3.45 x0 - 2.45 x0_last``. Without it DPM-Solver++
    at 10 steps scored worse FVD than DDIM on the reference runs (README, "Samplers").
    """

    def __init__(self, schedule: DiffusionSchedule, clip_x0: bool = True, pairs: Optional[List[tuple]] = None):
        self.schedule, self.clip_x0 = schedule, clip_x0
        self.x0_last: Optional[torch.Tensor] = None
        self.t_last: Optional[Timesteps] = None
        self.first_order_into: Optional[int] = None
        if pairs and len(pairs) < LOWER_ORDER_FINAL_BELOW:
            self.first_order_into = int(pairs[-1][0])  # the last timestep the model is evaluated at

    def step(self, z_t: torch.Tensor, eps: torch.Tensor, t: Timesteps, t_prev: Timesteps) -> torch.Tensor:
        x0 = predict_x0(self.schedule, z_t.to(_compute_dtype(z_t)), t, eps)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        lower = self.first_order_into is not None and not isinstance(t_prev, torch.Tensor) \
            and int(t_prev) == self.first_order_into
        history = (None, None) if lower else (self.x0_last, self.t_last)
        z_prev = dpmpp_2m_step(self.schedule, z_t, x0, t, t_prev, *history)
        self.x0_last, self.t_last = x0, t
        return z_prev


def classifier_free_guidance(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Ho & Salimans 2022, Eq. 6 (as written in eps form): ``eps_uncond + scale * (eps_cond - eps_uncond)``.
    scale = 1 is the conditional model, 0 the unconditional one."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def check_eta(eta: float) -> float:
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not 0.0 <= float(eta) <= 1.0:
        raise UsageError(f"eta must be a number in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise), got {eta!r}")
    return float(eta)


__all__ = [
    "DiffusionSchedule", "schedule_names", "cosine_betas", "linear_betas", "q_sample", "predict_x0", "predict_eps",
    "sample_timesteps", "ddim_timesteps", "timestep_pairs", "ddim_sigma", "ddim_step", "ddpm_step",
    "classifier_free_guidance", "check_eta", "SAMPLERS", "check_sampler", "resolve_eta", "half_log_snr",
    "dpmpp_2m_step", "DPMSolverPP2M", "LOWER_ORDER_FINAL_BELOW",
]
