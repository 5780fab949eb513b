"""VideoFusion (Luo et al. 2023): the decomposed process (Eq. 7-13), Eq. 14's training modes, the samplers
(Fig. 4 / Algorithm 1), noise sharing (Sec. 4.7) and long videos (Sec. 4.6), on tiny nets (4 frames, 8x8)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vfbench.diffusion import DiffusionSchedule, q_sample
from vfbench.errors import UsageError, WeightsError
from vfbench.generators import videofusion_sampling
from vfbench.generators.videofusion import VideoFusion, VideoFusionConfig
from vfbench.generators.videofusion_noise import (
    compose_noise,
    correlation,
    decomposed_noise,
    decomposed_q_sample,
    group_ids,
    keyframe_index,
    lambda_vector,
    remove_base_noise,
)
from vfbench.clips import uint8_to_unit, unit_to_uint8
from vfbench.registry import GENERATORS
from vfbench.prediction import output_to_eps

FRAMES, SIZE = 4, 8
KEY = FRAMES // 2




def make(**overrides) -> VideoFusion:
    overrides.setdefault("num_timesteps", 100)
    overrides.setdefault("sampling_steps", 4)
    num_classes = overrides.pop("num_classes", 0)
    torch.manual_seed(0)  # parameter init only; every draw below uses an explicit generator
    return VideoFusion(VideoFusion.config_for("tiny", frames=FRAMES, size=SIZE, num_classes=num_classes, **overrides))


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Move every weight off its (partly zero) initialisation so outputs depend on inputs and labels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def moving_squares(batch: int = 4) -> torch.Tensor:
    """Structured clips: a coloured 3x3 square moving one pixel per frame on black."""
    video = torch.zeros(batch, FRAMES, 3, SIZE, SIZE, dtype=torch.uint8)
    for b in range(batch):
        for f in range(FRAMES):
            x = f + b % 2
            video[b, f, b % 3, 2:5, x:x + 3] = 255
    return video


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the decomposed forward process (Eq. 7, 9, 11) ------------------------------------------------

def test_registered():
    assert GENERATORS.get("videofusion") is VideoFusion


def test_lambda_vector_and_keyframe():
    assert keyframe_index(16) == 8 and keyframe_index(4) == 2 and keyframe_index(1) == 0
    assert lambda_vector(0.5, 4) == (0.5, 0.5, 1.0, 0.5)
    assert lambda_vector((0.2, 0.3, 1.0, 0.9), 4) == (0.2, 0.3, 1.0, 0.9)


def test_decomposed_noise_statistics():
    lam = 0.5
    lam_vec = lambda_vector(lam, FRAMES)
    g = gen(1)
    base = torch.randn(20000, 1, 2, 2, generator=g)
    residual = torch.randn(20000, FRAMES, 1, 2, 2, generator=g)
    eps = decomposed_noise(base, residual, lam_vec)
    assert torch.equal(eps[:, KEY], base)  # Eq. 11: the keyframe's noise is b exactly
    for i in range(FRAMES):
        assert abs(float(eps[:, i].mean())) < 0.02
        assert abs(float(eps[:, i].var()) - 1.0) < 0.03
    # non-key frames correlate with lambda, and with the keyframe by sqrt(lambda)
    assert abs(correlation(eps[:, 0], eps[:, 1]) - lam) < 0.02
    assert abs(correlation(eps[:, 0], eps[:, 3]) - lam) < 0.02
    assert abs(correlation(eps[:, 1], eps[:, KEY]) - math.sqrt(lam)) < 0.02


def test_per_frame_lambda_vector_correlations():
    lam_vec = (0.9, 0.1, 1.0, 0.9)
    g = gen(2)
    eps = decomposed_noise(torch.randn(20000, 1, 2, 2, generator=g), torch.randn(20000, 4, 1, 2, 2, generator=g), lam_vec)
    assert abs(correlation(eps[:, 0], eps[:, 3]) - 0.9) < 0.02
    assert abs(correlation(eps[:, 0], eps[:, 1]) - math.sqrt(0.9 * 0.1)) < 0.02


def test_lambda_zero_is_iid_per_frame_diffusion():
    schedule = DiffusionSchedule.named("cosine", 100)
    lam_vec = lambda_vector(0.0, FRAMES)
    g = gen(3)
    x0 = torch.rand(6, FRAMES, 3, SIZE, SIZE, generator=g) * 2 - 1
    base, residual = torch.randn(6, 3, SIZE, SIZE, generator=g), torch.randn(6, FRAMES, 3, SIZE, SIZE, generator=g)
    t = torch.randint(0, 100, (6,), generator=g)
    z_t, eps = decomposed_q_sample(schedule, x0, t, base, residual, lam_vec)
    iid = residual.clone()
    iid[:, KEY] = base  # the keyframe's own noise is b, itself independent of every r^i
    assert torch.allclose(z_t, q_sample(schedule, x0, t, iid), atol=1e-6)
    big = decomposed_noise(torch.randn(20000, 1, 2, 2, generator=g), torch.randn(20000, FRAMES, 1, 2, 2, generator=g),
                           lam_vec)
    assert abs(correlation(big[:, 0], big[:, 1])) < 0.03 and abs(correlation(big[:, 0], big[:, KEY])) < 0.03


@pytest.mark.parametrize("lam", [1.5, -0.1, float("nan"), (0.5, 0.5, 0.9, 0.5), (0.5, 1.0)])
def test_bad_lambda_raises_usage_error(lam):
    with pytest.raises(UsageError, match="lam"):
        VideoFusion.config_for("tiny", frames=FRAMES, size=SIZE, lam=lam)


def test_remove_base_noise_and_compose_match_eq_12_13():
    schedule = DiffusionSchedule.named("cosine", 100)
    lam_vec = lambda_vector(0.5, FRAMES)
    g = gen(4)
    x0 = torch.zeros(2, FRAMES, 3, SIZE, SIZE)
    base, residual = torch.randn(2, 3, SIZE, SIZE, generator=g), torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=g)
    t = torch.tensor([10, 90])
    z_t, eps = decomposed_q_sample(schedule, x0, t, base, residual, lam_vec)
    others = [0, 1, 3]
    # a perfect base prediction leaves exactly the residual part of the noise (Eq. 12)
    z_prime = remove_base_noise(schedule, z_t[:, others], t, base, [lam_vec[i] for i in others])
    expect = schedule.sqrt_one_minus_abar[t].float().view(-1, 1, 1, 1, 1) * math.sqrt(0.5) * residual[:, others]
    assert torch.allclose(z_prime, expect, atol=1e-5)
    # perfect predictions recompose the true noise (Eq. 13)
    assert torch.allclose(compose_noise(base, residual[:, others], lam_vec, KEY), eps, atol=1e-6)


def test_default_config_is_the_papers_table_8():
    cfg = VideoFusionConfig()
    assert (cfg.frames, cfg.lam, cfg.schedule, cfg.num_timesteps) == (16, 0.5, "cosine", 1000)
    assert (cfg.eta, cfg.guidance_scale, cfg.mode) == (0.0, 3.0, "stopgrad")
    # the sampler departs: DPM-Solver++(2M) at 10 steps is within noise of DDIM-100 (README); the paper's
    # DDIM-50 is the `paper` recipe's
    assert (cfg.sampler, cfg.sampling_steps) == ("dpmpp_2m", 10)
    from vfbench.recipes import recipe_overrides

    assert {k: recipe_overrides("videofusion", "paper")[k] for k in ("sampler", "sampling_steps")} == \
        {"sampler": "ddim", "sampling_steps": 50}
    assert lambda_vector(cfg.lam, cfg.frames)[8] == 1.0  # frame 8 of 16 is the keyframe
    paper = VideoFusion.config_for("paper", frames=16, size=64)
    assert (paper.base.base_width, paper.residual.base_width) == (192, 128)
    assert paper.base.channel_mults == paper.residual.channel_mults == (1, 2, 3, 5)
    assert paper.residual.num_frame_indices == 16 and paper.base.num_frame_indices == 0


def test_config_round_trip_with_lambda_vector():
    model = make(lam=(0.9, 0.9, 1.0, 0.7), mode="no-stopgrad", noise_sharing="labels")
    again = VideoFusion.from_config_dict(model.config_dict())
    assert again.config == model.config and again.lam == (0.9, 0.9, 1.0, 0.7)


def test_config_validation_names_the_option():
    with pytest.raises(UsageError, match="mode"):
        VideoFusion.config_for("tiny", frames=FRAMES, size=SIZE, mode="frozen")
    cfg = VideoFusion.config_for("tiny", frames=FRAMES, size=SIZE)
    with pytest.raises(UsageError, match="num_frame_indices"):
        dataclasses.replace(cfg, frames=8)
    with pytest.raises(UsageError, match="batch clips"):
        make().loss({"video": torch.zeros(2, FRAMES, 3, 16, 16, dtype=torch.uint8)}, gen(0))


# -- Eq. 14: the three training modes ---------------------------------------------------------------

def _base_grads(model, out, term):
    params = list(model.base.parameters())
    return torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)


def test_stopgrad_base_gradient_is_the_keyframe_terms():
    model = perturb(make(mode="stopgrad"))
    out = model.loss({"video": moving_squares()}, gen(5))
    full = _base_grads(model, out, out["loss"])
    key_only = _base_grads(model, out, out["loss_key"] / FRAMES)  # its weight inside the element mean
    for a, b in zip(full, key_only):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    assert any(float(a.abs().max()) > 0 for a in full)
    residual_grads = torch.autograd.grad(out["loss"], list(model.residual.parameters()))
    assert any(float(r.abs().max()) > 0 for r in residual_grads)


def test_no_stopgrad_lets_the_residual_terms_reach_the_base():
    model = perturb(make(mode="no-stopgrad"))
    out = model.loss({"video": moving_squares()}, gen(5))
    full = _base_grads(model, out, out["loss"])
    key_only = _base_grads(model, out, out["loss_key"] / FRAMES)
    diff = max(float((a - b).abs().max()) for a, b in zip(full, key_only))
    scale = max(float(a.abs().max()) for a in key_only)
    assert diff > 1e-3 * scale


def test_stopgrad_and_no_stopgrad_share_the_forward_value():
    a = perturb(make(mode="stopgrad"))
    b = perturb(make(mode="no-stopgrad"))
    la = a.loss({"video": moving_squares()}, gen(6))
    lb = b.loss({"video": moving_squares()}, gen(6))
    assert torch.allclose(la["loss"], lb["loss"]) and torch.allclose(la["loss_key"], lb["loss_key"])


def test_fixed_mode_never_updates_the_base():
    model = perturb(make(mode="fixed"))
    groups = model.param_groups(1e-2)
    assert [g["name"] for g in groups] == ["residual"]
    assert all(not p.requires_grad for p in model.base.parameters())
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    residual_before = [p.clone() for p in model.residual.parameters()]
    opt = torch.optim.Adam(groups)
    out = model.loss({"video": moving_squares()}, gen(7))
    out["loss"].backward()
    assert all(p.grad is None for p in model.base.parameters())
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.base.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(residual_before, model.residual.parameters()))
    model.train()
    assert not model.base.training and model.residual.training


def test_param_groups_give_a_pretrained_base_a_smaller_learning_rate(tmp_path):
    model = make(base_lr_mult=0.1)
    groups = {g["name"]: g for g in model.param_groups(1e-3)}
    assert set(groups) == {"base", "residual"}
    # from scratch: the full rate (the small one is for fine-tuning a pretrained base)
    assert groups["base"]["lr"] == pytest.approx(1e-3) and groups["residual"]["lr"] == pytest.approx(1e-3)
    model.load_base_state(make().base.state_dict())
    groups = {g["name"]: g for g in model.param_groups(1e-3)}
    assert groups["base"]["lr"] == pytest.approx(1e-4) and groups["residual"]["lr"] == pytest.approx(1e-3)
    torch.save(model.state_dict(), tmp_path / "m.pt")  # the flag travels with the weights
    again = make(base_lr_mult=0.1)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert {g["name"]: g["lr"] for g in again.param_groups(1e-3)}["base"] == pytest.approx(1e-4)


def test_tiny_videofusion_overfits_four_clips_with_noise_sharing():
    # The default mode's overfit check is TestVideoFusionConformance (tests/test_conformance.py); this one
    # trains the Sec. 4.7 set-up: lambda 0.9, b shared by content label, r by motion label.
    model = make(noise_sharing="labels", lam=0.9, prediction="eps")  # a 30-step loss check: eps drops fastest
    batch = {"video": moving_squares(), "content": torch.tensor([0, 1, 0, 1]), "motion": torch.tensor([0, 0, 1, 1])}

    def held_out_loss() -> float:
        with torch.no_grad():
            return sum(model.loss(batch, gen(100 + i))["loss"].item() for i in range(2)) / 2

    start = held_out_loss()
    opt = torch.optim.Adam(model.param_groups(2e-2))
    g = gen(8)
    for _ in range(30):
        out = model.loss(batch, g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    end = held_out_loss()
    assert math.isfinite(end) and end < 0.5 * start, (start, end)


# -- pretraining the base (Sec. 3.3) ---------------------------------------------------------------

def test_pretrain_loss_trains_only_the_base():
    model = make()
    out = model.pretrain_loss({"video": moving_squares()}, gen(9))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert all(p.grad is None for p in model.residual.parameters())
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.base.parameters())
    images = {"image": moving_squares()[:, 0]}
    assert torch.isfinite(model.pretrain_loss(images, gen(9))["loss"])
    with pytest.raises(UsageError, match="fixed"):
        make(mode="fixed").pretrain_loss({"video": moving_squares()}, gen(9))


def test_load_base_state_strict_and_clear():
    source = perturb(make())
    target = make(mode="fixed")
    target.load_base_state(source.base.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(source.base.parameters(), target.base.parameters()))
    assert all(not p.requires_grad for p in target.base.parameters())
    target.load_base_state(source.state_dict())  # a whole VideoFusion checkpoint: its base part
    wider = VideoFusion(VideoFusion.config_for("small", frames=FRAMES, size=SIZE))
    with pytest.raises(WeightsError, match="base checkpoint"):
        target.load_base_state(wider.base.state_dict())


def test_residual_init_base_starts_the_residual_net_as_the_image_dpm():
    """``residual_init='base'``: loading a pretrained base also puts its weights into the residual U-Net's spatial
    layers (the keyframe-condition input, the frame-index embedding and the temporal blocks at zero), so the
    residual net starts as that image DPM applied to each frame; the option gives the residual net the base's
    widths (at `small` 32 instead of 24) and keeps its own conditioning input, frame embedding and temporal blocks."""
    source = perturb(make())
    cfg = dataclasses.replace(make().config, residual_init="base")
    model = VideoFusion(cfg)
    before = {k: v.clone() for k, v in model.residual.state_dict().items()}
    model.load_base_state(source.base.state_dict())
    z = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    t = torch.tensor([300 // 10, 700 // 10])
    with torch.no_grad():
        residual = model.residual(z, t, frame_index=torch.arange(FRAMES).expand(2, FRAMES),
                                  cond=torch.randn(2, 3, FRAMES, SIZE, SIZE))
        image = source.base(z.transpose(1, 2).flatten(0, 1), t.repeat_interleave(FRAMES))
    assert torch.allclose(residual, image.view(2, FRAMES, 3, SIZE, SIZE).transpose(1, 2), atol=1e-5)
    temporal = [k for k in before if ".temporal." in k or k.startswith("initial_temporal")]
    assert temporal and all(torch.equal(model.residual.state_dict()[k], before[k]) for k in temporal)
    random = make()  # the paper's randomly initialised residual generator is left alone
    kept = {k: v.clone() for k, v in random.residual.state_dict().items()}
    random.load_base_state(source.base.state_dict())
    assert all(torch.equal(random.residual.state_dict()[k], v) for k, v in kept.items())
    small = VideoFusion.config_for("small", frames=FRAMES, size=SIZE)
    assert small.residual.base_width < small.base.base_width  # the paper's narrower residual generator
    widened = VideoFusion.config_for("small", frames=FRAMES, size=SIZE, residual_init="base").residual
    assert (widened.base_width, widened.head_dim) == (small.base.base_width, small.base.head_dim)
    assert (widened.extra_input_channels, widened.video, widened.num_frame_indices) == (3, True, FRAMES)
    with pytest.raises(UsageError, match="videofusion.residual_init must be one of random, base"):
        dataclasses.replace(make().config, residual_init="pretrained")


# -- sampling (Fig. 4, Appendix A) ------------------------------------------------------------------

def test_sample_shape_dtype_and_determinism():
    model = perturb(make())
    a = model.sample(3, gen(10))
    assert a.dtype == torch.uint8 and a.shape == (3, FRAMES, 3, SIZE, SIZE)
    assert torch.equal(a, model.sample(3, gen(10)))
    # Per-clip noise streams make the clips independent of batching. The arithmetic is not: oneDNN picks other
    # convolution kernels for a batch of 1 than of 3, so a value may land one uint8 level away. A wrong
    # stream would change almost every value by far more.
    diff = (a.int() - model.sample(3, gen(10), batch_size=2).int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    assert not torch.equal(a, model.sample(3, gen(11)))


def test_ddim_eta0_is_a_function_of_the_initial_noises():
    model = perturb(make())
    g = gen(12)
    b_T, r_T = torch.randn(2, 3, SIZE, SIZE, generator=g), torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=g)
    a = model.sample(2, gen(1), base_noise=b_T, residual_noise=r_T, eta=0.0)
    b = model.sample(2, gen(999), base_noise=b_T, residual_noise=r_T, eta=0.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddpm", None), ("ddim", 1.0)])
def test_same_base_noise_gives_the_same_keyframe(sampler, eta):
    # Sec. 3.5: the keyframe x^k depends only on the base noise: z_T^k = b, epshat^k = z^b(z^k, t), and the
    # keyframe's fresh noise in a stochastic step is the shared b' (lam_k = 1). The other frames differ.
    model = perturb(make(num_timesteps=20))
    steps = 20 if sampler == "ddpm" else 4
    clips = model.sample(3, gen(13), base_seed=7, sampler=sampler, eta=eta, steps=steps)
    assert torch.equal(clips[0, KEY], clips[1, KEY]) and torch.equal(clips[0, KEY], clips[2, KEY])
    assert not torch.equal(clips[0, 0], clips[1, 0])
    other = model.sample(3, gen(13), base_seed=8, sampler=sampler, eta=eta, steps=steps)
    assert not torch.equal(other[0, KEY], clips[0, KEY])


def test_noise_streams():
    shared = videofusion_sampling.SharedNoise(5, "residual")
    first = shared.begin(0, 2).draw((2, 3))
    second = shared.begin(2, 3).draw((2, 3))  # a later batch of the same call: the same k-th draw
    assert first.shape == (2, 2, 3) and torch.equal(first[0], first[1]) and torch.equal(first[0], second[0])
    assert not torch.equal(shared.draw((2, 3))[0], second[0])  # the next draw is new
    assert not torch.equal(videofusion_sampling.SharedNoise(5, "base").begin(0, 1).draw((2, 3))[0], first[0])
    per_clip = videofusion_sampling.PerClipNoise(torch.tensor([1, 2, 3]))
    whole = per_clip.begin(0, 3).draw((4,))
    assert torch.equal(per_clip.begin(1, 3).draw((4,)), whole[1:]) and not torch.equal(whole[0], whole[1])


def test_same_residual_noise_different_base_noise():
    model = perturb(make())
    r_T = torch.randn(FRAMES, 3, SIZE, SIZE, generator=gen(14))
    clips = model.sample(2, gen(15), residual_noise=r_T)  # shared r_T, per-clip b_T
    assert not torch.equal(clips[0, KEY], clips[1, KEY])
    g = gen(16)
    b_T = torch.randn(3, SIZE, SIZE, generator=g)
    one = model.sample(1, gen(0), base_noise=b_T, residual_noise=r_T)
    two = model.sample(1, gen(0), base_noise=b_T, residual_noise=torch.randn(FRAMES, 3, SIZE, SIZE, generator=g))
    assert torch.equal(one[0, KEY], two[0, KEY]) and not torch.equal(one[0, 0], two[0, 0])


def test_bad_sampling_controls_are_usage_errors():
    model = make()
    with pytest.raises(UsageError, match="base_noise"):
        model.sample(2, gen(0), base_noise=torch.zeros(3, 4, 4))
    with pytest.raises(UsageError, match="did you mean 'steps'"):
        model.sample(2, gen(0), step=3)
    with pytest.raises(UsageError, match="sampler"):
        model.sample(2, gen(0), sampler="euler")


def test_class_conditional_sampling_with_guidance():
    model = perturb(make(num_classes=3))
    out = model.loss({"video": moving_squares(), "label": torch.tensor([0, 1, 2, 0])}, gen(17))
    assert torch.isfinite(out["loss"])
    labels = torch.tensor([0, 1, 2])
    guided = model.sample(3, gen(18), labels=labels, guidance_scale=3.0)
    assert guided.shape == (3, FRAMES, 3, SIZE, SIZE) and guided.dtype == torch.uint8
    assert torch.equal(guided, model.sample(3, gen(18), labels=labels, guidance_scale=3.0))
    assert not torch.equal(guided, model.sample(3, gen(18), labels=labels, guidance_scale=1.0))
    # guidance is eps_u + s (eps_c - eps_u) on the full Eq. 13 prediction of both networks
    z = torch.randn(3, FRAMES, 3, SIZE, SIZE, generator=gen(19))
    t = torch.full((3,), 50)
    with torch.no_grad():
        cond = model.predict_noise(z, t, labels)
        uncond = model.predict_noise(z, t, torch.full((3,), 3))
        assert torch.allclose(model.guided_noise(z, t, labels, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)
    with pytest.raises(UsageError, match="labels"):
        model.sample(2, gen(0), labels=torch.tensor([0, 7]))
    with pytest.raises(UsageError, match="unconditional"):
        make().sample(2, gen(0), labels=torch.tensor([0, 1]))


def test_sampling_restores_training_mode():
    model = make()
    model.train()
    model.sample(1, gen(0))
    assert model.training and model.residual.training


# -- explicit noise sharing (Sec. 4.7) ---------------------------------------------------------------

def test_group_ids():
    assert group_ids(torch.tensor([3, 1, 3, -1, -1]), 5).tolist() == [1, 0, 1, 2, 3]
    assert group_ids(None, 3).tolist() == [0, 1, 2]


def test_noise_sharing_by_labels_shares_the_noises():
    model = make(noise_sharing="labels", lam=0.9, prediction="eps")  # a 30-step loss check: eps drops fastest
    batch = {"video": moving_squares(4), "content": torch.tensor([0, 1, 0, -1]), "motion": torch.tensor([2, 2, 5, 5])}
    t, base, residual = model.training_noise(batch, batch["video"].shape, gen(20))
    assert torch.equal(base[0], base[2]) and not torch.equal(base[0], base[1]) and not torch.equal(base[3], base[0])
    assert torch.equal(residual[0], residual[1]) and torch.equal(residual[2], residual[3])
    assert not torch.equal(residual[0], residual[2])
    # loss() draws exactly these noises: same generator state, same loss as a hand-made Eq. 14 keyframe term
    g = gen(20)
    out = model.loss(batch, g)
    x0 = batch["video"].float() / 127.5 - 1
    z_t, eps = decomposed_q_sample(model.schedule, x0, t, base, residual, model.lam)
    with torch.no_grad():
        key = torch.nn.functional.mse_loss(model.base(z_t[:, KEY], t), base)
    assert torch.allclose(out["loss_key"].detach(), key, atol=1e-6)
    unshared = make(noise_sharing="none").training_noise(batch, batch["video"].shape, gen(20))[1]
    assert not torch.equal(unshared[0], unshared[2])
    with pytest.raises(UsageError, match="content"):
        model.loss({"video": moving_squares(4)}, gen(0))


# -- long videos (Sec. 4.6) -----------------------------------------------------------------------

def test_sample_long_length_prefix_and_fixed_base_noise(monkeypatch):
    model = perturb(make())
    seen = []
    real = videofusion_sampling.denoise_window

    def spy(model_, plan, base, residual, *args, **kw):
        seen.append(base.clone())
        return real(model_, plan, base, residual, *args, **kw)

    monkeypatch.setattr(videofusion_sampling, "denoise_window", spy)
    long = model.sample_long(2, 9, gen(21))
    assert long.shape == (2, 9, 3, SIZE, SIZE) and long.dtype == torch.uint8
    assert len(seen) == 6  # default overlap N // 2 + 1 = 3: 4 frames, then 1 new frame per window
    seen.clear()
    assert model.sample_long(2, 9, gen(21), overlap=2).shape == (2, 9, 3, SIZE, SIZE)
    assert len(seen) == 4  # 4 + 2 + 2 + 2 >= 9
    assert all(torch.equal(seen[0], b) for b in seen)  # the base noise is kept across windows
    monkeypatch.undo()
    assert torch.equal(long[:, :FRAMES], model.sample(2, gen(21)))  # the first window is an ordinary sample


def _window(model, known):
    plan = videofusion_sampling._Plan(model, 2, gen(22))
    g = gen(23)
    base, residual = torch.randn(2, 3, SIZE, SIZE, generator=g), torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        return videofusion_sampling.denoise_window(model, plan, base, residual, None, None, None, known)


@pytest.mark.parametrize("temporal", [False, True])
def test_replacement_conditions_the_window_through_the_keyframe(temporal):
    model = perturb(make(residual_temporal=temporal), scale=0.03)
    g = gen(24)
    known_a = torch.rand(2, KEY + 1, 3, SIZE, SIZE, generator=g) * 2 - 1  # known frames 0..k: the keyframe too
    known_b = -known_a
    a, b = _window(model, known_a), _window(model, known_b)
    assert torch.equal(a[:, :KEY + 1], known_a) and torch.equal(b[:, :KEY + 1], known_b)  # kept exactly
    assert not torch.allclose(a[:, KEY + 1:], b[:, KEY + 1:], atol=1e-3)  # new frames follow the known ones
    # Without the keyframe among the known frames, the paper's per-frame residual net lets nothing reach the new
    # ones: frames interact only via bhat = z^b(z^k) (Eq. 12-13), which is why sample_long's default overlap is
    # N // 2 + 1. The temporal residual net (residual_temporal) attends across frames, so the known ones reach it.
    a, b = _window(model, known_a[:, :KEY]), _window(model, known_b[:, :KEY])
    assert torch.allclose(a[:, KEY:], b[:, KEY:], atol=1e-5) != temporal


def test_sample_long_rejects_bad_overlap():
    with pytest.raises(UsageError, match="overlap"):
        make().sample_long(1, 8, gen(0), overlap=FRAMES)


# -- residual conditioning (README "VideoFusion: departures") and recipes ----------------------------------
def spy_residual_condition(model: VideoFusion) -> dict:
    """Record the ``cond`` of every residual-net call: ``seen["cond"]`` the last, ``seen["all"]`` all of them."""
    seen = {"all": []}
    original = model.residual.forward

    def spy(x, t, cond=None, **kw):
        # one condition per clip, whichever way the residual net takes it: [B*(N-1), C, H, W] from the per-frame
        # net, [B, C, N, H, W] (the same image at every frame) from the temporal one
        if cond is None:
            per_clip = None
        elif cond.ndim == 5:
            assert torch.equal(cond, cond[:, :, :1].expand_as(cond))
            per_clip = cond[:, :, 0]
        else:
            per_clip = cond[:: FRAMES - 1]
            assert torch.equal(cond, per_clip.repeat_interleave(FRAMES - 1, dim=0))
        seen["cond"] = per_clip
        seen["all"].append(per_clip)
        return original(x, t, cond=cond, **kw)

    model.residual.forward = spy
    return seen


@pytest.mark.parametrize("temporal", [False, True])
def test_residual_generator_sees_the_base_generators_keyframe_estimate(temporal):
    model = make(residual_condition="keyframe_x0", residual_temporal=temporal)
    assert model.config.prediction == "x0"
    assert model.residual.cfg.extra_input_channels == 3 and model.base.cfg.extra_input_channels == 0
    seen = spy_residual_condition(model)
    g = gen(0)
    z = torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=g)
    t = torch.tensor([10, 80])
    with torch.no_grad():
        parts = model.predict_base_and_residual(z, t)
    # the condition is the base's clean keyframe estimate (x0-prediction: its output), clipped, one per frame
    assert torch.equal(seen["cond"], parts["base_out"].clamp(-1, 1))


def test_residual_condition_none_is_the_papers_network_and_follows_the_option():
    from vfbench.config import from_dict, to_dict

    model = make(residual_condition="none")
    assert model.residual.cfg.extra_input_channels == 0
    # changing the option through a config dict rebuilds the residual net's input with it
    data = to_dict(model.config)
    data["residual_condition"] = "keyframe_latent"
    cfg = from_dict(type(model.config), data)
    assert cfg.residual.extra_input_channels == 3
    with pytest.raises(UsageError, match="residual_condition must be one of"):
        make(residual_condition="clip")


def test_saved_configs_without_the_new_fields_load_as_they_were_trained():
    # runs trained before prediction/residual_condition existed were eps-predicting and unconditioned
    data = make().config_dict()
    for k in ("prediction", "min_snr_gamma", "residual_condition", "residual_temporal"):
        data.pop(k)
    data["residual"]["extra_input_channels"] = 0
    data["residual"]["video"] = False
    old = VideoFusion.from_config_dict(data)
    assert old.config.prediction == "eps" and old.config.residual_condition == "none"
    assert not old.config.residual_temporal and not old.residual.cfg.video


def test_paper_recipe_is_eps_prediction_without_residual_conditioning():
    from vfbench.recipes import recipe_overrides

    assert recipe_overrides("videofusion", "paper") == {"prediction": "eps", "residual_condition": "none",
                                                        "residual_temporal": False, "min_snr_gamma": 0.0,
                                                        "sampler": "ddim", "sampling_steps": 50}
    assert recipe_overrides("vdm", "default") == {}
    with pytest.raises(UsageError, match="did you mean 'paper'"):
        recipe_overrides("vdm", "papr")
    model = make(**recipe_overrides("videofusion", "paper"))
    out = model.loss({"video": moving_squares()}, gen(1))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("prediction, base_prediction", [("eps", None), ("v", None), ("x0", None), ("x0", "v"),
                                                         ("v", "eps")])
def test_exact_outputs_give_the_exact_noise_in_every_parameterisation(prediction, base_prediction, temporal):
    # Eq. 12-13 in each parameterisation (the base's own where base_prediction is set): nets that output their
    # exact targets give back the exact frame noise
    model = make(prediction=prediction, base_prediction=base_prediction, residual_condition="none", lam=0.6,
                 residual_temporal=temporal)
    x0 = uint8_to_unit(moving_squares()).double()
    g = gen(4)
    t, base, residual = model.training_noise({}, x0.shape, g)
    from vfbench.generators.videofusion_noise import decomposed_q_sample
    from vfbench.prediction import prediction_target

    z, eps = decomposed_q_sample(model.schedule, x0, t, base.double(), residual.double(), model.lam)
    key_target = prediction_target(model.schedule, x0[:, KEY], eps[:, KEY], t, base_prediction or prediction)
    others = [i for i in range(FRAMES) if i != KEY]
    from vfbench.generators.videofusion_noise import residual_process, residual_target

    proc = residual_process(model.schedule, t, [model.lam[i] for i in others], x0)
    res_target = residual_target(x0[:, others], residual.double()[:, others], proc, prediction)
    model.base.forward = lambda x, tt, **kw: key_target
    if temporal:  # the video net's output [B, C, N, H, W]; its keyframe slot is discarded
        video_out = torch.cat([res_target[:, :KEY], torch.full_like(res_target[:, :1], 7.0), res_target[:, KEY:]], 1)
        model.residual.forward = lambda x, tt, **kw: video_out.transpose(1, 2)
    else:
        model.residual.forward = lambda x, tt, **kw: res_target.flatten(0, 1)
    parts = model.predict_base_and_residual(z, t, stop_gradient=True)
    from vfbench.generators.videofusion_noise import compose_noise

    eps_hat = compose_noise(parts["base_used"], parts["residual_hat"], model.lam, KEY)
    assert torch.allclose(eps_hat, eps, atol=1e-5)


def test_default_residual_condition_is_the_clean_keyframe_in_training():
    model = make()
    assert model.config.residual_condition == "keyframe"
    seen = spy_residual_condition(model)
    clips = moving_squares()
    model.loss({"video": clips}, gen(0))
    assert torch.equal(seen["cond"], uint8_to_unit(clips)[:, KEY])  # the real central frame, as the paper's CLIP embedding of it


@pytest.mark.parametrize("keyframe_pass", ("renoise", "chain"))
@pytest.mark.parametrize("sampler", ("ddim", "ddpm", "dpmpp_2m"))
def test_keyframe_sampling_conditions_on_the_finished_keyframe(sampler, keyframe_pass):
    # first pass: the keyframe's chain alone; joint pass: every residual call sees that finished keyframe, and
    # the sample's keyframe is its bytes. "chain" replays the first pass's base predictions (one base call per
    # step); "renoise" calls the base again on the re-noised keyframe (two per step)
    model = perturb(make(residual_condition="keyframe", keyframe_pass=keyframe_pass))
    conds = spy_residual_condition(model)["all"]
    base_calls = []
    base_forward = model.base.forward
    model.base.forward = lambda x, t, **kw: base_calls.append(1) or base_forward(x, t, **kw)
    clips = model.sample(2, gen(5), sampler=sampler, steps=4)
    assert len(base_calls) == (4 if keyframe_pass == "chain" else 8)
    assert len(conds) == 4 and all(torch.equal(c, conds[0]) for c in conds)
    keyframe = unit_to_uint8(conds[0])
    assert torch.equal(clips[:, KEY], keyframe)
    again = model.sample(2, gen(5), sampler=sampler, steps=4)
    assert torch.equal(clips, again)


def test_renoised_keyframe_pass_gives_the_residual_net_training_latents():
    # keyframe_pass="renoise": at every joint step the keyframe slot is z_t^k = sqrt(abar_t) x^k + sqrt(1 - abar_t) b
    # (Eq. 9 with Eq. 11's eps^k = b): the finished keyframe x^k noised with the clip's own initial base noise b, as
    # loss() noises the real keyframe; the base's prediction on it is the bhat that the residual net's z' removes
    model = perturb(make(residual_condition="keyframe"))
    assert model.config.keyframe_pass == "renoise"
    b_T = torch.randn(2, 3, SIZE, SIZE, generator=gen(3))
    r_T = torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=gen(4))
    seen = []
    original = model.predict_base_and_residual

    def spy(z_t, t, *args, **kw):
        seen.append((z_t[:, KEY].clone(), t.clone(), kw["keyframe"].clone(), kw["base_hat"].clone()))
        return original(z_t, t, *args, **kw)

    model.predict_base_and_residual = spy
    clips = model.sample(2, gen(0), base_noise=b_T, residual_noise=r_T, sampler="ddim", steps=4)
    assert len(seen) == 4
    for z_key, t, keyframe, base_hat in seen:
        assert torch.allclose(z_key, q_sample(model.schedule, keyframe, t, b_T), atol=1e-6)
        want = output_to_eps(model.schedule, z_key, t, model.base(z_key, t), model.config.prediction)
        assert torch.allclose(base_hat, want, atol=1e-5)
    # the same noises through the "chain" pass: the same keyframe, other non-key frames
    chain = model.sample(2, gen(0), base_noise=b_T, residual_noise=r_T, sampler="ddim", steps=4, keyframe_pass="chain")
    assert torch.equal(chain[:, KEY], clips[:, KEY]) and not torch.equal(chain, clips)


def test_base_prediction_trains_the_base_in_its_own_parameterisation():
    # the keyframe term and the image-DPM pretraining target the base's parameterisation (here v), the residual
    # term the residual generator's (x0): with a base that outputs exactly its v target, the keyframe loss is 0
    from vfbench.generators.videofusion_noise import decomposed_q_sample
    from vfbench.prediction import prediction_target

    model = make(prediction="x0", base_prediction="v")
    assert model.base_prediction == "v" and make().base_prediction == "x0"
    clips = moving_squares()
    x0 = uint8_to_unit(clips)
    t, base, residual = model.training_noise({}, x0.shape, gen(3))
    _z, eps = decomposed_q_sample(model.schedule, x0, t, base, residual, model.lam)
    v_target = prediction_target(model.schedule, x0[:, KEY], eps[:, KEY], t, "v")
    model.base.forward = lambda x, tt, **kw: v_target
    assert model.loss({"video": clips}, gen(3))["loss_key"].item() < 1e-10
    data = model.config_dict()
    data.pop("base_prediction")  # a config saved before the option: the base predicted what the residual did
    assert VideoFusion.from_config_dict(data).base_prediction == "x0"
    with pytest.raises(UsageError, match="videofusion.base_prediction"):
        make(base_prediction="noise")


def test_runs_recorded_before_keyframe_pass_sample_as_they_did():
    # a config saved before the option existed has no keyframe_pass: it loads as "chain", the pass it sampled with
    data = make(residual_condition="keyframe").config_dict()
    data.pop("keyframe_pass")
    assert VideoFusion.from_config_dict(data).config.keyframe_pass == "chain"
    with pytest.raises(UsageError, match="keyframe_pass must be one of renoise, chain"):
        make(keyframe_pass="forward")
    with pytest.raises(UsageError, match="keyframe_pass must be one of renoise, chain"):
        perturb(make(residual_condition="keyframe")).sample(1, gen(0), keyframe_pass="forward")
