"""Known-answer tests of vfbench.diffusion (schedules are pinned: they must never change)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vfbench.diffusion import (
    DiffusionSchedule, classifier_free_guidance, ddim_sigma, ddim_step, ddim_timesteps, ddpm_step, predict_eps,
    predict_x0, q_sample, sample_timesteps, timestep_pairs,
)
from vfbench.errors import UsageError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- schedules -------------------------------------------------------------------------------------

def test_cosine_schedule_pinned_values():
    s = DiffusionSchedule.named("cosine", 1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(4.128422482196914e-05, rel=1e-12)
    assert s.alphas_cumprod[499].item() == pytest.approx(0.4938435904406382, rel=1e-12)
    assert s.betas[998].item() == pytest.approx(0.7499993929011166, rel=1e-12)
    assert s.betas[999].item() == 0.999  # clipped
    assert s.alphas_cumprod[999].item() == pytest.approx(2.4287669070348567e-09, rel=1e-9)


def test_cosine_schedule_matches_closed_form_and_is_monotone():
    T, s_ = 1000, 0.008
    s = DiffusionSchedule.named("cosine", T)
    f = lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    # before the 0.999 clip kicks in, abar_t = f((t+1)/T) / f(0) exactly (Improved DDPM Eq. 17)
    for t in (0, 10, 250, 500, 900, 990):
        assert s.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-10)
    abar = s.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all())
    assert abar[0].item() > 0.9999
    assert s.betas.max().item() <= 0.999
    assert s.alphas_cumprod_prev[0].item() == 1.0
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], abar[:-1])


def test_linear_schedule_endpoints_and_rescaling():
    s = DiffusionSchedule.named("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358297653756754e-05, rel=1e-9)
    s100 = DiffusionSchedule.named("linear", 100)
    assert s100.betas[0].item() == pytest.approx(1e-3) and s100.betas[-1].item() == pytest.approx(0.2)


def test_posterior_variance_formula():
    s = DiffusionSchedule.named("cosine", 50)
    t = 20
    expected = (1 - s.alphas_cumprod[t - 1]) / (1 - s.alphas_cumprod[t]) * s.betas[t]
    assert s.posterior_variance[t].item() == pytest.approx(expected.item(), rel=1e-12)
    assert s.posterior_variance[0].item() == 0.0


def test_unknown_schedule_and_bad_T_are_usage_errors():
    with pytest.raises(UsageError, match="cosine"):
        DiffusionSchedule.named("cosin")
    with pytest.raises(UsageError, match="num_timesteps"):
        DiffusionSchedule.named("cosine", 0)


# -- forward process ---------------------------------------------------------------------------

def test_q_sample_statistics_and_broadcast():
    s = DiffusionSchedule.named("cosine", 1000)
    g = _gen(1)
    x0 = torch.full((4, 2, 3, 16, 16), 0.5)  # videos [B, T, C, H, W]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 300, 600, 999])
    z = q_sample(s, x0, t, noise)
    assert z.shape == x0.shape and z.dtype == x0.dtype
    for b in range(4):
        mean_expected = s.sqrt_abar[t[b]].item() * 0.5
        std_expected = s.sqrt_one_minus_abar[t[b]].item()
        zb = z[b].double()
        assert zb.mean().item() == pytest.approx(mean_expected, abs=4 * std_expected / math.sqrt(zb.numel()) + 1e-6)
        assert zb.std().item() == pytest.approx(std_expected, rel=0.05)
    # one Python int t for the whole batch equals the per-sample tensor
    torch.testing.assert_close(q_sample(s, x0, 600, noise), q_sample(s, x0, torch.full((4,), 600), noise))


def test_predict_x0_inverts_q_sample():
    s = DiffusionSchedule.named("cosine", 1000)
    g = _gen(2)
    x0 = torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 400, 900, 999])
    z = q_sample(s, x0, t, eps)
    torch.testing.assert_close(predict_x0(s, z, t, eps), x0, atol=1e-9, rtol=0)
    torch.testing.assert_close(predict_eps(s, z, t, x0), eps, atol=1e-9, rtol=0)


def test_sample_timesteps_uses_the_generator():
    s = DiffusionSchedule.named("cosine", 1000)
    a = sample_timesteps(s, 64, _gen(3), "cpu")
    b = sample_timesteps(s, 64, _gen(3), "cpu")
    assert a.dtype == torch.long and torch.equal(a, b)
    assert 0 <= a.min() and a.max() < 1000 and len(a.unique()) > 10


# -- reverse process ---------------------------------------------------------------------------

def test_ddim_timesteps_respacing():
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(1000, 1) == [999]
    assert timestep_pairs(1000, 3) == [(999, 500), (500, 0), (0, -1)]
    with pytest.raises(UsageError, match="steps"):
        ddim_timesteps(100, 101)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000).flatmap(lambda T: st.tuples(st.just(T), st.integers(1, T))))
def test_ddim_timesteps_properties(T_and_steps):
    T, steps = T_and_steps
    ts = ddim_timesteps(T, steps)
    assert len(ts) == steps and len(set(ts)) == steps
    assert ts[0] == T - 1 and all(a > b for a, b in zip(ts, ts[1:]))
    assert steps == 1 or ts[-1] == 0


@pytest.mark.parametrize("t", [0, 1, 123, 700, 999])
def test_ddim_with_true_eps_recovers_x0_in_one_step(t):
    s = DiffusionSchedule.named("cosine", 1000)
    g = _gen(4)
    x0 = torch.rand(3, 2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    z = q_sample(s, x0, torch.full((3,), t), eps)
    out = ddim_step(s, z, eps, torch.full((3,), t), -1, eta=0.0)
    torch.testing.assert_close(out, x0, atol=1e-8, rtol=0)


def test_ddim_to_intermediate_step_lands_on_the_same_trajectory():
    # with the true eps, z_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps (eta = 0)
    s = DiffusionSchedule.named("linear", 1000)
    g = _gen(5)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    z = q_sample(s, x0, 800, eps)
    torch.testing.assert_close(ddim_step(s, z, eps, 800, 300), q_sample(s, x0, 300, eps), atol=1e-9, rtol=0)


def test_ddim_is_deterministic_and_eta_needs_noise():
    s = DiffusionSchedule.named("cosine", 1000)
    g = _gen(6)
    z = torch.randn(2, 3, 8, 8, generator=g)
    eps = torch.randn(z.shape, generator=g)
    a = ddim_step(s, z, eps, 500, 480)
    b = ddim_step(s, z, eps, 500, 480)
    assert torch.equal(a, b)
    with pytest.raises(UsageError, match="noise"):
        ddim_step(s, z, eps, 500, 480, eta=0.5)
    noise = torch.randn(z.shape, generator=g)
    c = ddim_step(s, z, eps, 500, 480, eta=1.0, noise=noise)
    sigma = ddim_sigma(s, 500, 480, 1.0, z)
    torch.testing.assert_close(c - ddim_step(s, z, eps, 500, 480, eta=1.0, noise=torch.zeros_like(noise)), sigma * noise)
    # eta = 1 gives the DDPM posterior standard deviation between consecutive steps (DDIM Sec. 4.1)
    assert ddim_sigma(s, 500, 499, 1.0, z.double()).item() ** 2 == pytest.approx(s.posterior_variance[500].item(), rel=1e-6)


def test_ddpm_step_variance_matches_posterior_variance():
    s = DiffusionSchedule.named("cosine", 1000)
    g = _gen(7)
    x0 = torch.rand(1, 1, 64, 64, generator=g, dtype=torch.float64) * 1.6 - 0.8
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = 400
    z = q_sample(s, x0, t, eps)
    noise = torch.randn((400,) + x0.shape[1:], generator=g, dtype=torch.float64)
    zb, eb = z.expand(400, -1, -1, -1), eps.expand(400, -1, -1, -1)
    draws = ddpm_step(s, zb, eb, t, noise=noise)
    mean = ddpm_step(s, zb, eb, t, noise=torch.zeros_like(noise))
    # the mean is the posterior mean mu~(z_t, x0) of DDPM Eq. 7 with the exact x0
    mu = s.posterior_mean_coef_x0[t] * x0 + s.posterior_mean_coef_zt[t] * z
    torch.testing.assert_close(mean[:1], mu, atol=1e-9, rtol=0)
    var = (draws - mean).var().item()
    assert var == pytest.approx(s.posterior_variance[t].item(), rel=0.02)
    # t == 0 adds no noise and returns the clipped x0
    z0 = q_sample(s, x0, 0, eps)
    torch.testing.assert_close(ddpm_step(s, z0, eps, 0, noise=torch.randn(x0.shape, dtype=torch.float64)), x0, atol=1e-9, rtol=0)
    with pytest.raises(UsageError, match="noise"):
        ddpm_step(s, z, eps, t)


def test_step_functions_keep_float32_dtype():
    s = DiffusionSchedule.named("cosine", 1000)
    z = torch.randn(2, 3, 4, 4)
    eps = torch.randn(2, 3, 4, 4)
    assert ddim_step(s, z, eps, torch.tensor([10, 20]), torch.tensor([5, 0])).dtype == torch.float32
    assert ddpm_step(s, z, eps, 10, noise=torch.randn(2, 3, 4, 4)).dtype == torch.float32


def test_bad_timesteps_are_usage_errors():
    s = DiffusionSchedule.named("cosine", 100)
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(UsageError, match=r"\[0, 99\]"):
        q_sample(s, x, torch.tensor([0, 100]), x)
    with pytest.raises(UsageError, match="one t per sample"):
        q_sample(s, x, torch.tensor([0, 1, 2]), x)
    with pytest.raises(UsageError, match="t_prev < t"):
        ddim_step(s, x, x, 10, 10)


def test_classifier_free_guidance_formula():
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 3.0), torch.tensor([2.0, 8.0]))
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0), uncond)
