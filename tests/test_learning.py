"""Learning known answers: every built-in generator memorises its training clips and samples them back.

A loss that goes down proves nothing about sampling: before these tests, eps-predicting generators
reached a loss of 0.035 on one clip and sampled noise 49-60 uint8 levels away from it (README,
"Generators that learn"). Here each generator is trained with the shared trainer (the real recipe:
AdamW, EMA, clipping; its default config) on one ``shapes`` clip and on four, then sampled with its
default sampler (seeded). The bound: every sample within ``BOUND`` = 8 uint8 levels RMSE of its
nearest training clip. Distinct ``shapes`` clips at this size are 23-43 levels apart and a clip's own
pixel std is ~19, so a sample within 8 is that clip and nothing else (a sample of noise or of the
mean grey is >= 15 away); 8 leaves room for the slight blur of a few hundred steps of a tiny net
(measured one clip: 1.8-7 levels after the fixes; 15-60 before). With four clips a tiny net trained
600 steps lands most samples on a clip (6-7 levels) but still starts some between two clips at the
first, most ambiguous steps (measured: 2-3 of 8 samples at 14-22 levels; the eps-predicting nets of
before: every sample 50-60 away); there the median sample must be within ``BOUND`` and the samples
must land on at least two different clips.

Sizes: 4 frames of 8x8, the ``tiny`` preset, seconds per generator on one core.
"""

from __future__ import annotations

import pytest
import torch

from vfbench.data.shapes import ShapesDataset
from vfbench.learning import denoise_from, memorise, nearest_clip_rmse
from vfbench.training import cpu_bf16_native

BOUND = 8.0
FRAMES, SIZE = 4, 8
GENERATORS = ("videofusion", "vdm", "vidm")
ONE_CLIP_STEPS, FOUR_CLIP_STEPS, LR = 250, 600, 3e-3
MID_T = 500  # abar = 0.49 on the cosine schedule: half of the variance is noise


def shapes_clips(k: int) -> torch.Tensor:
    ds = ShapesDataset("train", frames=FRAMES, size=SIZE)
    return torch.stack([ds[i]["video"] for i in range(k)])


_TRAINED = {}


def trained(name: str, k: int):
    """The generator trained on the first ``k`` shapes clips (cached for the module's tests)."""
    if (name, k) not in _TRAINED:
        clips = shapes_clips(k)
        steps = ONE_CLIP_STEPS if k == 1 else FOUR_CLIP_STEPS
        model, summary = memorise(name, clips, steps=steps, lr=LR, batch_size=8, seed=0)
        _TRAINED[(name, k)] = (model, clips, summary)
    return _TRAINED[(name, k)]


def frame_rmse(samples: torch.Tensor, clips: torch.Tensor, frames) -> torch.Tensor:
    """RMSE of the chosen frames of every sample to the same frames of its nearest clip (whole-clip match)."""
    s, c = samples.double(), clips.double()
    nearest = torch.cdist(s.flatten(1), c.flatten(1)).argmin(dim=1)
    diff = s[:, frames] - c[nearest][:, frames]
    return diff.square().flatten(1).mean(dim=1).sqrt()


@pytest.mark.parametrize("name", GENERATORS)
def test_memorises_one_clip_and_samples_it_back(name):
    model, clips, summary = trained(name, 1)
    samples = model.sample(6, torch.Generator().manual_seed(0))
    rmse = nearest_clip_rmse(samples, clips)
    assert float(rmse.max()) <= BOUND, (name, rmse.tolist(), summary["final_loss"])
    # not a constant image that happens to be close: the samples carry the clip's contrast
    assert abs(float(samples.float().std()) - float(clips.float().std())) < 5


@pytest.mark.parametrize("name", GENERATORS)
def test_memorises_four_clips_and_samples_each_back(name):
    model, clips, summary = trained(name, 4)
    samples = model.sample(8, torch.Generator().manual_seed(1))
    rmse = nearest_clip_rmse(samples, clips)
    assert float(rmse.median()) <= BOUND, (name, rmse.tolist(), summary["final_loss"])
    # the samples are not all one clip: the model learnt the set, not one member of it
    nearest = torch.cdist(samples.double().flatten(1), clips.double().flatten(1)).argmin(dim=1)
    assert len(set(nearest.tolist())) >= 2, nearest.tolist()


