"""Every file the trainer and sampler load is handled like a checkpoint.

One ``error:`` line naming the file and the fix (never torch's advice to load with
``weights_only=False``), declared sizes checked against a limit derived from the model before
anything is allocated, and a damaged vfbench artefact moved into ``unreadable/`` so that the plain
retry (``--resume``) rebuilds it instead of failing again. No model is trained here: the one
"finished" pretraining is a checkpoint written directly.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
import torch

from helpers_reliability import assert_clean_error, cli_in_process as cli
from vfbench.errors import WeightsError

FRAMES, SIZE = 4, 8


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (exec, (f"open({self.sentinel!r}, 'w').write('pwned')",))


def tiny(name):
    from vfbench.registry import GENERATORS
    from vfbench.runs import build_generator

    return build_generator(name, GENERATORS.get(name).config_for("tiny", FRAMES, SIZE), seed=0)


def finished_pretraining(out_dir, gen, steps=2):
    """The checkpoint a finished ``pretrain_base`` leaves, written directly (no optimisation step)."""
    from vfbench.checkpoint import save_checkpoint
    from vfbench.ema import EMA

    opt = torch.optim.AdamW([{"name": "base", "params": list(gen.base.parameters()), "lr": 1e-3}], lr=1e-3)
    save_checkpoint(out_dir / "checkpoints", {
        "step": steps, "generator": gen.name, "generator_config": gen.config_dict(), "model": gen.state_dict(),
        "ema": EMA(gen, 0.9).state_dict(), "ema_updates": steps, "optimizer": opt.state_dict()}, final=True)


def test_a_damaged_base_pretrain_is_moved_aside_and_rebuilt_on_resume(tmp_path):
    from vfbench.training import TrainConfig, pretrain_base

    gen, out = tiny("videofusion"), tmp_path / "run" / "pretrain"
    finished_pretraining(out, gen)
    artefact = tmp_path / "run" / "base-pretrain.pt"
    artefact.write_bytes(b"PK\x03\x04 torn by a full disk")
    cfg = TrainConfig(steps=2, batch_size=1, device="cpu")
    with pytest.warns(UserWarning, match="base-pretrain.pt.*moved to"):
        got = pretrain_base(out, gen, [{"video": torch.zeros(FRAMES, 3, SIZE, SIZE, dtype=torch.uint8)}], cfg,
                            resume=True, progress=False, artefact=artefact)
    assert got == artefact and torch.load(artefact, weights_only=True)["step"] == 2  # rebuilt from the checkpoint
    assert (tmp_path / "run" / "unreadable" / "base-pretrain.pt").read_bytes() == b"PK\x03\x04 torn by a full disk"


@pytest.mark.parametrize("damage", ["torn", "evil"])
def test_a_damaged_pretrained_base_given_to_base_init(capsys, tmp_path, damage):
    res = tmp_path / "res"
    base = res / "pretrained" / "b1" / "base-pretrain.pt"
    base.parent.mkdir(parents=True)
    if damage == "torn":
        torch.save({"format": "vfbench-base-v1", "state_dict": tiny("videofusion").base.state_dict(), "step": 2}, base)
        base.write_bytes(base.read_bytes()[:3000])
    else:
        torch.save({"format": "vfbench-base-v1", "state_dict": _Evil(tmp_path / "PWNED"), "step": 2}, base)
    code, _, err = cli(capsys, "train", "videofusion", "--base-init", "b1", "--preset", "tiny", "--frames", FRAMES,
                       "--size", SIZE, "--steps", 1, "--device", "cpu", "--results", res, "--name", "v")
    msg = assert_clean_error(err, code, 1, "base-pretrain.pt", "vfbench pretrain base --name b1 --resume", "moved to")
    assert "weights_only=False" not in msg and not (tmp_path / "PWNED").exists()
    assert not base.exists() and (base.parent / "unreadable" / "base-pretrain.pt").is_file()
    assert not (res / "runs" / "v").exists()  # the failed start left nothing behind


def test_a_foreign_base_init_file_is_named_and_left_in_place(capsys, tmp_path):
    evil = tmp_path / "mine.pt"
    torch.save({"w": _Evil(tmp_path / "PWNED")}, evil)
    code, _, err = cli(capsys, "train", "videofusion", "--base-init", evil, "--preset", "tiny", "--frames", FRAMES,
                       "--size", SIZE, "--steps", 1, "--device", "cpu", "--results", tmp_path / "res")
    msg = assert_clean_error(err, code, 1, "mine.pt", "refused", "could run code")
    assert "weights_only=False" not in msg and evil.is_file() and not (tmp_path / "PWNED").exists()
    wrong = tmp_path / "other.pt"  # a state dict of another architecture: the file is named too
    torch.save({"conv.weight": torch.zeros(2, 2)}, wrong)
    code, _, err = cli(capsys, "train", "videofusion", "--base-init", wrong, "--preset", "tiny", "--frames", FRAMES,
                       "--size", SIZE, "--steps", 1, "--device", "cpu", "--results", tmp_path / "res")
    assert_clean_error(err, code, 1, "other.pt", "does not fit")


def test_i3d_weights_errors_never_repeat_torch_advice(tmp_path):
    from vfbench.metrics.i3d_weights import load_i3d_weights

    evil = tmp_path / "i3d.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": _Evil(tmp_path / "PWNED")}, evil)
    with pytest.raises(WeightsError) as ei:
        load_i3d_weights(evil)
    assert "i3d.pt" in str(ei.value) and "weights_only=False" not in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "PWNED").exists()


def _tiny_vdm_run(res):
    gen = tiny("vdm")
    run = res / "runs" / "v"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"generator": "vdm", "generator_config": gen.config_dict()}))
    return run, gen


def test_a_checkpoint_declaring_more_than_its_model_can_hold(capsys, tmp_path):
    from vfbench.torch_files import checkpoint_limit

    run, gen = _tiny_vdm_run(tmp_path / "res")
    big = tmp_path / "big.pt"
    extra = checkpoint_limit(gen) // 4 + 1  # float32 elements: one tensor more than the whole limit
    torch.save({"format": "vfbench-checkpoint-v1", "pad": torch.zeros(extra)}, big)
    code, _, err = cli(capsys, "sample", run, "--num", 2, "--checkpoint", big, "--results", tmp_path / "res",
                       "--device", "cpu")
    assert_clean_error(err, code, 1, "big.pt", "more than the", "bytes a training checkpoint of this model can hold")


def test_a_legacy_torch_file_declaring_huge_storages_is_refused_before_allocating(tmp_path):
    from vfbench.torch_files import load_torch_file

    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(7)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    at = raw.index(b"cpuq") + 5  # BINPUT n, then the storage's element count: BININT1 7
    assert raw[at:at + 2] == b"K\x07"
    path.write_bytes(raw[:at] + b"J" + (2**31 - 1).to_bytes(4, "little") + raw[at + 2:])  # 8 GB of floats
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match=r"legacy\.pt.*declare 8,589,934,588 bytes"):
            load_torch_file(path, what="weights file", fix="replace it")
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()
