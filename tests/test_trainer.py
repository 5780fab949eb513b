"""The shared trainer: exact resume, EMA math, learning-rate groups, divergence handling.

The toy generator and dataset here are shared with the other trainer/sampling tests (imported
from this module): a real (tiny) diffusion-style objective that draws its noise from the global
torch RNG, which is the hard case for exact resume.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from vfbench.clips import uint8_to_unit, unit_to_uint8
from vfbench.errors import TrainingDiverged, UsageError, WeightsError
from vfbench.generator import Generator
from vfbench.registry import GENERATORS
from vfbench.training import StepBatchSampler, TrainConfig, train


@dataclass
class ToyConfig:
    frames: int = 2
    size: int = 8
    width: int = 4
    lr_mult_head: float = 0.1
    nan_after: int = -1  # test hook: loss becomes NaN from this call on (-1: never)


class ToyGen(Generator):
    """Noise-prediction on frames with two small convs; ``head`` is a separate lr group."""

    name = "toy-test"
    Config = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.body = nn.Conv2d(4, config.width, 3, padding=1)
        self.head = nn.Conv2d(config.width, 3, 3, padding=1)
        self.calls = 0

    @classmethod
    def config_for(cls, preset, frames, size, num_classes=0):
        return ToyConfig(frames=frames, size=size, width={"tiny": 4, "small": 8}.get(preset, 4))

    def _eps(self, z, t):
        b, f = z.shape[:2]
        x = z.flatten(0, 1)
        tt = t.repeat_interleave(f).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return self.head(torch.tanh(self.body(torch.cat([x, tt], 1)))).view_as(z)

    def loss(self, batch):
        self.calls += 1
        x = uint8_to_unit(batch["video"])
        noise = torch.randn_like(x)                      # global RNG on purpose
        t = torch.rand(x.shape[0], device=x.device)      # global RNG on purpose
        a = (1 - t).view(-1, 1, 1, 1, 1)
        z = a.sqrt() * x + (1 - a).sqrt() * noise
        mse = (self._eps(z, t) - noise).pow(2).mean()
        if 0 <= self.config.nan_after < self.calls:
            mse = mse * float("nan")
        return {"loss": mse, "t_mean": t.mean()}

    @torch.no_grad()
    def sample(self, n, *, generator=None, steps: int = 3, **controls):
        c = self.config
        z = torch.randn(n, c.frames, 3, c.size, c.size, generator=generator, device=generator.device if generator else "cpu")
        for i in range(steps, 0, -1):
            t = torch.full((n,), i / steps)
            z = z - 0.3 * self._eps(z, t)
        return unit_to_uint8(z.clamp(-1, 1))

    def param_groups(self, lr):
        return [{"params": list(self.body.parameters()), "lr": lr, "name": "body"},
                {"params": list(self.head.parameters()), "lr": lr * self.config.lr_mult_head, "name": "head"}]


if "toy-test" not in GENERATORS:
    GENERATORS.add("toy-test", ToyGen, description="test-only toy generator", test_double=True)


class ToyClips(torch.utils.data.Dataset):
    """Deterministic uint8 clips from (seed, index), in the datasets' item format."""

    num_classes = 0

    def __init__(self, n=12, frames=2, size=8, seed=0):
        self.n, self.frames, self.size, self.seed = n, frames, size, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        video = torch.randint(0, 256, (self.frames, 3, self.size, self.size), generator=g, dtype=torch.uint8)
        return {"video": video, "label": -1, "content": -1, "motion": -1, "index": i}

    def describe(self):
        return {"name": "toyclips", "count": self.n, "frames": self.frames, "size": self.size}


def make_toy(seed=0, **kw):
    torch.manual_seed(seed)
    return ToyGen(ToyConfig(**kw))


def cfg(**kw):
    base = dict(steps=6, batch_size=3, lr=1e-2, ema_decay=0.9, grad_clip=1.0, ckpt_every=2,
                log_every=1, seed=7, device="cpu", keep_checkpoints=2)
    base.update(kw)
    return TrainConfig(**base)


