"""The generator contract (docs/CONTRACTS.md "Generators"), as a reusable test class.

Subclass ``GeneratorConformance`` with ``name = "<registered name>"`` in a ``test_*.py`` file (the
subclass's name must start with ``Test``). Every generator is built at the ``tiny`` preset,
4 frames of 8x8, and must:

* sample uint8 ``[n, T, C, H, W]``; the same generator state gives the same bytes, other seeds differ;
* from ``sample_long(n, L)`` (L > T) either return uint8 ``[n, L, C, H, W]``, the same bytes for the same
  generator state, or refuse with a ``UsageError``;
* survive ``config_dict`` / ``from_config_dict`` + ``state_dict`` through ``torch.save`` and
  ``torch.load(weights_only=True)`` with identical samples;
* return a finite 0-d ``loss`` with gradients (and only scalar logged terms) from ``loss(batch)``,
  with the randomness the shared trainer gives it (the global RNG, seeded);
* give ``param_groups(lr)`` naming disjoint groups of trainable parameters;
* overfit one batch of 4 clips on the CPU.

Knobs a subclass may change: ``sample_controls`` (cheap sampling for tests), ``overfit_steps``,
``overfit_lr``, ``overfit_ratio``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict

import pytest
import torch

from vfbench.registry import GENERATORS

FRAMES, SIZE, CHANNELS = 4, 8, 3


def moving_squares(batch: int = 4) -> Dict[str, torch.Tensor]:
    """A batch in the datasets' collate format: coloured squares moving one pixel per frame, no labels."""
    video = torch.zeros(batch, FRAMES, CHANNELS, SIZE, SIZE, dtype=torch.uint8)
    for b in range(batch):
        for f in range(FRAMES):
            x = f + b % 2
            video[b, f, b % 3, 2:5, x:x + 3] = 255
    minus_one = torch.full((batch,), -1, dtype=torch.long)
    return {"video": video, "label": minus_one, "content": minus_one.clone(), "motion": minus_one.clone(),
            "index": torch.arange(batch)}


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Move every weight off its initialisation (zero-initialised output layers included), so that the
    samples really depend on the weights a round trip must carry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def seeded_loss(model, batch, seed: int) -> Dict[str, Any]:
    """``loss(batch)`` the way the shared trainer calls it: the global RNG seeded, the caller's state kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.loss(batch)


class GeneratorConformance:
    name: str = ""
    sample_controls: Dict[str, Any] = {"steps": 4}
    overfit_steps: int = 30
    overfit_lr: float = 2e-2
    overfit_ratio: float = 0.5

    @pytest.fixture
    def generator_name(self) -> str:
        return self.name

    @pytest.fixture
    def make(self, generator_name) -> Callable[..., Any]:
        """``make(seed=0, **config_overrides)`` -> a fresh tiny generator (4 frames, 8x8)."""
        try:
            cls = GENERATORS.get(generator_name)
        except ImportError as exc:
            pytest.skip(f"generator {generator_name!r} does not import yet: {exc}")

        def build(seed: int = 0, **overrides):
            cfg = cls.config_for("tiny", frames=FRAMES, size=SIZE)
            if overrides:
                cfg = dataclasses.replace(cfg, **overrides)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(cfg)

        return build

    def sample(self, model, n: int, seed: int) -> torch.Tensor:
        return model.sample(n, generator=torch.Generator().manual_seed(seed), **self.sample_controls)

    # -- sampling ---------------------------------------------------------------------------------
    def test_sample_shape_and_dtype(self, make):
        clips = self.sample(make(), 2, 0)
        assert isinstance(clips, torch.Tensor) and clips.dtype == torch.uint8
        assert tuple(clips.shape) == (2, FRAMES, CHANNELS, SIZE, SIZE)

    def test_same_seed_same_bytes_other_seed_differs(self, make):
        model = perturb(make())
        a = self.sample(model, 2, 1)
        assert torch.equal(a, self.sample(model, 2, 1))
        assert not torch.equal(a, self.sample(model, 2, 2))

    def test_sampling_uses_no_global_rng(self, make):
        model = perturb(make())
        torch.manual_seed(123)
        a = self.sample(model, 1, 3)
        torch.manual_seed(456)
        assert torch.equal(a, self.sample(model, 1, 3))

    def test_sample_long_returns_longer_clips_or_refuses_clearly(self, make):
        from vfbench.errors import UsageError

        model = perturb(make())
        length = FRAMES + 3
        try:
            a = model.sample_long(2, length, generator=torch.Generator().manual_seed(5), **self.sample_controls)
        except UsageError:
            return  # a generator that cannot extend videos says so clearly
        assert isinstance(a, torch.Tensor) and a.dtype == torch.uint8
        assert tuple(a.shape) == (2, length, CHANNELS, SIZE, SIZE)
        assert torch.equal(a, model.sample_long(2, length, generator=torch.Generator().manual_seed(5),
                                                **self.sample_controls))

    def test_channels_last_changes_samples_by_rounding_only(self, make):
        """``vfbench sample`` runs the nets channels-last on a CPU (``vfbench.nets.memory_format``): the same
        seed must give the same clips up to float rounding (a uint8 level where a value sits on a rounding
        edge), in the same format the same bytes, and the state dict must still load into a contiguous model."""
        import copy

        from vfbench.nets.memory_format import to_channels_last

        model = perturb(make())
        cl = to_channels_last(copy.deepcopy(model))
        a, b = self.sample(model, 2, 6), self.sample(cl, 2, 6)
        diff = (a.int() - b.int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
        assert torch.equal(b, self.sample(cl, 2, 6))
        fresh = make(seed=3)
        fresh.load_state_dict(cl.state_dict())
        assert torch.equal(self.sample(fresh, 2, 6), a)

    # -- serialisation ----------------------------------------------------------------------------
    def test_config_and_state_round_trip(self, make, tmp_path):
        model = perturb(make(seed=0), seed=1)
        expected = self.sample(model, 2, 4)
        path = tmp_path / "ckpt.pt"
        torch.save({"config": model.config_dict(), "state_dict": model.state_dict()}, path)
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cls = type(model)
        fresh = cls.from_config_dict(blob["config"])
        assert fresh.config == model.config
        assert not torch.equal(self.sample(fresh, 2, 4), expected)  # weights matter: the test can fail
        fresh.load_state_dict(blob["state_dict"])
        assert torch.equal(self.sample(fresh, 2, 4), expected)

    # -- training ---------------------------------------------------------------------------------
    def test_loss_is_a_finite_scalar_with_gradients(self, make):
        model = make()
        out = seeded_loss(model, moving_squares(), seed=5)
        loss = out["loss"]
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and torch.isfinite(loss)
        assert loss.requires_grad
        for key, value in out.items():
            assert isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1), key
        loss.backward()
        assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.parameters())
        again = seeded_loss(make(), moving_squares(), seed=5)["loss"]
        assert torch.equal(loss.detach(), again.detach())  # same seed, same loss

    def test_param_groups_are_named_and_disjoint(self, make):
        model = make()
        groups = model.param_groups(1e-3)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        seen = set()
        for group in groups:
            assert isinstance(group.get("name"), str) and group["lr"] > 0
            ids = [id(p) for p in group["params"]]
            assert not seen & set(ids) and set(ids) <= trainable
            seen |= set(ids)
        assert seen, "param_groups returned no parameters"

    def test_overfits_a_batch_of_four_clips(self, make):
        model = make()
        batch = moving_squares()

        def held_out_loss() -> float:  # the same noise and timesteps before and after training
            with torch.no_grad():
                return sum(seeded_loss(model, batch, seed=99 + i)["loss"].item() for i in range(2)) / 2

        start = held_out_loss()
        opt = torch.optim.Adam(model.param_groups(self.overfit_lr))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(6)
            for _ in range(self.overfit_steps):
                out = model.loss(batch)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
        end = held_out_loss()
        assert math.isfinite(end) and end < self.overfit_ratio * start, (start, end)

    # -- trainer / resume -------------------------------------------------------------------------
    def test_trainer_resume_matches_uninterrupted_run(self, make, tmp_path):
        """The shared trainer on this generator: 4 steps straight == 2 steps, stop, resume to 4 (CPU,
        bit for bit), and the run reloads through ``load_run`` into a generator that samples."""
        from vfbench.training import TrainConfig, train

        class Clips(torch.utils.data.Dataset):
            def __init__(self):
                self.batch = moving_squares(4)

            def __len__(self):
                return 4

            def __getitem__(self, i):
                return {k: v[i] for k, v in self.batch.items()}

        def run(dirname, plan):
            torch.manual_seed(0)
            model = make()
            for steps, resume in plan:
                cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, ckpt_every=1, log_every=1, seed=3,
                                  device="cpu", ema_decay=0.9)
                if resume:  # a fresh process would rebuild the model from scratch
                    torch.manual_seed(0)
                    model = make()
                train(tmp_path / dirname, model, Clips(), cfg, resume=resume, progress=False,
                      model_name=self.name)
            return model

        straight = run("straight", [(4, False)])
        resumed = run("resumed", [(2, False), (4, True)])
        a, b = straight.state_dict(), resumed.state_dict()
        assert a.keys() == b.keys()
        changed = False
        for k in a:
            assert torch.equal(a[k], b[k]), f"{k} differs after resume"
        fresh = make().state_dict()
        changed = any(not torch.equal(a[k], fresh[k]) for k in a if a[k].is_floating_point())
        assert changed, "training did not move any weight"
