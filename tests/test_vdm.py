"""The VDM baseline: loss, overfitting a batch, sampling determinism, config round trip."""

import dataclasses

import pytest
import torch

from vfbench.errors import UsageError
from vfbench.generators.vdm import VDM
from vfbench.nets import unet_preset
from vfbench.registry import GENERATORS




def _clips(n=4, frames=4, size=8):
    """Coloured clips with a moving bright block: easy to memorise."""
    video = torch.zeros(n, frames, 3, size, size, dtype=torch.uint8)
    for b in range(n):
        video[b, :, b % 3] = 200
        for f in range(frames):
            x = (f + b) % (size - 1)
            video[b, f, :, 2:4, x:x + 2] = 255
    return video


def _model(**overrides):
    torch.manual_seed(0)
    return VDM(VDM.config_for("tiny", frames=4, size=8, **overrides))


def test_registered_and_uses_videofusion_base_widths():
    assert GENERATORS.get("vdm") is VDM
    cfg = VDM.config_for("small", frames=16, size=32)
    base = unet_preset("small", "base")
    assert (cfg.unet.base_width, cfg.unet.channel_mults, cfg.unet.attention_scales) == \
        (base.base_width, base.channel_mults, base.attention_scales)
    assert cfg.unet.video and cfg.schedule == "cosine" and cfg.num_timesteps == 1000
    assert (cfg.sampler, cfg.sampling_steps) == ("dpmpp_2m", 20)  # README "Samplers and the number of steps"


