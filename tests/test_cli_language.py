"""One CLI language: parser errors as one ``error:`` line (exit 2), defaults in every --help, the same
sampling-control names as the configs, cheap refusals before a dataset scan, decoder noise folded
into the skip warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from helpers_reliability import cli_in_process as run


@pytest.mark.parametrize("argv, expected", [
    (["trian"], "error: unknown command 'trian': did you mean 'train'"),
    (["ablate", "lamda"], "error: unknown command 'lamda': did you mean 'lambda'?"),
    (["train", "vdm", "--size", "abc"], "error: --size must be a whole number, got 'abc' (see vfbench train --help)"),
    (["train", "vdm", "--lr", "fast"], "error: --lr must be a number, got 'fast'"),
    (["train", "vdm", "--stpes", "3"], "error: unknown option --stpes: did you mean --steps"),
    (["sample"], "error: missing argument 'run' (see vfbench sample --help)"),
])
def test_parser_errors_are_one_error_line_with_exit_2(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and "Usage:" not in err and "╭" not in err


def _options(command, path=()):
    for p in command.params:
        yield path, p
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, path + (name,))


def test_every_option_shows_its_default_and_flags_show_no_type():
    import typer.main

    from vfbench.cli import app

    missing = []
    for path, p in _options(typer.main.get_command(app)):
        if getattr(p, "param_type_name", "") != "option" or p.required or "--help" in p.opts:
            continue
        if getattr(p, "is_flag", False) and not p.secondary_opts and not p.default:
            continue  # an on-switch: off unless given
        if (p.default is None or p.show_default is False) and not isinstance(p.show_default, str):
            missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, f"options without a default in --help: {missing}"


def test_help_text_defaults_match_the_trainer(capsys):
    from vfbench.training import TrainConfig

    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    cfg = TrainConfig()
    for flag, value in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size), ("--lr", cfg.lr),
                        ("--ckpt-every", cfg.ckpt_every), ("--ema-decay", cfg.ema_decay)):
        assert f"[default: ({value})]" in text, flag
    assert "<bool>" not in out


def test_evaluate_device_defaults_to_auto_like_sample(capsys):
    for cmd in ("evaluate", "sample"):
        _, out, _ = run(capsys, cmd, "--help")
        assert "[default: auto]" in " ".join(out.split()), cmd


def test_sampling_controls_take_config_names():
    from vfbench.errors import UsageError
    from vfbench.sampling import normalise_controls

    assert normalise_controls({"sampling_steps": 5}) == {"steps": 5}
    assert normalise_controls({"steps": 5, "sampling_steps": 5}) == {"steps": 5}
    with pytest.raises(UsageError, match="same setting"):
        normalise_controls({"steps": 4, "sampling_steps": 5})


def test_unknown_control_is_refused_before_sampling():
    from vfbench.errors import UsageError
    from vfbench.sampling import check_controls

    class Gen:
        def sample(self, n, generator=None, *, steps=None, eta=None, **unknown):
            raise AssertionError("never called")

        def sample_long(self, n, length, generator=None, *, overlap=None, **controls):
            raise AssertionError("never called")

    check_controls(Gen(), {"steps": 3}, long=False)
    check_controls(Gen(), {"overlap": 2}, long=True)
    with pytest.raises(UsageError, match="did you mean 'steps'"):
        check_controls(Gen(), {"stesp": 3}, long=False)
    with pytest.raises(UsageError, match="overlap"):
        check_controls(Gen(), {"overlap": 2}, long=False)


def test_sampling_steps_option_everywhere_sampling_happens(capsys):
    for argv in (["sample"], ["ablate", "lambda"], ["ablate", "vidm"], ["compare"], ["report"], ["demo"]):
        _, out, _ = run(capsys, *argv, "--help")
        assert "--sampling-steps" in out, argv


def test_existing_run_is_refused_before_the_dataset_is_built(tmp_path, capsys, monkeypatch):
    import vfbench.data

    run_dir = tmp_path / "runs" / "vdm-taichi"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "summary.json").write_text("{}")

    def no_scan(*a, **k):
        raise AssertionError("the dataset was scanned before the refusal")

    monkeypatch.setattr(vfbench.data, "build_dataset", no_scan)
    code, _, err = run(capsys, "train", "vdm", "--dataset", "taichi", "--data-root", str(tmp_path),
                       "--results", str(tmp_path))
    assert code == 2 and "exists already" in err and "--resume" in err



def test_existing_pretrained_base_is_refused_before_the_dataset_is_built(tmp_path, capsys, monkeypatch):
    import vfbench.data

    art_dir = tmp_path / "pretrained" / "videofusion-base-taichi"
    art_dir.mkdir(parents=True)
    (art_dir / "config.json").write_text("{}")
    (art_dir / "base-pretrain.pt").write_bytes(b"x")

    def no_scan(*a, **k):
        raise AssertionError("the dataset was scanned before the refusal")

    monkeypatch.setattr(vfbench.data, "build_dataset", no_scan)
    code, _, err = run(capsys, "pretrain", "base", "--dataset", "taichi", "--data-root", str(tmp_path),
                       "--results", str(tmp_path))
    assert code == 2 and "exists already" in err and "--resume" in err

def test_decoder_noise_is_folded_into_one_warning_with_full_reasons(tmp_path, capfd):
    from test_video_io import coded_frames, write_png_frames

    from vfbench.data import build_dataset
    from vfbench.data.folders import DataWarning

    root = tmp_path / "taichi"
    write_png_frames(root / "train" / "good", coded_frames(20, video=1))
    (root / "train" / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    write_png_frames(root / "train" / "short", coded_frames(3, video=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_dataset("taichi", data_root=str(root), frames=4, size=8, stride=1)
    out, err = capfd.readouterr()
    assert "moov atom" not in err and "video_reader" not in err  # nothing raw on the terminal
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1
    lines = msgs[0].splitlines()
    assert lines[0] == "taichi train: skipped 2 of 3 sources (1 too short, 1 unreadable):"
    broken = next(ln for ln in lines if "broken.mp4" in ln)
    assert "moov atom not found" in broken and "delete it" in broken  # the decoder's words and the whole fix
    assert any(ln.strip().startswith("train/short: too short: 3 frames") for ln in lines)


def test_warnings_print_as_one_warning_line():
    from vfbench.cli import _format_warning

    assert _format_warning(UserWarning("shapes train: skipped 1"), UserWarning, "/x/y.py", 3,
                           "warnings.warn(...)") == "warning: shapes train: skipped 1\n"


def test_score_direction_is_an_arrow_and_explained():
    from vfbench.cli.evaluate import format_table

    text = format_table([{"run": "r", "metric": "fvd", "protocol": "mini", "value": 12.0, "higher_is_better": False},
                         {"run": "r", "metric": "is", "protocol": "mini", "value": 3.0, "higher_is_better": True}])
    assert "12 ↓" in text and "3 ↑" in text and "↓ lower is better" in text
    assert not any(line.rstrip().endswith(" v") or " v " in line for line in text.splitlines())
