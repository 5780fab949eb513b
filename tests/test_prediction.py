"""What a denoiser predicts (vfbench.prediction) and VideoFusion's residual process in those terms."""

from __future__ import annotations

import pytest
import torch

from vfbench.diffusion import DiffusionSchedule, q_sample
from vfbench.errors import UsageError
from vfbench.generators.videofusion_noise import (decomposed_q_sample, remove_base_noise, residual_output_to_noise,
                                                  residual_process, residual_target)
from vfbench.prediction import (PREDICTIONS, check_min_snr_gamma, check_prediction, loss_weights, output_to_eps,
                                output_to_x0, prediction_target)

S = DiffusionSchedule.named("cosine", 1000)


def _draw(seed=0, shape=(5, 3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 900, 999])
    return x0, eps, t


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_the_exact_target_converts_back_to_the_noise_and_the_clean_sample(prediction):
    x0, eps, t = _draw()
    z = q_sample(S, x0, t, eps)
    target = prediction_target(S, x0, eps, t, prediction)
    assert torch.allclose(output_to_eps(S, z, t, target, prediction), eps, atol=1e-6)
    assert torch.allclose(output_to_x0(S, z, t, target, prediction), x0, atol=1e-6)


def test_v_is_salimans_and_ho_definition():
    x0, eps, t = _draw(1)
    a = S.sqrt_abar[t].view(-1, 1, 1, 1)
    s = S.sqrt_one_minus_abar[t].view(-1, 1, 1, 1)
    assert torch.allclose(prediction_target(S, x0, eps, t, "v"), a * eps - s * x0)
    # an error in v moves x0 by at most as much (|dx0| = sqrt(1 - abar) |dv|); an error in eps by sqrt(1/abar - 1)
    z = q_sample(S, x0, t, eps)
    err = torch.full_like(x0, 0.01)
    dx_v = output_to_x0(S, z, t, prediction_target(S, x0, eps, t, "v") + err, "v") - x0
    dx_eps = output_to_x0(S, z, t, eps + err, "eps") - x0
    assert float(dx_v.abs().max()) <= 0.01 + 1e-9
    assert float(dx_eps[-1].abs().max()) > 100 * 0.01  # at the last step an eps error is amplified > 100x


def test_min_snr_gamma_weights():
    t = torch.tensor([0, 500, 999])
    abar = S.alphas_cumprod[t]
    snr = abar / (1 - abar)
    assert torch.equal(loss_weights(S, t, "x0", 0.0), torch.ones(3))
    for prediction, expect in (("eps", snr.clamp(max=5) / snr), ("v", snr.clamp(max=5) / (snr + 1)),
                               ("x0", snr.clamp(max=5))):
        assert torch.allclose(loss_weights(S, t, prediction, 5.0).double(), expect, rtol=1e-5)


def test_bad_options_are_one_sentence_errors():
    with pytest.raises(UsageError, match="prediction must be one of eps, v, x0"):
        check_prediction("noise")
    for bad in (-1, float("inf"), float("nan"), True):
        with pytest.raises(UsageError, match="min_snr_gamma"):
            check_min_snr_gamma(bad)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_videofusion_residual_process_inverts_exactly(prediction):
    # after Eq. 12 with the exact base noise, z' = sqrt(abar) x + sqrt(1 - abar) sqrt(1 - lam) r: the residual
    # net's exact target converts back to r for every parameterisation
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 4, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    base = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    residual = torch.randn(3, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    lam = (0.5, 0.3, 1.0, 0.9)
    t = torch.tensor([3, 400, 998])
    z, _ = decomposed_q_sample(S, x0, t, base, residual, lam)
    others, lam_o = [0, 1, 3], [0.5, 0.3, 0.9]
    z_prime = remove_base_noise(S, z[:, others], t, base, lam_o)
    proc = residual_process(S, t, lam_o, z_prime)
    alpha, sigma, c = proc
    assert torch.allclose(alpha ** 2 + sigma ** 2, torch.ones_like(alpha))
    assert torch.allclose(z_prime / c, alpha * x0[:, others] + sigma * residual[:, others], atol=1e-9)
    target = residual_target(x0[:, others], residual[:, others], proc, prediction)
    assert torch.allclose(residual_output_to_noise(z_prime, target, proc, prediction), residual[:, others], atol=1e-6)


@pytest.mark.parametrize("prediction", ("v", "x0"))
def test_conversions_of_a_bf16_output_stay_in_float32(prediction):
    # A bf16 network output (autocast) converted to eps must not be rounded back to bf16: the sampler turns
    # eps into x0 = (z - sqrt(1 - abar) eps) / sqrt(abar), which multiplies that rounding by up to
    # 1 / sqrt(abar) (~2e4 at t = 999). Before: bf16 sampling of the reference run drew other clips (28 uint8
    # levels RMSE from fp32's) and scored FVD 160 against 134; after: 0.3 levels, the nets' own bf16 rounding
    x0, eps, t = _draw(2)
    z = q_sample(S, x0, t, eps).float()
    out = prediction_target(S, x0, eps, t, prediction).to(torch.bfloat16)
    for convert in (output_to_eps, output_to_x0) if prediction == "v" else (output_to_eps,):  # x0 -> x0 is the output
        got = convert(S, z, t, out, prediction)
        assert got.dtype == torch.float32
        assert torch.equal(got, convert(S, z, t, out.float(), prediction))
    process = residual_process(S, t, [0.5], z)
    zp = z.unsqueeze(1)
    rhat = residual_output_to_noise(zp, out.unsqueeze(1), process, prediction)
    assert rhat.dtype == torch.float32
    assert torch.equal(rhat, residual_output_to_noise(zp, out.float().unsqueeze(1), process, prediction))
