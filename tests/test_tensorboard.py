"""``train(..., tensorboard=True)``: the event file holds the loss terms, learning rates, EMA decay and
sample previews, read back with TensorBoard's own reader; training itself is unchanged by it."""

from __future__ import annotations

import pytest
import torch

import test_trainer  # noqa: F401  (registers the toy generator "toy-test")
from test_trainer import ToyClips, ToyConfig, ToyGen
from vfbench.training import TrainConfig, train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed (pip install -e '.[tensorboard]')")


def test_event_file_has_curves_and_previews(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=2, log_every=2, ckpt_every=3, device="cpu")
    torch.manual_seed(0)
    summary = train(tmp_path / "tb", ToyGen(ToyConfig(frames=2, size=8)), ToyClips(), cfg, progress=False,
                    tensorboard=True)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "tensorboard"),
                                             size_guidance={event_accumulator.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/total", "loss/t_mean", "lr/body", "lr/head", "ema/decay"} <= set(tags["scalars"])
    loss = acc.Scalars("loss/total")
    assert [e.step for e in loss] == [2, 4, 6]
    assert loss[-1].value == pytest.approx(summary["final_loss"], rel=1e-5)
    assert acc.Scalars("lr/head")[0].value == pytest.approx(cfg.lr * ToyConfig().lr_mult_head)
    assert 0 < acc.Scalars("ema/decay")[-1].value <= cfg.ema_decay
    previews = acc.Images("samples/ema")
    assert [e.step for e in previews] == [3, 6]  # every --ckpt-every steps by default
    assert (previews[0].width, previews[0].height) == (2 * 8, 4 * 8)  # frames across, clips down

    # the previews sample inside a forked RNG: the weights equal those of a run without TensorBoard
    torch.manual_seed(0)
    plain = ToyGen(ToyConfig(frames=2, size=8))
    train(tmp_path / "plain", plain, ToyClips(), cfg, progress=False)
    tb_weights = torch.load(tmp_path / "tb" / "checkpoints" / "step-0000006.pt", weights_only=False)["model"]
    for k, v in plain.state_dict().items():
        assert torch.equal(v, tb_weights[k]), k


def test_filmstrip_layout():
    from vfbench.tensorboard_log import filmstrip

    clips = torch.arange(2 * 3 * 1 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 1, 2, 2)
    img = filmstrip(clips)
    assert img.shape == (3, 4, 6)
    assert torch.equal(img[0, 2:4, 2:4], clips[1, 1, 0])  # clip 1 (second row), frame 1 (second column)