# -- tests ---------------------------------------------------------------------------------------
def test_resume_is_bit_identical(tmp_path):
    ds = ToyClips()
    straight = make_toy()
    s1 = train(tmp_path / "a", straight, ds, cfg(steps=6), progress=False)
    assert s1["steps"] == 6

    first = make_toy()
    train(tmp_path / "b", first, ds, cfg(steps=3, ckpt_every=3), progress=False)
    resumed = make_toy(seed=123)  # a different init: everything must come from the checkpoint
    s2 = train(tmp_path / "b", resumed, ds, cfg(steps=6), resume=True, progress=False)
    assert s2["resumed_from"] == 3 and s2["steps_this_call"] == 3

    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea = torch.load(tmp_path / "a/checkpoints/step-0000006.pt", weights_only=True)["ema"]
    eb = torch.load(tmp_path / "b/checkpoints/step-0000006.pt", weights_only=True)["ema"]
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k
    # the resumed log has each step once, in order
    with open(tmp_path / "b/log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_noise_is_fresh_every_step_and_global_rng_untouched(tmp_path):
    torch.manual_seed(5)
    gen = ToyGen(ToyConfig())
    state_after_init = torch.get_rng_state()
    train(tmp_path, gen, ToyClips(), cfg(steps=4), progress=False)
    with open(tmp_path / "log.csv") as fh:
        t_means = [float(r["t_mean"]) for r in csv.DictReader(fh)]
    assert len(set(t_means)) == 4  # a new draw of timesteps every step
    assert torch.equal(torch.get_rng_state(), state_after_init)  # the caller's RNG is left alone


def test_data_loader_workers_do_not_change_the_result(tmp_path):
    a, b = make_toy(), make_toy()
    train(tmp_path / "a", a, ToyClips(), cfg(steps=2), progress=False)
    train(tmp_path / "b", b, ToyClips(), cfg(steps=2, num_workers=2), progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_training_changes_weights_and_logs(tmp_path):
    gen = make_toy()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    s = train(tmp_path, gen, ToyClips(), cfg(steps=4, log_every=2), progress=False)
    assert any(not torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert math.isfinite(s["final_loss"]) and s["steps_per_s"] > 0
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert set(rows[0]) >= {"step", "loss", "t_mean", "lr", "steps_per_s", "time"}
    assert (tmp_path / "summary.json").is_file()


def test_different_seed_gives_different_weights(tmp_path):
    a, b = make_toy(), make_toy()
    train(tmp_path / "a", a, ToyClips(), cfg(steps=2, seed=1), progress=False)
    train(tmp_path / "b", b, ToyClips(), cfg(steps=2, seed=2), progress=False)
    assert not torch.equal(a.body.weight, b.body.weight)


def test_param_group_learning_rates_respected(tmp_path):
    # Plain SGD-like check through AdamW: with weight decay 0 and one step, Adam's update of every
    # element is lr * sign(grad) (up to eps), so the per-group step sizes reveal the group lrs.
    gen = make_toy(lr_mult_head=0.1)
    b0, h0 = gen.body.weight.detach().clone(), gen.head.weight.detach().clone()
    s = train(tmp_path, gen, ToyClips(), cfg(steps=1, lr=1e-3, grad_clip=0.0), progress=False)
    db = (gen.body.weight.detach() - b0).abs()
    dh = (gen.head.weight.detach() - h0).abs()
    assert torch.allclose(db.max(), torch.tensor(1e-3), rtol=1e-3)
    assert torch.allclose(dh.max(), torch.tensor(1e-4), rtol=1e-3)
    assert s["lr_groups"] == {"body": 1e-3, "head": pytest.approx(1e-4)}


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    gen = make_toy(nan_after=3)  # steps 1-3 fine, step 4 NaN
    with pytest.raises(TrainingDiverged, match=r"step 4.*lower the learning rate"):
        train(tmp_path, gen, ToyClips(), cfg(steps=6, ckpt_every=2), progress=False)
    files = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt"))
    assert files == ["step-0000002.pt"]
    state = torch.load(tmp_path / "checkpoints/step-0000002.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # the run can be continued from that checkpoint (a fresh toy counts its calls from 0 again)
    s = train(tmp_path, make_toy(nan_after=3), ToyClips(), cfg(steps=4, ckpt_every=2), resume=True, progress=False)
    assert s["resumed_from"] == 2 and s["steps"] == 4


def test_refuses_to_restart_over_existing_checkpoints(tmp_path):
    train(tmp_path, make_toy(), ToyClips(), cfg(steps=2), progress=False)
    with pytest.raises(UsageError, match="--resume"):
        train(tmp_path, make_toy(), ToyClips(), cfg(steps=2), progress=False)
    with pytest.raises(WeightsError, match="another toy-test configuration"):
        train(tmp_path, make_toy(width=6), ToyClips(), cfg(steps=3), resume=True, progress=False)


def test_bad_config_values_are_usage_errors():
    for kw, opt in [({"steps": 0}, "--steps"), ({"batch_size": -1}, "--batch-size"),
                    ({"lr": 0.0}, "--lr"), ({"precision": "fp8"}, "--precision"),
                    ({"ema_decay": 1.5}, "--ema-decay"), ({"device": "tpu"}, "--device")]:
        with pytest.raises(UsageError, match=opt):
            cfg(**kw)


def test_sampler_covers_each_epoch_once_and_shards_ranks():
    s0 = StepBatchSampler(10, 2, seed=3, start=0, stop=5, rank=0, world_size=2)
    s1 = StepBatchSampler(10, 2, seed=3, start=0, stop=5, rank=1, world_size=2)
    # the two ranks together see one permutation per 10 positions: steps 0-1 and the first half
    # of step 2 use epoch 0, and the ranks never share an index within the epoch
    first_epoch = s0.indices(0) + s1.indices(0) + s0.indices(1) + s1.indices(1) + s0.indices(2)
    assert sorted(first_epoch) == list(range(10))
    # a sampler started later yields exactly the tail of the full one
    late = StepBatchSampler(10, 2, seed=3, start=3, stop=5, rank=1, world_size=2)
    assert list(late) == list(s1)[3:]


def test_mixed_precision_bf16_on_cpu_fp16_gpu_only(tmp_path):
    from vfbench.training import amp_settings

    assert amp_settings("fp32", torch.device("cpu")) == (None, False)
    assert amp_settings("bf16", torch.device("cuda", 0)) == (torch.bfloat16, False)
    assert amp_settings("bf16", torch.device("cpu")) == (torch.bfloat16, False)  # CPU autocast (AMX-BF16)
    assert amp_settings("fp16", torch.device("cuda", 0)) == (torch.float16, True)  # with GradScaler
    with pytest.warns(UserWarning, match="GPU only"):
        s = train(tmp_path, make_toy(), ToyClips(), cfg(steps=1, precision="fp16"), progress=False)
    assert s["precision"] == "fp32"
    s = train(tmp_path / "bf16", make_toy(), ToyClips(), cfg(steps=2, precision="bf16"), progress=False)
    assert s["precision"] == "bf16" and math.isfinite(s["final_loss"])
    # weights and their average stay float32 under autocast
    state = torch.load(s["checkpoint"], weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cpu"):
            train(tmp_path / "g", make_toy(), ToyClips(), cfg(steps=1, device="cuda"), progress=False)


def test_lr_factor_warmup_and_cosine_known_values():
    from vfbench.training import lr_factor

    const = TrainConfig(steps=10, warmup_steps=4)
    assert [lr_factor(i, const) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = TrainConfig(steps=10, lr_schedule="cosine")
    assert lr_factor(0, cos) == 1.0
    assert lr_factor(5, cos) == pytest.approx(0.5)
    assert lr_factor(10, cos) == pytest.approx(0.0, abs=1e-12)
    warm_cos = TrainConfig(steps=12, lr_schedule="cosine", warmup_steps=2)
    assert lr_factor(0, warm_cos) == 0.5 and lr_factor(2, warm_cos) == 1.0
    assert lr_factor(7, warm_cos) == pytest.approx(0.5)  # half-way through the 10 decay steps
    with pytest.raises(UsageError, match="--lr-schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="linear")


def test_trainer_follows_the_schedule_and_resumes_it_exactly(tmp_path):
    from vfbench.training import lr_factor

    sched = dict(lr_schedule="cosine", warmup_steps=2)
    straight = make_toy()
    s = train(tmp_path / "a", straight, ToyClips(), cfg(steps=6, **sched), progress=False)
    with open(tmp_path / "a/log.csv") as fh:
        logged = [float(r["lr"]) for r in csv.DictReader(fh)]
    c = cfg(steps=6, **sched)
    assert logged == pytest.approx([1e-2 * lr_factor(i, c) for i in range(6)], rel=1e-5)  # log.csv keeps 6 digits
    assert s["lr_groups"]["body"] == 1e-2 and s["lr_schedule"] == "cosine"  # the peak, not the last value
    first = make_toy()
    train(tmp_path / "b", first, ToyClips(), cfg(steps=3, ckpt_every=3, **sched), progress=False)
    resumed = make_toy(seed=9)
    train(tmp_path / "b", resumed, ToyClips(), cfg(steps=6, **sched), resume=True, progress=False)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