@pytest.mark.parametrize("name", GENERATORS)
def test_sampler_from_a_noised_training_clip_at_mid_t_returns_it(name):
    model, clips, _ = trained(name, 1)
    out = denoise_from(model, clips.expand(3, *clips.shape[1:]), t=MID_T, seed=3)  # three noise draws
    rmse = (out.double() - clips.double()).square().flatten(1).mean(dim=1).sqrt()
    assert float(rmse.max()) <= BOUND, (name, rmse.tolist())


@pytest.mark.parametrize("k", (1, 4))
def test_videofusion_residual_frames_are_learnt_too(k):
    # the keyframe comes from the base generator alone; the other frames need the residual path (Eq. 12-13)
    model, clips, _ = trained("videofusion", k)
    samples = model.sample(8, torch.Generator().manual_seed(1))
    others = [i for i in range(FRAMES) if i != model.key]
    for frames in (others, [model.key]):
        rmse = frame_rmse(samples, clips, frames)
        worst = float(rmse.max()) if k == 1 else float(rmse.median())
        assert worst <= BOUND, (k, frames, rmse.tolist())


@pytest.mark.parametrize("k", (1, 4))
def test_vidm_autoregressive_chain_is_learnt_too(k):
    # frame 0 comes from the content generator; frames 1.. from the motion generator, each conditioned on
    # the frame it made before: errors would compound along the chain
    model, clips, _ = trained("vidm", k)
    samples = model.sample(8, torch.Generator().manual_seed(1))
    for frames in (list(range(1, FRAMES)), [FRAMES - 1]):
        rmse = frame_rmse(samples, clips, frames)
        worst = float(rmse.max()) if k == 1 else float(rmse.median())
        assert worst <= BOUND, (k, frames, rmse.tolist())


def opposite_motions() -> torch.Tensor:
    """Two clips with the same keyframe (a 2x2 square at the centre of frame N // 2) whose square moves
    right in one and left in the other: the keyframe alone does not say which clip a sample is."""
    clips = torch.full((2, FRAMES, 3, SIZE, SIZE), 60, dtype=torch.uint8)
    for c, direction in enumerate((1, -1)):
        for f in range(FRAMES):
            x = 3 + direction * (f - FRAMES // 2)
            clips[c, f, 0, 3:5, x:x + 2], clips[c, f, 1, 3:5, x:x + 2] = 230, 200
    return clips


def test_videofusion_frames_agree_on_one_motion():
    # Coherence, which the memorisation tests above cannot see (their clips differ in the keyframe too). The
    # paper's per-frame 2D residual net (residual_temporal=False) denoises every non-key frame on its own, so
    # each frame picks its own direction: measured 11 of 16 samples a mixture of the two clips, 23 levels from
    # both (400 steps). The default temporal residual net: 16 of 16 within 2.1 levels, both clips drawn.
    clips = opposite_motions()
    model, summary = memorise("videofusion", clips, steps=300, lr=LR, batch_size=8, seed=0)
    assert model.config.residual_temporal
    samples = model.sample(16, torch.Generator().manual_seed(1))
    rmse = nearest_clip_rmse(samples, clips)
    assert float(rmse.max()) <= BOUND, (rmse.tolist(), summary["final_loss"])
    nearest = torch.cdist(samples.double().flatten(1), clips.double().flatten(1)).argmin(dim=1)
    assert set(nearest.tolist()) == {0, 1}, nearest.tolist()


@pytest.mark.skipif(not cpu_bf16_native(), reason="this CPU has no native bf16 (AMX-BF16 / AVX512-BF16): "
                    "--precision auto trains in fp32 here, which the tests above cover")
@pytest.mark.parametrize("name", GENERATORS)
def test_memorises_one_clip_under_bf16_autocast(name):
    # `--precision auto` (the demo's) trains under bf16 autocast where the CPU runs it natively: the same
    # known answer must hold there. Measured on an AMD EPYC with AVX512-BF16, one clip, worst of 6 samples:
    # VideoFusion 0.56 (fp32 0.54), VDM 6.4 (6.3), VIDM 4.3 (4.1) levels
    clips = shapes_clips(1)
    model, summary = memorise(name, clips, steps=ONE_CLIP_STEPS, lr=LR, batch_size=8, seed=0, precision="bf16")
    samples = model.sample(6, torch.Generator().manual_seed(0))
    rmse = nearest_clip_rmse(samples, clips)
    assert float(rmse.max()) <= BOUND, (name, rmse.tolist(), summary["final_loss"])
