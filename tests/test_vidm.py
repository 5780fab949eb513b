"""VIDM (Mei & Patel 2023): robustness penalty, PosGN, motion code, truncation, Table-3 switches,
autoregressive sampling, determinism, overfitting. Tiny models: 8x8 frames, 4 frames."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vfbench.clips import uint8_to_unit
from vfbench.errors import UsageError
from vfbench.generators.vidm import VIDM, VIDMConfig, charbonnier_loss
from vfbench.generators.vidm_nets import MotionCodeNet, PositionalGroupNorm, BlockCondition
from vfbench.registry import GENERATORS




def tiny(**overrides) -> VIDM:
    torch.manual_seed(0)
    cfg = VIDM.config_for("tiny", frames=4, size=8)
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    return VIDM(cfg)


def moving_squares(batch: int = 4, frames: int = 4) -> torch.Tensor:
    """A bright 3x3 square moving one pixel per frame on a dark background, one colour per clip."""
    v = torch.full((batch, frames, 3, 8, 8), 30, dtype=torch.uint8)
    for b in range(batch):
        for t in range(frames):
            r, c = b % 2 * 3, (t + b) % 6
            v[b, t, b % 3, r:r + 3, c:c + 3] = 230
    return v


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- robustness penalty (Eq. 4) -----------------------------------------------------------------

def test_charbonnier_known_answer():
    pred = torch.tensor([0.0, 3.0, -1.0])
    target = torch.tensor([0.0, -1.0, 2.0])  # |diff| = 0, 4, 3
    got = charbonnier_loss(pred, target, eta=0.5)
    want = (0.5 + math.sqrt(16.25) + math.sqrt(9.25)) / 3
    assert got.item() == pytest.approx(want, rel=1e-6)
    # a larger eta raises the penalty; eta -> 0 gives the mean absolute error
    assert charbonnier_loss(pred, target, eta=1.0) > got
    assert charbonnier_loss(pred, target, eta=1e-8).item() == pytest.approx(7.0 / 3, abs=1e-6)


def test_charbonnier_gradient_finite_at_zero_error():
    pred = torch.zeros(4, requires_grad=True)
    charbonnier_loss(pred, torch.zeros(4), eta=1e-8).backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad == 0).all()
    pred2 = torch.tensor([2.0], requires_grad=True)
    charbonnier_loss(pred2, torch.tensor([0.0]), eta=1e-8).backward()
    assert pred2.grad.item() == pytest.approx(1.0, abs=1e-6)  # the L1 slope away from zero


# -- Positional Group Normalization (Eq. 5-6) ------------------------------------------------------

def test_posgn_modulation_varies_over_frames_and_pixels():
    torch.manual_seed(0)
    norm = PositionalGroupNorm(8, groups=4, hidden=16)
    t = torch.tensor([0.3, 0.3])
    alpha, beta = norm.modulation(torch.tensor([-1.0, 0.5]), t, 8, 8)
    assert alpha.shape == beta.shape == (2, 8, 8, 8)
    assert (alpha[0] - alpha[1]).abs().max() > 1e-3  # frame index changes the modulation
    assert (alpha[0, :, 0, 0] - alpha[0, :, 5, 3]).abs().max() > 1e-3  # so does the pixel
    assert (beta[0, :, 0, 0] - beta[0, :, 5, 3]).abs().max() > 1e-3


def test_posgn_reduces_to_group_norm_known_answer():
    torch.manual_seed(0)
    norm = PositionalGroupNorm(8, groups=4, hidden=16)
    last = norm.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:8] = 1.0  # alpha = 1, beta = 0
    x = torch.randn(3, 8, 8, 8)
    cond = BlockCondition(frame_pos=torch.tensor([-1.0, 0.0, 1.0]), time_pos=torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(norm(x, cond), F.group_norm(x, 4, eps=1e-6))
    with torch.no_grad():
        last.bias[:8] = 2.0
        last.bias[8:] = 0.5  # alpha = 2, beta = 0.5
    torch.testing.assert_close(norm(x, cond), 2.0 * F.group_norm(x, 4, eps=1e-6) + 0.5)


def test_posgn_coordinates_follow_each_call_shape():
    # the official code cached coordinates for the first batch size; here any batch/feature size works
    torch.manual_seed(0)
    norm = PositionalGroupNorm(4, groups=2, hidden=8)
    for b, hw in ((2, 8), (5, 4), (1, 8)):
        cond = BlockCondition(frame_pos=torch.zeros(b), time_pos=torch.zeros(b))
        assert norm(torch.randn(b, 4, hw, hw), cond).shape == (b, 4, hw, hw)


def test_frame_index_normalised_by_max_frames():
    model = tiny(max_frames=7)
    pos = model.motion.frame_position(torch.tensor([0, 3, 6]))
    torch.testing.assert_close(pos, torch.tensor([-1.0, 0.0, 1.0]))
    assert model.motion.time_position(torch.tensor([999])).item() == pytest.approx(1.0)


# -- implicit motion condition (Eq. 8) ------------------------------------------------------------

def test_motion_code_sees_both_frames():
    torch.manual_seed(0)
    net = MotionCodeNet(3, code_channels=4, width=8, levels=2)
    a, b = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    z = net(a, b)
    assert z.shape == (2, 4, 8, 8)
    b2 = b.clone()
    b2[:, :, 2:5, 2:5] = -b2[:, :, 2:5, 2:5]
    assert (net(a, b2) - z).abs().max() > 1e-4  # x(n-1) matters
    assert (net(-a, b) - z).abs().max() > 1e-4  # x(0) matters


def test_motion_code_computed_once_per_frame_during_sampling():
    model = tiny(max_frames=7)
    calls = []
    handle = model.motion.motion_code_net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        model.sample(3, gen(0), frames=5, steps=3, batch_size=2)
    finally:
        handle.remove()
    assert calls == [2, 2, 2, 2, 1, 1, 1, 1]  # frames-1 per batch chunk, not per diffusion step


def test_loss_uses_teacher_forcing_frames():
    model = tiny()
    video = moving_squares()
    seen = []
    handle = model.motion.motion_code_net.register_forward_hook(lambda m, i, o: seen.append(i))
    try:
        model.loss({"video": video}, generator=gen(3))
    finally:
        handle.remove()
    (x_first, x_prev), = seen
    x = uint8_to_unit(video)
    torch.testing.assert_close(x_first, x[:, 0])
    for b in range(x.shape[0]):  # x(n-1) is a ground-truth frame among 0..T-2
        assert any(torch.equal(x_prev[b], x[b, k]) for k in range(x.shape[1] - 1))


# -- content generator: sampling space truncation (Eq. 3) ---------------------------------------

def test_truncation_constant_is_learnable_and_gets_gradient():
    model = tiny()
    c = model.content.truncation_constant
    assert isinstance(c, torch.nn.Parameter) and c.shape == (3, 8, 8)
    groups = {g["name"]: g["params"] for g in model.param_groups(1e-3)}
    assert set(groups) == {"content", "motion"}
    assert any(p is c for p in groups["content"]) and not any(p is c for p in groups["motion"])
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    # the output convs start at zero (ADM), so gradient reaches c from the second step on
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        model.loss({"video": moving_squares()}, generator=gen(step))["loss"].backward()
        opt.step()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert not torch.equal(c.detach(), torch.ones_like(c))


# -- Table 3 switches ---------------------------------------------------------------------------

def _train_one_step(model: VIDM) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = model.loss({"video": moving_squares()}, generator=gen(1))
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    return out


@pytest.mark.parametrize("switch", ["truncation", "robustness_penalty", "posgn", "implicit_condition"])
def test_table3_switch_changes_model_and_trains(switch):
    # the paper's full model (vfbench's default VIDM trains with MSE instead of the robustness penalty)
    full = tiny(truncation=True, robustness_penalty=True, posgn=True, implicit_condition=True)
    ablated = tiny(**{switch: False, **({} if switch == "robustness_penalty" else {"robustness_penalty": True})})
    names_full = set(dict(full.named_parameters()))
    names_ablated = set(dict(ablated.named_parameters()))
    if switch == "truncation":
        assert "content.truncation_constant" in names_full - names_ablated
        assert ablated.content.unet.in_conv.in_channels == 3 and full.content.unet.in_conv.in_channels == 6
    elif switch == "posgn":
        assert any(".mlp." in n for n in names_full - names_ablated)
        assert not any(isinstance(m, PositionalGroupNorm) for m in ablated.modules())
    elif switch == "implicit_condition":
        assert any(n.startswith("motion.motion_code_net.") for n in names_full - names_ablated)
        assert ablated.motion.motion_code_net is None
    else:  # same parameters, a different objective (MSE instead of Charbonnier) on the same draws
        assert names_full == names_ablated
        ablated.load_state_dict(full.state_dict())
        a = full.loss({"video": moving_squares()}, generator=gen(5))
        b = ablated.loss({"video": moving_squares()}, generator=gen(5))
        assert abs(a["loss"].item() - b["loss"].item()) > 1e-3
    out = _train_one_step(ablated)
    assert set(out) >= {"loss", "content_loss", "motion_loss"}
    assert ablated.sample(1, gen(0), steps=2).shape == (1, 4, 3, 8, 8)


def test_ablation_helper_refuses_unknown_switch():
    with pytest.raises(UsageError, match="unknown ablation switch"):
        tiny().ablation(dropout=False)
    assert tiny().ablation(posgn=False).config.posgn is False


# -- sampling --------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [4, 7])
@pytest.mark.parametrize("n", [1, 3])
def test_sample_any_length_and_batch(frames, n):
    model = tiny(max_frames=7)
    clips = model.sample(n, gen(0), frames=frames, steps=2)
    assert clips.shape == (n, frames, 3, 8, 8) and clips.dtype == torch.uint8


def test_sample_same_seed_same_bytes():
    from helpers_models import nonzero_outputs

    model = nonzero_outputs(tiny())
    a = model.sample(2, gen(7), steps=3)
    b = model.sample(2, gen(7), steps=3)
    c = model.sample(2, gen(8), steps=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # stochastic samplers draw their per-step noise from the same generator
    d = model.sample(2, gen(7), steps=3, sampler="ddpm")
    assert torch.equal(d, model.sample(2, gen(7), steps=3, sampler="ddpm"))


def test_sample_does_not_depend_on_batch_size():
    # one seed per clip: the same clips whether drawn one at a time or together (up to float
    # reassociation in batched convs, at most one uint8 level)
    model = tiny()
    _train_one_step(model)  # leave the zero-initialised state so the nets really compute something
    a = model.sample(3, gen(4), steps=3, sampler="ddpm", batch_size=1).int()
    b = model.sample(3, gen(4), steps=3, sampler="ddpm", batch_size=3).int()
    assert (a - b).abs().max() <= 1


def test_loss_without_generator_uses_trainer_seed():
    model = tiny()
    torch.manual_seed(11)
    a = model.loss({"video": moving_squares()})["loss"].item()
    torch.manual_seed(11)
    assert model.loss({"video": moving_squares()})["loss"].item() == a


def test_full_ddpm_sampler_runs():
    model = tiny(num_timesteps=6, sampling_steps=6, sampler="ddpm")
    clips = model.sample(2, gen(0))
    assert clips.shape == (2, 4, 3, 8, 8)
    assert model.network_evaluations() == 6 * 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=8), "frames must be an integer in \\[1, 4\\]"),
    (dict(sampler="euler"), "sampler must be one of ddim, ddpm, dpmpp_2m"),
    (dict(steps=0), "steps must be an integer"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(step=3), "did you mean 'steps'"),
    (dict(eta=2.0), "eta must be a number in"),
])
def test_sample_bad_options(kwargs, match):
    with pytest.raises(UsageError, match=match):
        tiny().sample(1, gen(0), **kwargs)


def test_bad_config_and_clips_are_usage_errors():
    with pytest.raises(UsageError, match="max_frames"):
        tiny(max_frames=3)
    with pytest.raises(UsageError, match="preset"):
        VIDM.config_for("huge", frames=4, size=8)
    with pytest.raises(UsageError, match="max_frames is 4"):
        tiny().loss({"video": moving_squares(frames=6)})


# -- registry, presets, save/load -----------------------------------------------------------------

def test_registered_and_config_round_trip():
    assert GENERATORS.get("vidm") is VIDM
    cfg = VIDM.config_for("tiny", frames=4, size=8)
    assert isinstance(cfg, VIDMConfig) and cfg.content_widths == (8, 16)
    small = VIDM.config_for("small", frames=16, size=32)
    assert small.motion_widths == (32, 64, 64) and small.attention
    model = tiny(max_frames=6)
    clone = VIDM.from_config_dict(model.config_dict())
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    assert torch.equal(model.sample(2, gen(1), steps=2, frames=5), clone.sample(2, gen(1), steps=2, frames=5))


def test_class_conditional_tiny():
    torch.manual_seed(0)
    model = VIDM(VIDM.config_for("tiny", frames=4, size=8, num_classes=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):  # zero-initialised output convs (ADM): gradient reaches the labels after two steps
        opt.zero_grad()
        batch = {"video": moving_squares(), "label": torch.tensor([0, 2, -1, 1])}
        model.loss(batch, generator=gen(step))["loss"].backward()
        opt.step()
    assert model.content.time_embed.label_embed.weight.grad.abs().sum() > 0
    assert model.motion.time_embed.label_embed.weight.grad.abs().sum() > 0
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([500, 500])
    with torch.no_grad():
        eps_a = model.content(z, t, torch.tensor([0, 1]))
        eps_b = model.content(z, t, torch.tensor([2, 2]))
    assert (eps_a - eps_b).abs().max() > 1e-6  # the label conditions the content net
    assert model.sample(2, gen(0), steps=2, labels=torch.tensor([0, 1])).shape == (2, 4, 3, 8, 8)
    with pytest.raises(UsageError, match="labels must be one class or 1 classes"):
        model.sample(1, gen(0), steps=2, labels=torch.tensor([3]))
    with pytest.raises(UsageError, match="batch\\['label'\\] must lie in"):
        model.loss({"video": moving_squares(), "label": torch.tensor([0, 5, 1, 1])})


# -- learning -------------------------------------------------------------------------------------

def test_tiny_vidm_overfits_four_clips():
    model = tiny()
    video = moving_squares().repeat(2, 1, 1, 1, 1)  # 4 clips, each seen twice per step

    def held_loss() -> dict:
        with torch.no_grad():
            g = gen(123)
            outs = [model.loss({"video": video}, generator=g) for _ in range(2)]
        return {k: sum(float(o[k]) for o in outs) / 2 for k in ("loss", "content_loss", "motion_loss")}

    start = held_loss()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = gen(0)
    for _ in range(40):
        out = model.loss({"video": video}, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    end = held_loss()
    assert end["loss"] < 0.65 * start["loss"], (start, end)
    # both generators learn, not just one of them
    assert end["content_loss"] < 0.75 * start["content_loss"], (start, end)
    assert end["motion_loss"] < 0.75 * start["motion_loss"], (start, end)


def test_content_pretraining_moves_only_the_content_generator_and_loads_back(tmp_path):
    """``pretrain_loss`` is the content term alone (the image DPM VIDM starts from in the demo's comparison),
    ``pretrain_base`` writes the content generator's EMA weights, ``load_base_state`` takes them back and
    refuses another architecture with one clear error."""
    from vfbench.errors import WeightsError
    from vfbench.training import TrainConfig, pretrain_base

    model = tiny()
    batch = {"video": moving_squares()}
    loss = model.pretrain_loss(batch, torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert all(p.grad is None for p in model.motion.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.content.parameters())
    model.zero_grad(set_to_none=True)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [{"video": moving_squares()[i]} for i in range(4)]
    artefact = pretrain_base(tmp_path / "pre", model, data, TrainConfig(steps=3, batch_size=2, lr=1e-2, ckpt_every=3,
                                                                       device="cpu"), progress=False)
    saved = torch.load(artefact, weights_only=True)["state_dict"]
    assert set(saved) == set(model.content.state_dict())
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("motion."))
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("content."))

    fresh = tiny()
    fresh.load_base_state(saved)
    assert all(torch.equal(fresh.content.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(WeightsError, match="does not fit this VIDM's content generator"):
        tiny(content_widths=(16, 16)).load_base_state(saved)
