"""Long videos: VDM reconstruction guidance (Ho et al. 2022, Sec. 3.1, Eq. 7), VIDM's autoregressive
``sample_long``, the base class's refusal, ``vfbench sample --length`` and evaluation of long sets.

Tiny models (4 frames of 8x8, a few DDIM steps), perturbed off their zero-initialised output layers so
that samples depend on the net."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from generator_conformance import perturb
from vfbench.cli import main
from vfbench.clips import uint8_to_unit, unit_to_uint8
from vfbench.diffusion import ddim_step, q_sample, timestep_pairs
from vfbench.errors import DataError, UsageError
from vfbench.generators import vdm_long
from vfbench.generators.vdm import RECONSTRUCTION_WEIGHT, VDM
from vfbench.generators.vidm import VIDM
from vfbench.sampling import default_tag

import test_trainer  # noqa: F401  (registers the toy generator "toy-test")

FRAMES, SIZE, STEPS = 4, 8, 4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_vdm(scale: float = 0.05, seed: int = 0, **overrides) -> VDM:
    torch.manual_seed(0)
    return perturb(VDM(VDM.config_for("tiny", frames=FRAMES, size=SIZE, **overrides)), seed=seed, scale=scale)


@pytest.fixture(scope="module")
def vdm() -> VDM:
    return tiny_vdm()


def close_bytes(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.01) -> bool:
    """Equal up to float rounding: at most 1 level apart, and fewer than ``fraction`` of the values differ."""
    diff = (a.int() - b.int()).abs()
    return a.shape == b.shape and int(diff.max()) <= 1 and float((diff > 0).float().mean()) < fraction


# -- VDM: shapes, first window, determinism, batch size ---------------------------------------------

def test_vdm_long_shape_dtype_and_first_window_is_sample(vdm):
    long = vdm.sample_long(2, 9, gen(1), steps=STEPS)
    assert long.dtype == torch.uint8 and long.device.type == "cpu"
    assert tuple(long.shape) == (2, 9, 3, SIZE, SIZE)
    short = vdm.sample(2, gen(1), steps=STEPS)
    assert torch.equal(long[:, :FRAMES], short)  # same draws as sample(): bit for bit at the same batch size
    assert torch.equal(vdm.sample_long(2, 3, gen(1), steps=STEPS), short[:, :3])  # length <= N: a prefix


def test_vdm_long_same_seed_same_bytes_and_no_global_rng(vdm):
    torch.manual_seed(11)
    a = vdm.sample_long(2, 7, gen(4), steps=STEPS, overlap=1)
    torch.manual_seed(22)
    assert torch.equal(a, vdm.sample_long(2, 7, gen(4), steps=STEPS, overlap=1))
    assert not torch.equal(a, vdm.sample_long(2, 7, gen(5), steps=STEPS, overlap=1))
    assert all(p.grad is None for p in vdm.parameters())  # the guidance gradient is w.r.t. z only


def test_vdm_long_does_not_depend_on_batch_size(vdm):
    # reconstruction guidance follows the gradient of the known frames' error (weight 2), which amplifies the
    # ~5e-7 by which the U-Net's outputs differ between batch sizes on an AVX-512 CPU: measured 1.1% of the
    # values one level apart there (none on an AVX2 one); a real dependence on the batch moves far more
    one = vdm.sample_long(3, 8, gen(2), steps=STEPS, batch_size=1)
    three = vdm.sample_long(3, 8, gen(2), steps=STEPS, batch_size=3)
    assert close_bytes(one, three, fraction=0.03)
    two = vdm.sample_long(3, 8, gen(2), steps=STEPS, batch_size=2)
    assert close_bytes(one, two, fraction=0.03)


def test_vdm_long_ddpm_and_class_conditional_with_guidance():
    model = tiny_vdm(num_classes=3)
    labels = torch.tensor([2, 0])
    long = model.sample_long(2, 6, gen(3), steps=STEPS, sampler="ddpm", labels=labels, guidance_scale=2.0)
    assert tuple(long.shape) == (2, 6, 3, SIZE, SIZE)
    short = model.sample(2, gen(3), steps=STEPS, sampler="ddpm", labels=labels, guidance_scale=2.0)
    assert torch.equal(long[:, :FRAMES], short)
    other = model.sample_long(2, 6, gen(3), steps=STEPS, sampler="ddpm", labels=[1, 1], guidance_scale=2.0)
    assert not torch.equal(long, other)  # the label conditions every window
    drawn = model.sample_long(2, 6, gen(3), steps=STEPS)  # labels drawn from the generator, as in sample()
    assert torch.equal(drawn[:, :FRAMES], model.sample(2, gen(3), steps=STEPS))


# -- VDM: replacement and reconstruction guidance -------------------------------------------------

def replacement_reference(model: VDM, n: int, length: int, generator: torch.Generator, overlap: int) -> torch.Tensor:
    """Plain replacement sampling, written out independently: deterministic DDIM, unconditional model,
    draws per clip in the order initial noise, then per step the forward noise of the known frames."""
    c, schedule = model.config, model.schedule
    shape = (c.frames, c.channels, c.size, c.size)
    seeds = torch.randint(0, 2 ** 62, (n,), generator=generator).tolist()
    pairs = timestep_pairs(c.num_timesteps, STEPS)
    clips = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        video = None
        while video is None or video.shape[1] < length:
            z = torch.randn(shape, generator=g)[None]
            known = None if video is None else uint8_to_unit(video[:, -overlap:])
            for t, t_prev in pairs:
                if known is not None:
                    z[:, :overlap] = q_sample(schedule, known, t, torch.randn((overlap, *shape[1:]), generator=g)[None])
                eps = model.predict_noise(z, torch.full((1,), t, dtype=torch.long))
                z = ddim_step(schedule, z, eps, t, t_prev)
            new = unit_to_uint8(z)
            video = new if video is None else torch.cat([video, new[:, overlap:]], dim=1)
        clips.append(video[:, :length])
    return torch.cat(clips)


def test_guidance_weight_zero_is_plain_replacement(vdm):
    with torch.no_grad():
        want = replacement_reference(vdm, 2, 9, gen(6), overlap=2)
    got = vdm.sample_long(2, 9, gen(6), steps=STEPS, overlap=2, guidance_weight=0, batch_size=1, sampler="ddim")
    assert close_bytes(got, want)
    guided = vdm.sample_long(2, 9, gen(6), steps=STEPS, overlap=2, guidance_weight=5.0, batch_size=1, sampler="ddim")
    assert torch.equal(guided[:, :FRAMES], got[:, :FRAMES])  # the first window is unconditioned
    assert not torch.equal(guided, got)  # guidance changes the new frames


def test_eq7_known_answer_with_a_linear_denoiser():
    """eps(z) = k z + c mean_frames(z): the gradient of || x^a - x_hat^a ||^2 w.r.t. z^b is analytic, so
    Eq. 7 (sign and alpha_t = sqrt(abar_t) scaling) is checked against a hand computation."""
    k, c_mix, w = 0.3, 0.8, 2.5
    stub = SimpleNamespace(guided_noise=lambda z, t, labels, scale: k * z + c_mix * z.mean(1, keepdim=True))
    g = gen(0)
    z = torch.randn(2, 4, 3, 2, 2, generator=g, dtype=torch.float64)
    known = torch.rand(2, 1, 3, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    abar = 0.6
    sa, s1 = math.sqrt(abar), math.sqrt(1 - abar)
    eps = vdm_long._reconstruction_guided_eps(stub, z, None, None, 1.0, known, w, sa, s1, None)

    eps_plain = k * z + c_mix * z.mean(1, keepdim=True)
    x_hat = (z - s1 * eps_plain) / sa
    # d x_hat^a / d z^b_j = -s1 * c_mix / (N sa) for every b frame j (through the frame mean)
    grad_b = (2 * (x_hat[:, :1] - known) * (-s1 * c_mix / (4 * sa))).expand(-1, 3, -1, -1, -1)
    x_tilde_b = x_hat[:, 1:] - (w * sa / 2) * grad_b
    eps_tilde_b = (z[:, 1:] - sa * x_tilde_b) / s1
    torch.testing.assert_close(eps[:, :1], eps_plain[:, :1])  # the known frames' eps is untouched
    torch.testing.assert_close(eps[:, 1:], eps_tilde_b)
    # equivalently eps~^b = eps^b + w abar / (2 sqrt(1 - abar)) grad
    torch.testing.assert_close(eps[:, 1:], eps_plain[:, 1:] + w * abar / (2 * s1) * grad_b)


def test_reconstruction_guidance_brings_x_hat_of_known_frames_closer():
    """Over the denoising steps of a conditioned window, the known frames' reconstruction error
    mean (x^a - x_hat^a)^2 is lower with guidance than with replacement alone (same noise draws)."""
    model = tiny_vdm(scale=0.2).eval()  # stronger weights: the frames interact noticeably
    plan = vdm_long.make_plan(model, 4, gen(5), steps=8)
    known = torch.rand(4, 2, 3, SIZE, SIZE, generator=gen(0)) * 2 - 1

    def errors(weight: float) -> torch.Tensor:
        record = []
        noise = vdm_long.ClipNoise(plan.seeds, plan.noise_device, model.device)
        with torch.no_grad():
            vdm_long.denoise_window(model, plan, noise, None, known, weight, record)
        return torch.stack(record)[1:]  # the first step (t = T-1) precedes any guidance

    plain, guided, strong = errors(0.0), errors(RECONSTRUCTION_WEIGHT), errors(5.0)
    assert plain.shape == (7, 4)
    ratio_default = float((guided / plain).mean())
    ratio_strong = float((strong / plain).mean())
    assert ratio_default < 1.0 and ratio_strong < 0.99, (ratio_default, ratio_strong)
    assert ratio_strong < ratio_default
    assert all(p.grad is None for p in model.parameters())


def test_vdm_long_validation(vdm):
    for bad in (0, FRAMES, 2.5, True):
        with pytest.raises(UsageError, match=r"overlap must be an integer in \[1, 3\]"):
            vdm.sample_long(1, 6, gen(0), steps=STEPS, overlap=bad)
    for bad in (-1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(UsageError, match="guidance_weight"):
            vdm.sample_long(1, 6, gen(0), steps=STEPS, guidance_weight=bad)
    with pytest.raises(UsageError, match="length must be a positive"):
        vdm.sample_long(1, 0, gen(0))
    with pytest.raises(UsageError, match="did you mean 'steps'"):
        vdm.sample_long(1, 6, gen(0), stepz=2)
    with pytest.raises(UsageError, match="labels were given"):
        vdm.sample_long(1, 6, gen(0), steps=STEPS, labels=1)
    one_frame = VDM(VDM.config_for("tiny", frames=1, size=SIZE))
    with pytest.raises(UsageError, match="at least 2 frames"):
        one_frame.sample_long(1, 3, gen(0), steps=2)


# -- VIDM and the base class ----------------------------------------------------------------------

def test_vidm_sample_long_is_sample_with_frames():
    torch.manual_seed(0)
    model = perturb(VIDM(replace(VIDM.config_for("tiny", frames=FRAMES, size=SIZE), max_frames=6)))
    long = model.sample_long(2, 6, gen(1), steps=2)
    assert long.dtype == torch.uint8 and tuple(long.shape) == (2, 6, 3, SIZE, SIZE)
    assert torch.equal(long, model.sample(2, gen(1), frames=6, steps=2))
    with pytest.raises(UsageError, match="max_frames"):
        model.sample_long(1, 7, gen(1), steps=2)
    with pytest.raises(UsageError, match="drop the `frames` control"):
        model.sample_long(1, 5, gen(1), frames=5)


def test_base_generator_refuses_long_clips():
    from test_trainer import make_toy

    with pytest.raises(UsageError, match=r"^toy-test cannot sample clips longer than its training length; sample"):
        make_toy().sample_long(2, 8, gen(0))


# -- vfbench sample --length ----------------------------------------------------------------------

def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return ei.value.code, out.out.strip(), out.err


def test_default_tag_unchanged_without_length():
    assert default_tag(3, 0, 8, True) == "step3-seed0-n8"
    assert default_tag(3, 0, 8, False) == "step3-seed0-n8-raw"
    assert default_tag(3, 0, 8, True, 64) == "step3-seed0-n8-len64"


def test_cli_sample_length_on_a_tiny_vdm_run(tmp_path, capsys):
    res = str(tmp_path / "res")
    code, out, err = run_cli(capsys, "train", "vdm", "--dataset", "shapes", "--preset", "tiny", "--frames", "4",
                             "--size", "8", "--batch-size", "2", "--steps", "1", "--results", res, "--no-progress",
                             "--device", "cpu", "--name", "v")
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    sample = ["sample", "v", "--num", "3", "--batch-size", "2", "--results", res, "--no-progress",
              "--control", "steps=2", "--device", "cpu"]

    code, out, err = run_cli(capsys, *sample, "--length", "7", "--control", "guidance_weight=1.5")
    assert code == 0, err
    long_dir = Path(out.splitlines()[-1])
    assert long_dir == run_dir / "samples" / "step1-seed0-n3-len7"
    from vfbench.sampling import load_samples

    clips = load_samples(long_dir)
    assert clips.dtype == np.uint8 and clips.shape == (3, 7, 3, 8, 8)
    m = json.loads((long_dir / "manifest.json").read_text())
    assert m["complete"] and m["length"] == 7 and m["clip_shape"] == [7, 3, 8, 8]
    assert m["controls"] == {"guidance_weight": 1.5, "steps": 2}
    # the shards are sample_long's: the first clip's first window is the plain sample of the same shard seed
    code, out, err = run_cli(capsys, *sample)
    assert code == 0, err
    plain_dir = Path(out.splitlines()[-1])
    assert plain_dir.name == "step1-seed0-n3"
    assert "length" not in json.loads((plain_dir / "manifest.json").read_text())
    assert np.array_equal(load_samples(plain_dir), clips[:, :4])

    # another length under the same tag is another request: refused, or redrawn with --force
    weight = ("--control", "guidance_weight=1.5")
    code, _, err = run_cli(capsys, *sample, *weight, "--length", "6", "--tag", long_dir.name)
    assert code == 2 and "(differs in length)" in err and "--force" in err
    code, _, err = run_cli(capsys, *sample, "--tag", long_dir.name)
    assert code == 2 and "differs in controls, length" in err  # dropping --length is a change too
    # guidance_weight is a long-video control: without --length it is refused before anything is drawn
    code, _, err = run_cli(capsys, *sample, *weight, "--tag", long_dir.name)
    assert code == 2 and "guidance_weight" in err
    code, out, err = run_cli(capsys, *sample, *weight, "--length", "6", "--tag", long_dir.name, "--force")
    assert code == 0, err
    assert load_samples(long_dir).shape == (3, 6, 3, 8, 8)
    code, _, err = run_cli(capsys, *sample, "--control", "length=6")
    assert code == 2 and "--length" in err
    code, _, err = run_cli(capsys, *sample, "--length", "0")
    assert code == 2 and "--length must be a positive" in err


def test_cli_sample_length_refused_by_a_generator_that_cannot(tmp_path, capsys):
    res = str(tmp_path / "res")
    code, out, err = run_cli(capsys, "train", "toy-test", "--dataset", "shapes", "--frames", "2", "--size", "8",
                             "--batch-size", "2", "--steps", "1", "--results", res, "--name", "toy", "--no-progress",
                             "--device", "cpu")
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    code, _, err = run_cli(capsys, "sample", "toy", "--num", "2", "--length", "4", "--results", res, "--no-progress")
    assert code == 2 and "toy-test cannot sample clips longer than its training length" in err
    assert "Traceback" not in err
    assert not (run_dir / "samples" / "step1-seed0-n2-len4").exists()  # the refused request leaves nothing


# -- evaluation never crops long-video sets silently ----------------------------------------------

def _sample_set(folder: Path, frames: int, length=None) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / "shard-00000.npy", np.zeros((2, frames, 3, 8, 8), np.uint8))
    manifest = {"num": 2, "shards": 1, "complete": True}
    if length is not None:
        manifest["length"] = length
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_evaluation_refuses_long_sets_and_skips_them_when_picking(tmp_path):
    from vfbench.evaluation import SampleFolder, pick_samples_dir

    run = tmp_path / "run"
    long_set = _sample_set(run / "samples" / "long", 9, length=9)
    with pytest.raises(UsageError, match="9-frame long videos .* scores 4-frame clips"):
        SampleFolder(long_set, frames=4, size=8)
    assert SampleFolder(long_set, frames=9, size=8).describe()["fit"] == "none"  # the length fits: fine
    with pytest.raises(DataError, match="only long-video sample sets"):
        pick_samples_dir(run)
    assert pick_samples_dir(run, "long") == long_set  # named explicitly: allowed (then checked as above)
    plain = _sample_set(run / "samples" / "plain", 4)
    assert pick_samples_dir(run) == plain  # never the long set, although it sorts first and is as large
    # a foreign folder without a manifest keeps the documented behaviour: first frames, recorded in "fit"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.save(foreign / "a.npy", np.zeros((2, 9, 3, 8, 8), np.uint8))
    assert SampleFolder(foreign, frames=4, size=8).describe()["fit"] == "first 4 of 9 frames"
