"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, data prediction): known answers of the step and of every
generator's sampler with it.

* Its first-order step is DDIM with eta = 0 (DPM-Solver++ Sec. 4.1 / DDIM Eq. 12), to float64 precision.
* Convergence order: for a data prediction that moves smoothly with lambda = log(alpha / sigma) the
  exact ODE solution is known in closed form; the 2M error falls ~4x per halving of the step (second
  order) where the first-order (DDIM) error falls ~2x.
* The oracle denoiser of a one-clip dataset (x0_hat = the clip, whatever z_t): the exact ODE solution is
  ``z_t = alpha_t clip + sigma_t e`` for the e of the starting latent, and the 2M chain must stay on it at
  every step (a wrong coefficient or sign leaves it) and return the clip's bytes. VideoFusion is run through
  its own sampler, whose initial latents carry the decomposed noise (shared base + residual, Eq. 7).

Sizes: 4 frames of 8x8, tiny nets whose predictions are replaced by the oracle; well under a second each.
"""

from __future__ import annotations

import math

import pytest
import torch

from vfbench.clips import uint8_to_unit
from vfbench.diffusion import (DPMSolverPP2M, DiffusionSchedule, ddim_step, dpmpp_2m_step, half_log_snr,
                               predict_eps, timestep_pairs)
from vfbench.errors import UsageError

FRAMES, SIZE = 4, 8
# The samplers run in float32 and turn eps into x0 with 1/sqrt(abar_t), ~1e4 at t = T-1 of the cosine schedule:
# rounding moves the float32 chain off the exact trajectory by up to ~1.3e-3 (measured); a wrong coefficient
# or sign moves it by >= 0.1.
TRAJECTORY_TOL = 5e-3


def test_half_log_snr_is_log_alpha_over_sigma():
    s = DiffusionSchedule.named("cosine", 1000)
    lam = half_log_snr(s)
    for t in (0, 10, 500, 999):
        assert float(lam[t]) == pytest.approx(math.log(float(s.sqrt_abar[t]) / float(s.sqrt_one_minus_abar[t])), rel=1e-12)
    assert bool((lam[1:] < lam[:-1]).all())  # lambda falls as noise grows


@pytest.mark.parametrize("t,t_prev", [(999, 700), (500, 480), (40, 0), (3, -1)])
def test_first_order_step_is_ddim(t, t_prev):
    s = DiffusionSchedule.named("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(z.shape, generator=g, dtype=torch.float64)
    x0 = (s.sqrt_recip_abar[t] * z - s.sqrt_recipm1_abar[t] * eps).clamp(-1, 1)
    ddim = ddim_step(s, z, eps, t, t_prev, eta=0.0)  # clips x0 the same way and recomputes eps from it
    torch.testing.assert_close(dpmpp_2m_step(s, z, x0, t, t_prev), ddim, atol=1e-10, rtol=0)
    torch.testing.assert_close(DPMSolverPP2M(s).step(z, eps, t, t_prev), ddim, atol=1e-10, rtol=0)


def _solve(s, steps: int, second_order: bool, a: float, b: float):
    """Integrate from t = 900 to t = 100 in ``steps`` equal steps of t (where lambda(t) is smooth; towards
    t = 0 and t = T-1 the cosine schedule's lambda bends so sharply that these step counts are not yet in
    the asymptotic regime) with the data prediction x0(lambda) = a + b * lambda; returns (numerical,
    exact) z at t = 100."""
    lam = half_log_snr(s)
    ts = [900 - i * 800 // steps for i in range(steps + 1)]
    e = torch.tensor([0.3, -1.2], dtype=torch.float64)
    z = s.sqrt_abar[ts[0]] * (a + b * lam[ts[0]]) + s.sqrt_one_minus_abar[ts[0]] * e
    z_start = z.clone()
    x0_last, t_last = None, None
    for t, t_prev in zip(ts, ts[1:]):
        x0 = (a + b * lam[t]).expand_as(z).clone()
        z = dpmpp_2m_step(s, z, x0, t, t_prev, x0_last if second_order else None, t_last if second_order else None)
        x0_last, t_last = x0, t
    # z_t / sigma_t = z_s / sigma_s + int_{lam_s}^{lam_t} e^lam x0(lam) dlam, and the antiderivative of
    # e^lam (a + b lam) is e^lam (a + b (lam - 1))
    F = lambda l: torch.exp(l) * (a + b * (l - 1))  # noqa: E731
    t0, tT = ts[-1], ts[0]
    exact = s.sqrt_one_minus_abar[t0] * (z_start / s.sqrt_one_minus_abar[tT] + F(lam[t0]) - F(lam[tT]))
    return z, exact


def test_second_order_convergence_where_ddim_is_first_order():
    s = DiffusionSchedule.named("cosine", 1000)
    a, b = 0.2, 0.05  # x0 inside [-1, 1] for lambda in [-1.2, 1.8] (t = 900 .. 100)
    err = {}
    for order in (1, 2):
        for steps in (10, 20, 40):
            z, exact = _solve(s, steps, order == 2, a, b)
            err[order, steps] = float((z - exact).abs().max())
    first = [err[1, 10] / err[1, 20], err[1, 20] / err[1, 40]]
    second = [err[2, 10] / err[2, 20], err[2, 20] / err[2, 40]]
    # measured: first order 2.03, 2.0x per halving; 2M 3.7, 3.9x
    assert all(1.7 < r < 2.3 for r in first), (first, err)
    assert all(r > 3.3 for r in second), (second, err)
    assert err[2, 20] < err[1, 20] / 10, err


@pytest.mark.parametrize("steps,first_order_last", [(10, True), (14, True), (15, False), (20, False)])
def test_lower_order_final_below_15_steps(steps, first_order_last):
    # the step into the last model timestep (t_prev = 0) is first order below 15 steps (the authors'
    # lower_order_final), 2M from 15 on; the final step to -1 returns x0 either way
    s = DiffusionSchedule.named("cosine", 1000)
    pairs = timestep_pairs(1000, steps)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)
    solver = DPMSolverPP2M(s, pairs=pairs)
    for t, t_prev in pairs[:-2]:
        z = solver.step(z, torch.randn(z.shape, generator=g, dtype=torch.float64), t, t_prev)
    (t, t_prev), eps = pairs[-2], torch.randn(z.shape, generator=g, dtype=torch.float64)
    assert t_prev == 0
    x0 = (s.sqrt_recip_abar[t] * z - s.sqrt_recipm1_abar[t] * eps).clamp(-1, 1)
    first = dpmpp_2m_step(s, z, x0, t, t_prev)
    second = dpmpp_2m_step(s, z, x0, t, t_prev, solver.x0_last, solver.t_last)
    out = solver.step(z, eps, t, t_prev)
    torch.testing.assert_close(out, first if first_order_last else second, atol=1e-12, rtol=0)
    assert float((first - second).abs().max()) > 1e-3  # the two differ: the test can tell them apart


def test_bad_histories_are_usage_errors():
    s = DiffusionSchedule.named("cosine", 100)
    z = torch.zeros(1, 3, 4, 4)
    with pytest.raises(UsageError, match="t_prev < t"):
        dpmpp_2m_step(s, z, z, 10, 10)
    with pytest.raises(UsageError, match="t_last"):
        dpmpp_2m_step(s, z, z, 10, 5, x0_last=z)
    with pytest.raises(UsageError, match="t_last > t"):
        dpmpp_2m_step(s, z, z, 10, 5, x0_last=z, t_last=8)


# -- the oracle denoiser of a one-clip dataset, through each generator's sampler ------------------------

def _clip() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (FRAMES, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)


class Oracle:
    """eps implied by x0_hat = the clip (or its keyframe), recording every latent it is called with."""

    def __init__(self, schedule, clip_unit: torch.Tensor):
        self.schedule, self.clip, self.calls = schedule, clip_unit, []

    def noise(self, z, t, *args, **kwargs):
        self.calls.append((z.clone(), int(t[0])))
        target = self.clip if z.ndim == 5 else self.clip[kwargs.get("frame", FRAMES // 2)]
        return predict_eps(self.schedule, z, t, target.expand_as(z))

    def on_trajectory(self):
        """max |z_t - (alpha_t clip + sigma_t e)| over the calls, e fixed by the first call's latent."""
        s = self.schedule
        z_first, t_first = self.calls[0]
        clip = self.clip if z_first.ndim == 5 else self.clip[FRAMES // 2]
        e = (z_first - s.sqrt_abar[t_first] * clip) / s.sqrt_one_minus_abar[t_first]
        return max(float((z - (s.sqrt_abar[t] * clip + s.sqrt_one_minus_abar[t] * e)).abs().max())
                   for z, t in self.calls if z.shape == z_first.shape)


def test_oracle_vdm_chain_stays_on_the_exact_trajectory_and_returns_the_clip(monkeypatch):
    from vfbench.generators.vdm import VDM

    torch.manual_seed(0)
    model = VDM(VDM.config_for("tiny", frames=FRAMES, size=SIZE))
    clip = _clip()
    oracle = Oracle(model.schedule, uint8_to_unit(clip).double())
    monkeypatch.setattr(model, "guided_noise", lambda z, t, labels, scale: oracle.noise(z.double(), t).float())
    out = model.sample(3, torch.Generator().manual_seed(0), sampler="dpmpp_2m", steps=10)
    assert len(oracle.calls) == 10  # one network evaluation per step
    assert oracle.on_trajectory() < TRAJECTORY_TOL
    assert torch.equal(out, clip.expand_as(out))


@pytest.mark.parametrize("residual_condition", ["keyframe", "none"])
def test_oracle_videofusion_decomposed_chain_stays_on_the_exact_trajectory(monkeypatch, residual_condition):
    from vfbench.generators.videofusion import VideoFusion

    torch.manual_seed(0)
    model = VideoFusion(VideoFusion.config_for("tiny", frames=FRAMES, size=SIZE, num_timesteps=100,
                                               residual_condition=residual_condition))
    clip = _clip()
    joint = Oracle(model.schedule, uint8_to_unit(clip).double())
    base = Oracle(model.schedule, uint8_to_unit(clip).double())
    monkeypatch.setattr(model, "guided_noise", lambda z, t, labels, scale, **kw: joint.noise(z.double(), t).float())
    monkeypatch.setattr(model, "guided_base_noise", lambda z, t, labels, scale: base.noise(z.double(), t).float())
    out = model.sample(2, torch.Generator().manual_seed(0), sampler="dpmpp_2m", steps=8)
    # "keyframe": the first pass's 8 base calls, then 8 on the re-noised keyframe of the joint pass (keyframe_pass)
    assert len(joint.calls) == 8 and len(base.calls) == (16 if residual_condition == "keyframe" else 0)
    assert joint.on_trajectory() < TRAJECTORY_TOL
    if base.calls:
        assert base.on_trajectory() < TRAJECTORY_TOL
    # the decomposed start: z_T's non-key frames share the keyframe's base noise, corr. lambda = 0.5 (Eq. 7)
    z_T = joint.calls[0][0]
    assert torch.equal(out, clip.expand_as(out))
    assert float(torch.corrcoef(torch.stack([z_T[:, 0].flatten(), z_T[:, 1].flatten()]))[0, 1]) > 0.3


def test_oracle_vidm_frame_chain_returns_the_frame():
    from vfbench.generators.vidm import VIDM

    torch.manual_seed(0)
    model = VIDM(VIDM.config_for("tiny", frames=FRAMES, size=SIZE))
    assert model.config.prediction == "x0"
    frame = uint8_to_unit(_clip()[1]).unsqueeze(0)
    seen = []

    def oracle(z, t):
        seen.append((z.clone(), int(t[0])))
        return frame.expand_as(z)

    g = torch.Generator().manual_seed(0)
    x = model._reverse_diffusion(oracle, lambda: torch.randn(2, 3, SIZE, SIZE, generator=g), "dpmpp_2m", 6, 0.0)
    s = model.schedule
    e = (seen[0][0] - s.sqrt_abar[seen[0][1]] * frame) / s.sqrt_one_minus_abar[seen[0][1]]
    for z, t in seen:
        torch.testing.assert_close(z, (s.sqrt_abar[t] * frame + s.sqrt_one_minus_abar[t] * e).float(), atol=TRAJECTORY_TOL, rtol=0)
    torch.testing.assert_close(x, frame.expand_as(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["vdm", "videofusion", "vidm"])
def test_dpmpp_refuses_eta_and_is_deterministic(name):
    from vfbench.registry import GENERATORS

    cls = GENERATORS.get(name)
    torch.manual_seed(0)
    kw = {"num_timesteps": 100} if name == "videofusion" else {}
    model = cls(cls.config_for("tiny", frames=FRAMES, size=SIZE, **kw))
    with pytest.raises(UsageError, match="dpmpp_2m is deterministic"):
        model.sample(1, torch.Generator().manual_seed(0), sampler="dpmpp_2m", steps=2, eta=0.5)
    a = model.sample(2, torch.Generator().manual_seed(4), sampler="dpmpp_2m", steps=3)
    assert torch.equal(a, model.sample(2, torch.Generator().manual_seed(4), sampler="dpmpp_2m", steps=3))
