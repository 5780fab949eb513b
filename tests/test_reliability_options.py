"""One validation rule per option across commands, and a failed start never blocks the plain retry.

Every command that takes ``--seed``, ``--lr`` or ``--frames`` refuses the same values with the same
sentence (exit 2, one ``error:`` line) before doing any work; ``--device cuda:9`` is refused before a
run folder exists; and a run whose start failed before its first checkpoint is started afresh by the
same command (no ``--resume``/``--force`` needed). The optimisation loop is a stub here: nothing trains.
"""

from __future__ import annotations

import json

import pytest

from helpers_reliability import assert_clean_error, cli_in_process as cli
from vfbench.errors import DataError

TINY = ["--preset", "tiny", "--size", "8", "--steps", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture
def res(tmp_path):
    """A results dir with one run folder (config only) for the commands that name a run."""
    run = tmp_path / "res" / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"generator": "vdm", "generator_config": {},
                                                 "dataset": {"name": "shapes"}}))
    return tmp_path / "res"


SEED_COMMANDS = [
    ["train", "vdm", "--frames", "4", *TINY],
    ["pretrain", "base", "--frames", "4", "--preset", "tiny", "--size", "8", "--steps", "1", "--device", "cpu"],
    ["sample", "r", "--num", "1", "--device", "cpu"],
    ["evaluate", "r"],
    ["quality", "r", "--num", "2"],
    ["bench", "efficiency", "--preset", "tiny", "--frames", "4", "--size", "8"],
    ["weights", "train", "shapes-net", "--steps", "1"],
]