def test_loss_is_finite_and_backpropagates():
    model = _model(prediction="eps")
    out = model.loss({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    # the zero-initialised output layer makes eps_hat = 0 at init, so the loss is E[eps^2] ~ 1
    assert out["loss"].item() == pytest.approx(1.0, abs=0.1)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.out.parameters())
    again = _model(prediction="eps").loss({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    assert again["loss"].item() == out["loss"].item()  # explicit generator -> reproducible loss


def test_l1_loss_and_bad_batches():
    model = _model(loss="l1", prediction="eps")
    out = model.loss({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    # eps_hat = 0 at init: the L1 loss is E|eps| = sqrt(2/pi) ~ 0.80
    assert out["loss"].item() == pytest.approx((2 / torch.pi) ** 0.5, abs=0.05)
    with pytest.raises(UsageError, match="--frames/--size"):
        model.loss({"video": _clips(frames=3)})
    with pytest.raises(UsageError, match="uint8"):
        model.loss({"video": _clips().float()})


def test_tiny_vdm_overfits_a_batch():
    model = _model()
    batch = {"video": _clips()}

    def held_out_loss():
        model.eval()
        with torch.no_grad():
            value = sum(model.loss(batch, torch.Generator().manual_seed(100 + i))["loss"].item() for i in range(8)) / 8
        model.train()
        return value

    start = held_out_loss()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = model.loss(batch, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_out_loss()
    # a loss check only (v-prediction, the default, starts lower than eps: E[v^2] < 1 at init); that the
    # model learns to *sample* its data is tests/test_learning.py
    assert end < 0.75 * start, (start, end)


def test_sample_shape_dtype_and_determinism():
    model = _model()
    with torch.no_grad():  # random weights so the net's output matters
        for p in model.unet.out.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    a = model.sample(3, generator=torch.Generator().manual_seed(7), steps=4)
    assert a.shape == (3, 4, 3, 8, 8) and a.dtype == torch.uint8
    b = model.sample(3, generator=torch.Generator().manual_seed(7), steps=4)
    assert torch.equal(a, b)
    c = model.sample(3, generator=torch.Generator().manual_seed(8), steps=4)
    assert not torch.equal(a, c)
    # per-clip seeds: the batch size does not change the clips
    d = model.sample(3, generator=torch.Generator().manual_seed(7), steps=4, batch_size=2)
    assert torch.equal(a, d)


def test_ddim_eta_zero_is_deterministic_given_the_initial_noise_and_eta_changes_it():
    model = _model()
    with torch.no_grad():
        for p in model.unet.out.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(11)
    det = model.sample(2, generator=g, steps=5, eta=0.0, sampler="ddim")
    again = model.sample(2, generator=torch.Generator().manual_seed(11), steps=5, eta=0.0, sampler="ddim")
    assert torch.equal(det, again)
    stochastic = model.sample(2, generator=torch.Generator().manual_seed(11), steps=5, eta=1.0, sampler="ddim")
    assert not torch.equal(det, stochastic)
    ddpm = model.sample(2, generator=torch.Generator().manual_seed(11), steps=5, sampler="ddpm")
    assert torch.equal(ddpm, stochastic)  # respaced DDPM is DDIM with eta = 1
    with pytest.raises(UsageError, match="sampler"):
        model.sample(1, generator=torch.Generator(), sampler="euler")
    with pytest.raises(UsageError, match="did you mean 'steps'"):
        model.sample(1, generator=torch.Generator(), step=3)


def test_ddpm_full_chain_runs():
    model = _model(num_timesteps=20, sampling_steps=20)
    out = model.sample(1, generator=torch.Generator().manual_seed(0), sampler="ddpm", steps=20)
    assert out.shape == (1, 4, 3, 8, 8) and out.dtype == torch.uint8


def test_class_conditional_guidance_and_labels():
    model = _model(num_classes=3)
    batch = {"video": _clips(), "label": torch.tensor([0, 1, 2, 1])}
    assert torch.isfinite(model.loss(batch, generator=torch.Generator().manual_seed(0))["loss"])
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    s0 = model.sample(2, generator=g(), steps=3, labels=0)
    s2 = model.sample(2, generator=g(), steps=3, labels=2)
    assert s0.shape == (2, 4, 3, 8, 8) and not torch.equal(s0, s2)
    # guidance scale 1 is the plain conditional model
    cond = model.sample(2, generator=g(), steps=3, labels=[0, 1], guidance_scale=1.0)
    guided = model.sample(2, generator=g(), steps=3, labels=[0, 1], guidance_scale=3.0)
    assert not torch.equal(cond, guided)
    with pytest.raises(UsageError, match="label"):
        model.loss({"video": _clips()})
    with pytest.raises(UsageError, match=r"\[0, 2\]"):
        model.sample(1, generator=g(), labels=3)


def test_joint_image_training_masks_appended_images():
    model = _model(joint_images=2)
    out = model.loss({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and "loss_images" in out
    x0 = torch.randn(4, 4, 3, 8, 8)
    ext, mask = model._joint_images(x0, None, torch.Generator().manual_seed(0))
    assert ext.shape == (4, 6, 3, 8, 8) and mask.shape == (4, 6, 6)
    assert mask[:, :4, :4].all() and not mask[:, 4:].any() and not mask[:, :, 4:].any()
    for b in range(4):  # every appended image is a frame of another clip
        for j in range(4, 6):
            owners = [c for c in range(4) for f in range(4) if torch.equal(ext[b, j], x0[c, f])]
            assert owners and b not in owners
    # class-conditional: images come from another clip of the same class (conditioning is per clip);
    # a dropped (null) label may take any other clip, a clip without a partner uses its own frames
    cond = _model(joint_images=3, num_classes=3)
    labels = torch.tensor([0, 0, 1, 3])  # 3 = the null label
    ext, _ = cond._joint_images(x0, labels, torch.Generator().manual_seed(1))
    owner = lambda img: [c for c in range(4) for f in range(4) if torch.equal(img, x0[c, f])]  # noqa: E731
    for j in range(4, 7):
        assert owner(ext[0, j]) == [1] and owner(ext[1, j]) == [0] and owner(ext[2, j]) == [2]
        assert 3 not in owner(ext[3, j])


def test_config_round_trip_and_validation():
    model = _model(num_classes=2, joint_images=1, loss="l1")
    data = model.config_dict()
    clone = VDM.from_config_dict(data)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    with pytest.raises(UsageError, match="lossy"):
        VDM.from_config_dict({**data, "lossy": 1})
    with pytest.raises(UsageError, match="vdm.loss"):
        VDM.config_for("tiny", frames=4, size=8, loss="huber")
    with pytest.raises(UsageError, match="vdm.size"):
        VDM.config_for("tiny", frames=4, size=9)
    with pytest.raises(UsageError, match="vdm.eta"):
        VDM.config_for("tiny", frames=4, size=8, eta=2.0)


def _perturbed_videofusion(seed):
    """A tiny VideoFusion whose base is unlike any fresh init (zero-initialised outputs would hide a missed copy)."""
    from vfbench.generators.videofusion import VideoFusion

    torch.manual_seed(seed)
    vf = VideoFusion(VideoFusion.config_for("tiny", frames=4, size=8))
    with torch.no_grad():
        for p in vf.base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vf


def _assert_image_dpm_on_every_frame(vdm, vf, t):
    z = torch.randn(2, 4, 3, 8, 8)
    with torch.no_grad():
        video = vdm.network_output(z, t)
        frames = vf.base(z.flatten(0, 1), t.repeat_interleave(4)).view_as(z)
    assert torch.allclose(video, frames, atol=1e-5)


def test_base_init_starts_as_the_image_dpm_on_every_frame():
    """``load_base_state`` copies a VideoFusion base (a 2D image DPM of the same preset) into the spatial
    layers; the zero-initialised temporal blocks leave the inflated net equal to that image DPM applied to
    each frame (what "starting a video DPM from an image model" means)."""
    from vfbench.errors import WeightsError

    vf = _perturbed_videofusion(seed=1)
    vdm = _model()
    temporal = {k: v.clone() for k, v in vdm.unet.state_dict().items() if k in set(vdm.unet.temporal_parameter_names())}
    vdm.load_base_state(vf.state_dict())  # a whole VideoFusion state dict: its base.* weights
    for k, v in vf.base.state_dict().items():
        assert torch.equal(vdm.unet.state_dict()[k], v), k
    for k, v in temporal.items():
        assert torch.equal(vdm.unet.state_dict()[k], v), k
    _assert_image_dpm_on_every_frame(vdm, vf, torch.tensor([300, 700]))
    with pytest.raises(WeightsError, match="does not fit this VDM"):
        VDM(VDM.config_for("small", frames=4, size=8)).load_base_state(vf.base.state_dict())


def test_temporal_attention_at_every_scale_still_starts_as_the_image_dpm():
    """``unet.temporal_attention_scales`` adds temporal blocks where the image DPM has no spatial attention;
    they are zero-initialised too, so a base-initialised VDM is still the image DPM on every frame, and the
    default (None) builds exactly the net of before (same parameter names: old checkpoints load)."""
    vf = _perturbed_videofusion(seed=2)
    plain = _model()

    def build(scales):
        cfg = VDM.config_for("tiny", frames=4, size=8)
        return VDM(dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, temporal_attention_scales=scales)))

    every = build((1, 2))
    extra = set(every.unet.state_dict()) - set(plain.unet.state_dict())
    assert extra and all(".temporal." in k for k in extra)
    assert set(plain.unet.state_dict()) == set(build(None).unet.state_dict())
    every.load_base_state(vf.state_dict())
    _assert_image_dpm_on_every_frame(every, vf, torch.tensor([200, 800]))
    with pytest.raises(UsageError, match="temporal_attention_scales"):
        unet_preset("tiny", "base", video=True, temporal_attention_scales=(8,))


def test_spatial_lr_mult_splits_the_optimiser_groups():
    """``spatial_lr_mult`` puts the layers an image DPM initialises at a smaller learning rate than the
    temporal layers; every trainable parameter is in exactly one group; 1.0 keeps the single group."""
    model = _model(spatial_lr_mult=0.1)
    groups = {g["name"]: g for g in model.param_groups(1e-3)}
    assert groups["spatial"]["lr"] == pytest.approx(1e-4) and groups["temporal"]["lr"] == 1e-3
    temporal = {id(p) for n, p in model.unet.named_parameters() if n in set(model.unet.temporal_parameter_names())}
    assert {id(p) for p in groups["temporal"]["params"]} == temporal
    assert len(groups["spatial"]["params"]) + len(groups["temporal"]["params"]) == len(list(model.parameters()))
    assert [g["name"] for g in _model().param_groups(1e-3)] == ["all"]
    with pytest.raises(UsageError, match="spatial_lr_mult"):
        _model(spatial_lr_mult=-1.0)


def test_a_vdm_plan_with_a_pretrained_base_shares_videofusions_image_dpm(tmp_path):
    """The pipeline pretrains VideoFusion's base (one artefact per dataset/preset/length/seed) and a VDM
    plan with ``pretrain_base_steps`` starts its U-Net's spatial layers from it."""
    from vfbench.pipeline import RunPlan, train_step
    from vfbench.results import ResultsStore

    store = ResultsStore.open(str(tmp_path / "res"))
    plan = RunPlan(name="v", generator="vdm", preset="tiny", steps=1, frames=4, size=8, batch_size=2, lr=1e-9,
                   pretrain_base_steps=2)
    run_dir = train_step(store, plan, progress=False)
    artefact = torch.load(store.root / "pretrained" / plan.base_run_name / "base-pretrain.pt", weights_only=True)
    assert artefact["generator"] == "videofusion" and artefact["step"] == 2
    model = torch.load(run_dir / "checkpoints/step-0000001.pt", weights_only=True)["model"]
    fresh = _model().unet.state_dict()
    moved = 0
    for k, v in artefact["state_dict"].items():
        assert torch.allclose(model[f"unet.{k}"].float(), v.float(), atol=1e-6), k  # lr 1e-9: one step moves nothing
        moved += int(v.is_floating_point() and not torch.allclose(v, fresh[k]))
    assert moved > 10  # what was compared is the artefact's weights, not the VDM's own initialisation
