"""``vfbench train`` / ``pretrain base`` / ``sample`` end to end (in-process CLI calls)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vfbench.cli import main

import test_trainer  # noqa: F401  (registers the toy generator "toy-test")




def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return ei.value.code, out.out.strip(), out.err


def _have_videofusion_and_shapes() -> bool:
    try:
        import vfbench.data.shapes  # noqa: F401
        import vfbench.generators.videofusion  # noqa: F401
    except ImportError:
        return False
    return True


def test_train_resume_sample_toy(tmp_path, capsys):
    res = str(tmp_path / "res")
    common = ["train", "toy-test", "--dataset", "shapes", "--frames", "2", "--size", "8", "--batch-size", "2",
              "--results", res, "--name", "toy", "--seed", "3", "--no-progress", "--device", "cpu"]
    code, out, err = run_cli(capsys, *common, "--steps", "2")
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    assert (run_dir / "checkpoints/step-0000002.pt").is_file()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["generator"] == "toy-test" and cfg["train"]["steps"] == 2 and cfg["dataset"]["name"] == "shapes"

    # the same command again is refused; with --resume and more steps it continues
    code, _, err = run_cli(capsys, *common, "--steps", "2")
    assert code == 2 and "--resume" in err
    code, out, err = run_cli(capsys, *common, "--steps", "3", "--resume")
    assert code == 0, err
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == 2

    code, out, err = run_cli(capsys, "sample", "toy", "--num", "3", "--batch-size", "2", "--seed", "1",
                             "--results", res, "--tag", "t", "--no-progress", "--control", "steps=2")
    assert code == 0, err
    samples = Path(out.splitlines()[-1])
    assert samples == run_dir / "samples" / "t"
    assert (samples / "preview.gif").is_file()
    m = json.loads((samples / "manifest.json").read_text())
    assert m["complete"] and m["controls"] == {"steps": 2} and m["checkpoint_step"] == 3


def test_cli_errors_are_one_line(tmp_path, capsys):
    res = str(tmp_path / "res")
    code, _, err = run_cli(capsys, "train", "videofusio", "--results", res)
    assert code == 2 and "did you mean 'videofusion'" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", "toy-test", "--steps", "0", "--results", res, "--frames", "2", "--size", "8")
    assert code == 2 and "--steps" in err
    code, _, err = run_cli(capsys, "train", "toy-test", "--lam", "0.5", "--results", res, "--frames", "2", "--size", "8")
    assert code == 2 and "--lam does not apply to generator" in err
    code, _, err = run_cli(capsys, "sample", "nope", "--num", "2", "--results", res)
    assert code == 2 and "unknown run 'nope'" in err


def test_config_file_precedence(tmp_path, capsys):
    res = str(tmp_path / "res")
    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  steps: 2\n  batch_size: 2\n  lr: 0.005\n  seed: 11\n"
                    "generator:\n  width: 6\ndataset:\n  frames: 2\n  size: 8\n")
    code, out, err = run_cli(capsys, "train", "toy-test", "--config", str(conf), "--lr", "0.002", "--results", res,
                             "--name", "c", "--no-progress", "--device", "cpu")
    assert code == 0, err
    cfg = json.loads((Path(out.splitlines()[-1]) / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.002 and cfg["train"]["seed"] == 11 and cfg["train"]["steps"] == 2
    assert cfg["generator_config"]["width"] == 6 and cfg["dataset"]["frames"] == 2
    conf.write_text("trian:\n  steps: 2\n")
    code, _, err = run_cli(capsys, "train", "toy-test", "--config", str(conf), "--results", res)
    assert code == 2 and "trian" in err


@pytest.mark.skipif(not _have_videofusion_and_shapes(), reason="VideoFusion or the shapes dataset not importable yet")
def test_videofusion_tiny_pretrain_train_sample(tmp_path, capsys):
    res = str(tmp_path / "res")
    small = ["--dataset", "shapes", "--preset", "tiny", "--frames", "4", "--size", "8", "--batch-size", "2",
             "--results", res, "--no-progress", "--device", "cpu"]
    # a reusable pretrained base ...
    code, out, err = run_cli(capsys, "pretrain", "base", *small, "--steps", "2", "--name", "b", "--precision", "bf16")
    assert code == 0, err
    artefact = Path(out.splitlines()[-1])
    assert artefact.name == "base-pretrain.pt"
    base = torch.load(artefact, weights_only=True)
    assert base["step"] == 2 and base["format"] == "vfbench-base-v1"
    assert base["train"]["precision"] == "bf16"  # --precision reaches the pretraining and is recorded
    # ... loaded into a joint run with --base-init (mode fixed: the base must stay as loaded)
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--steps", "2", "--name", "vf",
                             "--base-init", "b", "--mode", "fixed", "--lam", "0.5")
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    ckpt = torch.load(run_dir / "checkpoints/step-0000002.pt", weights_only=True)
    for k, v in base["state_dict"].items():
        assert torch.equal(ckpt["model"][f"base.{k}"], v), k
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["generator_config"]["mode"] == "fixed" and cfg["extra"]["base_init"]["kind"] == "base-pretrain"
    # the same image DPM starts VDM's spatial layers (lr 1e-9: one step leaves them as loaded) ...
    code, out, err = run_cli(capsys, "train", "vdm", *small, "--steps", "1", "--name", "vdm", "--base-init", "b",
                             "--lr", "1e-9")
    assert code == 0, err
    vdm_dir = Path(out.splitlines()[-1])
    model = torch.load(vdm_dir / "checkpoints/step-0000001.pt", weights_only=True)["model"]
    for k, v in base["state_dict"].items():
        assert torch.allclose(model[f"unet.{k}"], v, atol=1e-6), k
    assert json.loads((vdm_dir / "config.json").read_text())["extra"]["base_init"]["kind"] == "base-pretrain"
    # ... but not VIDM's content generator, another architecture, which has its own pretraining
    code, out, err = run_cli(capsys, "train", "vidm", *small, "--steps", "1", "--name", "vidm", "--base-init", "b")
    assert code != 0 and "does not fit this VIDM's content generator" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "pretrain", "base", "--generator", "vidm", *small, "--steps", "1", "--name", "c")
    assert code == 0, err
    content = torch.load(Path(out.splitlines()[-1]), weights_only=True)["state_dict"]
    code, out, err = run_cli(capsys, "train", "vidm", *small, "--steps", "1", "--name", "vidm", "--base-init", "c",
                             "--lr", "1e-9")
    assert code == 0, err
    model = torch.load(Path(out.splitlines()[-1]) / "checkpoints/step-0000001.pt", weights_only=True)["model"]
    assert all(torch.allclose(model[f"content.{k}"], v, atol=1e-6) for k, v in content.items())
    # the weights of an x0-predicting image DPM fit a v-predicting model but mean something else: refused,
    # from the artefact and from a run folder alike, before any run folder is made
    for source in ("b", "vf"):
        code, out, err = run_cli(capsys, "train", "vdm", *small, "--steps", "1", "--name", f"v-{source}",
                                 "--base-init", source, "--prediction", "v")
        assert code != 0 and "was trained with prediction='x0' but this vdm uses prediction='v'" in err, err
        assert "or train with --prediction x0" in err
        assert "Traceback" not in err and not (Path(res) / "runs" / f"v-{source}").exists()
    code, out, err = run_cli(capsys, "pretrain", "base", *small, "--steps", "1", "--name", "bv", "--prediction", "v")
    assert code == 0, err
    assert torch.load(Path(out.splitlines()[-1]), weights_only=True)["generator_config"]["prediction"] == "v"
    code, out, err = run_cli(capsys, "train", "vdm", *small, "--steps", "1", "--name", "vdm-v", "--base-init", "bv",
                             "--prediction", "v")
    assert code == 0, err
    # VideoFusion may keep its residual generator's parameterisation and give the base the image DPM's
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--steps", "1", "--name", "vf-bv",
                             "--base-init", "bv")
    assert code != 0 and "train with --base-prediction v" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--steps", "1", "--name", "vf-bv",
                             "--base-init", "bv", "--base-prediction", "v")
    assert code == 0, err
    assert json.loads((Path(out.splitlines()[-1]) / "config.json").read_text())["generator_config"][
        "base_prediction"] == "v"
    # --residual-init base: the residual generator starts from the same image DPM; without one it is refused
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--steps", "1", "--name", "vf-ri",
                             "--residual-init", "base")
    assert code != 0 and "pass --base-init NAME" in err and "Traceback" not in err
    assert not (Path(res) / "runs" / "vf-ri").exists()
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--steps", "1", "--name", "vf-ri",
                             "--residual-init", "base", "--base-init", "b", "--lr", "1e-9")
    assert code == 0, err
    model = torch.load(Path(out.splitlines()[-1]) / "checkpoints/step-0000001.pt", weights_only=True)["model"]
    base = torch.load(Path(res) / "pretrained" / "b" / "base-pretrain.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(model[f"residual.{k}"], v, atol=1e-6) for k, v in base.items() if k != "in_conv.weight")

    code, out, err = run_cli(capsys, "sample", "vf", "--num", "2", "--batch-size", "2", "--results", res,
                             "--no-progress", "--control", "steps=2", "--tag", "s")
    assert code == 0, err
    from vfbench.sampling import load_samples

    x = load_samples(Path(out.splitlines()[-1]))
    assert x.dtype == np.uint8 and x.shape == (2, 4, 3, 8, 8)


@pytest.mark.skipif(not _have_videofusion_and_shapes(), reason="VideoFusion or the shapes dataset not importable yet")
def test_videofusion_pretrain_base_steps_in_train(tmp_path, capsys):
    res = str(tmp_path / "res")
    code, out, err = run_cli(capsys, "train", "videofusion", "--dataset", "shapes", "--preset", "tiny", "--frames", "4",
                             "--size", "8", "--batch-size", "2", "--results", res, "--no-progress", "--device", "cpu",
                             "--steps", "1", "--pretrain-base-steps", "1", "--name", "p")
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    art = torch.load(run_dir / "base-pretrain.pt", weights_only=True)
    pre = torch.load(run_dir / "pretrain/checkpoints/step-0000001.pt", weights_only=True)
    # pretraining moved only the base; the residual kept its initialisation
    from vfbench.runs import build_generator

    cfg = json.loads((run_dir / "config.json").read_text())
    init = build_generator("videofusion", cfg["generator_config"], seed=cfg["train"]["seed"]).state_dict()
    residual = [k for k in init if k.startswith("residual.")]
    base = [k for k in init if k.startswith("base.") and init[k].is_floating_point()]
    assert residual and all(torch.equal(init[k], pre["model"][k]) for k in residual)
    assert any(not torch.equal(init[k], pre["model"][k]) for k in base)
    for k, v in art["state_dict"].items():
        assert torch.equal(pre["ema"][f"base.{k}"], v)
    assert "loss" in (run_dir / "pretrain/log.csv").read_text()


@pytest.mark.skipif(not _have_videofusion_and_shapes(), reason="VideoFusion or the shapes dataset not importable yet")
def test_recipe_and_its_overrides_are_saved_with_the_run(tmp_path, capsys):
    res = str(tmp_path / "res")
    small = ["--dataset", "shapes", "--preset", "tiny", "--frames", "4", "--size", "8", "--batch-size", "2",
             "--results", res, "--no-progress", "--device", "cpu", "--steps", "1"]
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--name", "p", "--recipe", "paper")
    assert code == 0, err
    cfg = json.loads((Path(out.splitlines()[-1]) / "config.json").read_text())
    g = cfg["generator_config"]
    assert (g["prediction"], g["residual_condition"], g["residual"]["extra_input_channels"]) == ("eps", "none", 0)
    assert (g["residual_temporal"], g["residual"]["video"]) == (False, False)
    assert cfg["extra"]["recipe"] == "paper"
    # flags win over the recipe
    code, out, err = run_cli(capsys, "train", "videofusion", *small, "--name", "q", "--recipe", "paper",
                             "--prediction", "v", "--residual-condition", "keyframe", "--residual-temporal")
    assert code == 0, err
    g = json.loads((Path(out.splitlines()[-1]) / "config.json").read_text())["generator_config"]
    assert (g["prediction"], g["residual_condition"], g["residual"]["extra_input_channels"]) == ("v", "keyframe", 3)
    assert (g["residual_temporal"], g["residual"]["video"]) == (True, True)
    code, _, err = run_cli(capsys, "train", "vdm", *small, "--name", "r2", "--residual-per-frame")
    assert code == 2 and "--residual-per-frame does not apply to generator 'vdm'" in err
    code, _, err = run_cli(capsys, "train", "vdm", *small, "--name", "r", "--residual-condition", "none")
    assert code == 2 and "--residual-condition does not apply to generator 'vdm'" in err
    code, _, err = run_cli(capsys, "train", "vdm", *small, "--name", "s", "--recipe", "papr")
    assert code == 2 and "did you mean 'paper'" in err


@pytest.mark.skipif(not _have_videofusion_and_shapes(), reason="videofusion / shapes not importable")
def test_resume_of_a_run_recorded_with_another_sampler(tmp_path, capsys):
    """A run trained before the default sampler changed (DDIM-50 -> DPM-Solver++(2M) 10 steps) resumes with the
    same command and keeps the sampler it recorded: in config.json, in its checkpoints, and when sampled."""
    res = tmp_path / "res"
    old = tmp_path / "old-defaults.yaml"
    old.write_text("generator:\n  sampler: ddim\n  sampling_steps: 50\n")
    common = ["train", "videofusion", "--preset", "tiny", "--dataset", "shapes", "--frames", "4", "--size", "8",
              "--batch-size", "2", "--results", str(res), "--name", "vf", "--no-progress", "--device", "cpu"]
    code, out, err = run_cli(capsys, *common, "--steps", "2", "--config", str(old))
    assert code == 0, err
    run_dir = Path(out.splitlines()[-1])
    code, out, err = run_cli(capsys, *common, "--steps", "3", "--resume")  # today's defaults
    assert code == 0, err
    cfg = json.loads((run_dir / "config.json").read_text())["generator_config"]
    assert (cfg["sampler"], cfg["sampling_steps"]) == ("ddim", 50)
    from vfbench.runs import load_run

    gen, info = load_run(run_dir)
    assert info["step"] == 3 and (gen.config.sampler, gen.config.sampling_steps) == ("ddim", 50)
    # a new run gets today's default
    code, out, err = run_cli(capsys, *[a if a != "vf" else "vf-new" for a in common], "--steps", "1")
    assert code == 0, err
    cfg = json.loads((Path(out.splitlines()[-1]) / "config.json").read_text())["generator_config"]
    assert (cfg["sampler"], cfg["sampling_steps"]) == ("dpmpp_2m", 10)


def test_image_dpm_options_on_generators_without_one_are_one_sentence(tmp_path, capsys):
    res = str(tmp_path / "res")
    small = ["--dataset", "shapes", "--frames", "4", "--size", "8", "--batch-size", "2", "--results", res,
             "--no-progress", "--device", "cpu", "--steps", "1"]
    code, _, err = run_cli(capsys, "train", "toy-test", *small, "--name", "t", "--base-init", "anything")
    assert code == 2 and "--base-init applies to videofusion, vdm and vidm" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", "vdm", *small, "--preset", "tiny", "--name", "v",
                           "--pretrain-base-steps", "1")
    assert code == 2 and "no separate image DPM to pretrain" in err and "Traceback" not in err
    assert not (tmp_path / "res" / "runs" / "v").exists()  # refused before the run folder was made