@pytest.mark.parametrize("argv", SEED_COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("seed", ["-5", "-1"])
def test_every_command_refuses_a_negative_seed_alike(capsys, res, tmp_path, argv, seed):
    extra = ["--results", res] if argv[0] not in ("bench", "weights") else []
    if argv[0] == "weights":
        extra = ["--out", tmp_path / "w.safetensors"]
    code, _, err = cli(capsys, *argv, *extra, "--seed", seed)
    assert_clean_error(err, code, 2, "--seed", f"must be a whole number >= 0 (it seeds every random stream), got {seed}")
    assert not (res / "runs" / "vdm-shapes").exists() and not (tmp_path / "w.safetensors").exists()


LR_COMMANDS = [
    ["train", "vdm", "--frames", "4", *TINY],
    ["pretrain", "base", "--frames", "4", "--preset", "tiny", "--size", "8", "--steps", "1", "--device", "cpu"],
    ["ablate", "lambda", "--steps", "1", "--preset", "tiny", "--frames", "4", "--size", "8"],
    ["demo", "--quick"],
    ["weights", "train", "shapes-net", "--steps", "1"],
]


@pytest.mark.parametrize("argv", LR_COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1e-4"])
def test_every_command_refuses_a_non_finite_or_non_positive_lr_alike(capsys, tmp_path, argv, lr):
    extra = ["--out", tmp_path / "w.safetensors"] if argv[0] == "weights" else ["--results", tmp_path / "res"]
    code, _, err = cli(capsys, *argv, *extra, "--lr", lr)
    assert_clean_error(err, code, 2, "--lr", "must be a finite number > 0")
    assert not (tmp_path / "res").exists() and not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("argv", [
    ["train", "vdm", *TINY], ["train", "videofusion", *TINY], ["train", "vidm", *TINY],
    ["pretrain", "base", "--preset", "tiny", "--size", "8", "--steps", "1", "--device", "cpu"],
    ["ablate", "lambda", "--steps", "1", "--preset", "tiny", "--size", "8"],
    ["bench", "efficiency", "--preset", "tiny", "--size", "8"], ["bench", "analytic", "--preset", "tiny", "--size", "8"],
], ids=lambda a: " ".join(a[:2]))
def test_one_frame_videos_are_refused_with_the_reason(capsys, tmp_path, argv):
    extra = ["--results", tmp_path / "res"] if argv[0] in ("train", "pretrain", "ablate") else []
    code, _, err = cli(capsys, *argv, *extra, "--frames", "1")
    assert_clean_error(err, code, 2, "--frames", "must be at least 2", "one frame is an image", "got 1")
    assert not (tmp_path / "res").exists()


def test_a_config_file_gets_the_same_rules(capsys, tmp_path):
    for text, needle in (("train:\n  seed: -3\n", "train.seed"), ("train:\n  lr: .inf\n", "train.lr"),
                         ("dataset:\n  frames: 1\n", "dataset.frames"), ("dataset:\n  seed: -2\n", "dataset.seed")):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(text)
        code, _, err = cli(capsys, "train", "vdm", "--config", cfg, *TINY, "--results", tmp_path / "res")
        assert_clean_error(err, code, 2, needle)
    assert not (tmp_path / "res").exists()


@pytest.fixture
def stub_loop(monkeypatch):
    """The optimisation loop replaced: everything before it (run folder included) runs for real."""
    import vfbench.training as training

    calls = []

    def fake_train(run_dir, generator, dataset, cfg, **kw):
        calls.append(run_dir)
        if len(calls) == 1 and getattr(fake_train, "fail_first", False):
            raise DataError("injected: the first batch could not be decoded")
        return {"steps": cfg.steps, "steps_this_call": 0, "steps_per_s": None, "final_loss": None}

    monkeypatch.setattr(training, "train", fake_train)
    return fake_train, calls


def test_a_missing_gpu_is_refused_before_the_run_folder_exists(capsys, tmp_path, stub_loop):
    argv = ["train", "vdm", "--frames", "4", *TINY, "--results", tmp_path / "res", "--name", "x"]
    code, _, err = cli(capsys, *argv, "--device", "cuda:9")
    assert_clean_error(err, code, 2, "--device", "cuda:9")
    assert not (tmp_path / "res").exists()
    code, _, err = cli(capsys, *argv)  # the plain retry on a device this machine has
    assert code == 0, err


def test_a_start_that_failed_before_its_first_checkpoint_does_not_block_the_retry(capsys, tmp_path, stub_loop):
    fake_train, calls = stub_loop
    fake_train.fail_first = True
    argv = ["train", "vdm", "--frames", "4", *TINY, "--results", tmp_path / "res", "--name", "x"]
    code, _, err = cli(capsys, *argv)
    assert_clean_error(err, code, 1, "injected")
    assert (tmp_path / "res" / "runs" / "x" / "config.json").is_file()  # written before the failure
    code, _, err = cli(capsys, *argv, "--steps", "3")  # the plain retry, even with other settings
    assert code == 0, err
    cfg = json.loads((tmp_path / "res" / "runs" / "x" / "config.json").read_text())
    assert cfg["train"]["steps"] == 3 and len(calls) == 2
    (tmp_path / "res" / "runs" / "x" / "checkpoints").mkdir()
    (tmp_path / "res" / "runs" / "x" / "checkpoints" / "step-0000001.pt").write_bytes(b"progress")
    code, _, err = cli(capsys, *argv, "--steps", "4")  # once it has trained, an existing run is protected again
    assert_clean_error(err, code, 2, "exists", "--resume")


def test_a_gpu_index_this_machine_lacks_is_refused(capsys, tmp_path, monkeypatch):
    """On a one-GPU machine (simulated: nothing touches CUDA before the check) cuda:9 is refused by name."""
    import torch

    from vfbench.options import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == "cuda:0" and check_device("cuda") == "cuda"
    code, _, err = cli(capsys, "train", "vdm", "--frames", "4", *TINY, "--device", "cuda:9",
                       "--results", tmp_path / "res")
    assert_clean_error(err, code, 2, "--device", "cuda:9", "it has 1: cuda:0 to cuda:0")
    assert not (tmp_path / "res").exists()
