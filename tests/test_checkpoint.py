"""Checkpoint files: torn-file safety on resume, retention, validation; EMA math."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vfbench.checkpoint import (derive_seed, find_latest, list_checkpoints, load_checkpoint, prune,
                                save_checkpoint)
from vfbench.ema import EMA
from vfbench.errors import UsageError, WeightsError
from vfbench.training import train

from test_trainer import ToyClips, cfg, make_toy


def _state(step, value=0.0):
    return {"step": step, "generator": "toy-test", "model": {"w": torch.full((2,), float(value))},
            "ema": {"w": torch.zeros(2)}, "optimizer": {}}


def test_torn_and_temp_files_are_ignored_on_resume(tmp_path):
    ds = ToyClips()
    train(tmp_path, make_toy(), ds, cfg(steps=4, ckpt_every=2), progress=False)
    ckpts = tmp_path / "checkpoints"
    good = torch.load(ckpts / "step-0000004.pt", weights_only=True)
    # a kill mid-write: a truncated newer checkpoint and a leftover temp file of an even newer one
    blob = (ckpts / "step-0000004.pt").read_bytes()
    (ckpts / "step-0000006.pt").write_bytes(blob[: len(blob) // 2])
    (ckpts / ".step-0000008.pt.abc123.tmp").write_bytes(blob)

    with pytest.warns(UserWarning, match="step-0000006.pt"):
        path, state = find_latest(ckpts)
    assert path.name == "step-0000004.pt" and state["step"] == 4

    # resuming continues from step 4 (not 6, not 8) and removes the torn file
    with pytest.warns(UserWarning):
        s = train(tmp_path, make_toy(seed=9), ds, cfg(steps=6, ckpt_every=2), resume=True, progress=False)
    assert s["resumed_from"] == 4 and s["steps"] == 6
    final = torch.load(ckpts / "step-0000006.pt", weights_only=True)
    assert final["step"] == 6
    assert any(not torch.equal(good["model"][k], final["model"][k]) for k in good["model"])

    # ... and equals an uninterrupted 6-step run
    straight = make_toy()
    train(tmp_path / "straight", straight, ds, cfg(steps=6, ckpt_every=2), progress=False)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, final["model"][k]), k


def test_latest_pointer_written_after_file_and_retention(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, _state(step), keep=2, final=(step == 2))
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [4, 3, 2]  # two newest + the end-of-run milestone at step 2
    pointer = json.loads((tmp_path / "latest.json").read_text())
    assert pointer["step"] == 4 and pointer["file"] == "step-0000004.pt" and pointer["finals"] == [2]
    assert prune(tmp_path, keep=1, protect=[2]) == [tmp_path / "step-0000003.pt"]


def test_load_checkpoint_rejects_foreign_and_renamed_files(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="not a vfbench training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    save_checkpoint(tmp_path, _state(3))
    (tmp_path / "step-0000003.pt").rename(tmp_path / "step-0000005.pt")
    with pytest.raises(WeightsError, match="name says 5"):
        load_checkpoint(tmp_path / "step-0000005.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot be loaded"):
        load_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_holds_only_plain_data(tmp_path):
    train(tmp_path, make_toy(), ToyClips(), cfg(steps=2, ckpt_every=2), progress=False)
    state = torch.load(tmp_path / "checkpoints/step-0000002.pt", weights_only=True)
    assert {"model", "ema", "optimizer", "step", "rng", "data_order", "generator", "train"} <= set(state)
    assert isinstance(state["rng"]["cpu"], torch.Tensor)
    assert state["data_order"]["next_position"] == 2 * 3


def test_ema_known_answer():
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
    ema.update(m)  # 0.9 * 1 + 0.1 * 3 = 1.2
    assert ema.state_dict()["weight"].item() == pytest.approx(1.2, abs=1e-6)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema.update(m)  # 0.9 * 1.2 + 0.1 * 0 = 1.08
    assert ema.state_dict()["weight"].item() == pytest.approx(1.08, abs=1e-6)
    copy = nn.Linear(1, 1, bias=False)
    ema.copy_to(copy)
    assert copy.weight.item() == pytest.approx(1.08, abs=1e-6)
    with pytest.raises(UsageError, match="--ema-decay"):
        EMA(m, decay=1.5)


def test_ema_warmup_known_answer():
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.999, warmup=True)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # decay (1+1)/(10+1) = 2/11 -> 9/11
    assert ema.state_dict()["weight"].item() == pytest.approx(9 / 11, abs=1e-6)
    ema.num_updates = 10 ** 6
    assert ema.current_decay() == 0.999


def test_ema_decay_zero_tracks_weights_and_buffers():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(m, decay=0.0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
        m[1].running_mean.fill_(5.0)
    ema.update(m)
    sd = ema.state_dict()
    for k, v in m.state_dict().items():
        assert torch.equal(sd[k], v), k


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(1, "noise", 3) == derive_seed(1, "noise", 3)
    assert len({derive_seed(1, "noise", s) for s in range(100)}) == 100
    assert derive_seed(1, "noise", 3) != derive_seed(1, "data", 3)
    assert 0 <= derive_seed("x") < 2 ** 63
