"""Bad input battery, through the CLI: one clear ``error:`` line naming the file/option and the fix,
exit code 2 (usage) or 1 (failure), no traceback, never the last-resort "unexpected" message, and
nothing previously saved lost.

Most cases call ``vfbench.cli.main`` in this process (the same code path as the console script,
cheap); a few run the real console script in a subprocess to check stderr end to end. The
read-only results directory uses a file in place of a folder (root ignores chmod) and, where
this machine allows it, a read-only bind mount in a private mount namespace (``unshare -m``);
the full disk uses a tiny tmpfs where ``mount`` is allowed, and an injected ``ENOSPC`` always.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_reliability import (ROOT, TINY, assert_clean_error, child_env, install_faults, make_samples_run,
                                 register_test_metrics, tree_digest, try_mount_tmpfs, umount, vfbench)
from vfbench.cli import main

EVAL = ["--dataset", "reltiny", "--metrics", "fvd_rel,is_rel", "--batch-size", "4", "--fit"]  # clips of any size


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    code = ei.value.code if isinstance(ei.value.code, int) else (0 if ei.value.code is None else 1)
    return code, out.out, out.err


def check(capsys, expected_code, argv, *needles):
    code, _out, err = cli(capsys, *argv)
    return assert_clean_error(err, code, expected_code, *needles)


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def metrics_env(tmp_path, monkeypatch):
    register_test_metrics(monkeypatch)
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny vdm run trained for 2 steps (in this process, one torch thread)."""
    import torch

    res = tmp_path_factory.mktemp("bad") / "res"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as ei:
            main(["train", "vdm", "--dataset", "shapes", *TINY, "--steps", "2", "--ckpt-every", "1",
                  "--results", str(res), "--name", "v"])
    finally:
        torch.set_num_threads(n)
    assert ei.value.code == 0
    return res


# -- videos and frames -------------------------------------------------------------------------------
def write_video(path: Path, frames: np.ndarray) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if len(frames) == 0:  # a container header with a video stream and no frame at all
            container.start_encoding()
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        container.mux(stream.encode())
    return path


def rand_frames(n, h=32, w=32, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def write_pngs(folder: Path, frames: np.ndarray, mode=None) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        img = Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f)
        (img.convert(mode) if mode else img).save(folder / f"f{i}.png")
    return folder


@pytest.mark.parametrize("kind", ["random-bytes", "truncated", "empty", "zero-frames", "too-short"])
def test_bad_video_files_as_samples(capsys, metrics_env, kind):
    d = metrics_env / "vids"
    d.mkdir()
    good = write_video(metrics_env / "good.mp4", rand_frames(10, 32, 32))
    for i in range(8):
        p = d / f"v{i}.mp4"
        if i < 7:
            shutil.copy(good, p)
        elif kind == "random-bytes":
            p.write_bytes(np.random.default_rng(1).bytes(5000))
        elif kind == "truncated":
            p.write_bytes(good.read_bytes()[:700])
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "zero-frames":
            write_video(p, rand_frames(0, 32, 32))
        else:
            write_video(p, rand_frames(2, 32, 32))
    needle = "v7.mp4"
    msg = check(capsys, 1, ["evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res"], needle)
    assert any(w in msg for w in ("corrupt", "zero frames", "frames but", "truncated", "cannot be"))
    assert not (metrics_env / "res" / "records").exists() or not list((metrics_env / "res" / "records").iterdir())


@pytest.mark.parametrize("variant", ["grayscale", "rgba", "odd-size", "palette"])
def test_unusual_frames_are_read_as_rgb_clips(capsys, metrics_env, variant):
    d = metrics_env / "frames"
    for i in range(8):
        if variant == "odd-size":
            fr = rand_frames(5, 7, 13, seed=i)
            write_pngs(d / f"c{i}", fr)
        else:
            mode = {"grayscale": "L", "rgba": "RGBA", "palette": "P"}[variant]
            write_pngs(d / f"c{i}", rand_frames(5, 9, 9, seed=i), mode)
    code, out, err = cli(capsys, "evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res")
    assert code == 0, err
    recs = [json.loads(p.read_text()) for p in (metrics_env / "res" / "records").glob("*.json")]
    assert len(recs) == 2 and all(np.isfinite(r["value"]) for r in recs)


def test_mixed_frame_sizes_in_one_video_folder(capsys, metrics_env):
    d = metrics_env / "frames"
    for i in range(8):
        write_pngs(d / f"c{i}", rand_frames(5, 9, 9, seed=i))
    from PIL import Image

    Image.fromarray(rand_frames(1, 11, 9)[0]).save(d / "c3" / "f1.png")
    check(capsys, 1, ["evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res"], "c3", "mixes frame sizes")


# -- sample shards -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,needle", [
    ("float-nan", "float32"), ("float-inf", "float64"), ("int-out-of-range", "int64"), ("channels-last", "channels-last"),
    ("four-dims", "uint8 [n, T, C, H, W]"), ("object-pickle", "cannot be read"), ("truncated", "cannot be read"),
    ("not-npy", "cannot be read"), ("npz-truncated", "cannot be read"), ("npz-bad-crc", "cannot be read"),
])
def test_bad_sample_shards(capsys, metrics_env, kind, needle):
    d = metrics_env / "s"
    d.mkdir()
    good = np.random.default_rng(0).integers(0, 256, (8, 4, 3, 8, 8), dtype=np.uint8)
    np.save(d / "shard-00000.npy", good)
    bad = d / "shard-00001.npy"
    if kind.startswith("npz"):
        (d / "shard-00000.npy").unlink()
        np.savez(d / "shard-00000.npz", clips=good)
        bad = d / "shard-00001.npz"
        np.savez(bad, clips=good)
        if kind == "npz-bad-crc":  # members are read only as far as the metric needs: damage the one it reads
            bad = d / "shard-00000.npz"
        data = bytearray(bad.read_bytes())
        if kind == "npz-truncated":
            data = data[: len(data) // 2]
        else:  # flip bytes inside the member's data: the listing reads fine, the member does not
            for i in range(200, 260):
                data[i] ^= 0xFF
        bad.write_bytes(bytes(data))
    elif kind == "float-nan":
        x = good.astype(np.float32)
        x[0, 0, 0, 0, 0] = np.nan
        np.save(bad, x)
    elif kind == "float-inf":
        np.save(bad, np.full((2, 4, 3, 8, 8), np.inf))
    elif kind == "int-out-of-range":
        np.save(bad, good.astype(np.int64) * 300 - 7)
    elif kind == "channels-last":
        np.save(bad, good.transpose(0, 1, 3, 4, 2).copy())
    elif kind == "four-dims":
        np.save(bad, good[0])
    elif kind == "object-pickle":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "truncated":
        np.save(bad, good)
        bad.write_bytes(bad.read_bytes()[:1000])
    else:
        bad.write_text("hello")
    check(capsys, 1, ["evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res"], bad.name, needle)


def test_too_few_samples_and_empty_folders(capsys, metrics_env):
    d = metrics_env / "s"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((3, 4, 3, 8, 8), np.uint8))
    check(capsys, 1, ["evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res"], "needs 8 generated clips",
          "holds 3")
    e = metrics_env / "empty"
    e.mkdir()
    check(capsys, 1, ["evaluate", "--samples", e, *EVAL, "--results", metrics_env / "res"], str(e), "no .npy")
    check(capsys, 1, ["evaluate", "--samples", metrics_env / "missing", *EVAL], "does not exist")


def test_clips_shorter_than_the_protocol(capsys, metrics_env):
    d = metrics_env / "s"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((8, 2, 3, 8, 8), np.uint8))  # 2 frames, the metric needs 4
    check(capsys, 1, ["evaluate", "--samples", d, *EVAL, "--results", metrics_env / "res"], "shard-00000.npy",
          "2 frames", "needs 4")


# -- datasets --------------------------------------------------------------------------------------------
def test_empty_and_wrong_layout_dataset_folders(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check(capsys, 1, ["data", "info", "folder", "--data-root", empty], str(empty))
    check(capsys, 1, ["data", "info", "taichi", "--data-root", empty], "expected layout", "train")
    wrong = tmp_path / "ucf"
    (wrong / "videos").mkdir(parents=True)
    (wrong / "videos" / "a.txt").write_text("x")
    check(capsys, 1, ["data", "info", "ucf101", "--data-root", wrong], "expected layout")
    check(capsys, 1, ["data", "info", "sky", "--data-root", tmp_path / "nowhere"], "nowhere")
    check(capsys, 2, ["data", "info", "shapez"], "did you mean 'shapes'")


# -- names and numeric options ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needles", [
    (["train", "vdn"], ["unknown generator 'vdn'", "did you mean 'vdm'"]),
    (["train", "vdm", "--dataset", "shapez"], ["unknown dataset 'shapez'", "shapes"]),
    (["evaluate", "r", "--metrics", "fvd_shapez256"], ["unknown metric 'fvd_shapez256'", "fvd_shapes256"]),
    (["evaluate", "r", "--protocol", "mimi"], ["mini"]),
    (["ls", "generatorz"], ["generators"]),
    (["train", "videofusion", "--lam", "1.5"], ["lam must be in [0, 1]", "1.5"]),
    (["train", "videofusion", "--lam", "-0.1"], ["lam must be in [0, 1]"]),
    (["train", "videofusion", "--lam", "nan"], ["lam must be in [0, 1]"]),
    (["train", "vdm", "--lam", "0.5"], ["--lam", "does not apply to generator 'vdm'"]),
    (["train", "videofusion", "--mode", "stopgrd"], ["stopgrad"]),
    (["train", "vdm", "--steps", "0"], ["--steps"]),
    (["train", "vdm", "--steps", "-3"], ["--steps"]),
    (["train", "vdm", "--batch-size", "0"], ["--batch-size"]),
    (["train", "vdm", "--batch-size", "-1"], ["--batch-size"]),
    (["train", "vdm", "--size", "0"], ["--size"]),
    (["train", "vdm", "--frames", "-4"], ["--frames"]),
    (["train", "vdm", "--lr", "-1"], ["--lr"]),
    (["train", "vdm", "--ema-decay", "2"], ["--ema-decay"]),
    (["train", "vdm", "--precision", "fp8"], ["--precision"]),
    (["train", "vdm", "--device", "tpu"], ["--device"]),
    (["train", "vdm", "--name", "../escape"], ["run name"]),
    (["train", "vdm", "--steps", "abc"], ["--steps"]),
    (["train", "vdm", "--stepz", "3"], ["--stepz"]),
    (["train"], ["generator"]),
    (["train", "vdm", "--resume", "--force"], ["--resume", "--force"]),
    (["evaluate", "r", "--batch-size", "0"], ["--batch-size"]),
    (["evaluate", "r", "--trials", "0"], ["--trials"]),
    (["evaluate"], ["RUN"]),
    (["sample", "nosuchrun", "--num", "4"], ["nosuchrun"]),
])
def test_bad_names_and_values_are_usage_errors(capsys, tmp_path, argv, needles):
    argv = list(argv)
    if argv[0] in ("train", "sample", "evaluate"):
        argv += ["--results", str(tmp_path / "res")]
    if argv[0] == "train":
        for opt, val in (("--frames", "4"), ("--size", "8"), ("--preset", "tiny"), ("--steps", "1")):
            if opt not in argv:
                argv += [opt, val]
    check(capsys, 2, argv, *needles)
    assert not (tmp_path / "res" / "runs").exists() or not any((tmp_path / "res" / "runs").iterdir())


@pytest.mark.parametrize("argv,needles", [
    (["--num", "0"], ["--num"]), (["--num", "-5"], ["--num"]), (["--batch-size", "0"], ["--batch-size"]),
    (["--num", "4", "--seed", "-1"], ["--seed"]), (["--num", "4", "--tag", "../x"], ["--tag"]),
    (["--num", "4", "--control", "nokey"], ["--control"]),
    (["--num", "4", "--control", "sampler=euler"], ["sampler"]),
    (["--num", "4", "--checkpoint", "99"], ["step-0000099.pt", "does not exist"]),
])
def test_bad_sample_options(capsys, trained, argv, needles):
    before = tree_digest(trained)
    argv = ["sample", "v", "--results", trained, "--no-progress", "--device", "cpu", *argv]
    if "--num" not in argv:
        argv += ["--num", "4"]
    code, _out, err = cli(capsys, *argv)
    assert code in (1, 2)
    assert_clean_error(err, code, code, *needles)
    after = tree_digest(trained)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing saved before was touched
    assert not [k for k in after if k not in before and k.endswith(".npy")]


def test_refused_sample_request_leaves_no_folder(capsys, trained):
    before = tree_digest(trained)
    code, _out, err = cli(capsys, "sample", "v", "--results", trained, "--num", "2", "--tag", "refused",
                          "--control", "sampler=euler", "--device", "cpu", "--no-progress")
    assert code == 2, err
    assert not (trained / "runs" / "v" / "samples" / "refused").exists()


# -- config files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,needles", [
    ("train:\n  stepz: 3\n", ["stepz", "did you mean 'steps'"]),
    ("train:\n  steps: abc\n", ["steps", "integer"]),
    ("train:\n  steps: 2.5\n", ["steps", "integer"]),
    ("train:\n  lr: [1, 2]\n", ["lr", "number"]),
    ("train:\n  ema_warmup: maybe\n", ["ema_warmup", "true or false"]),
    ("trian:\n  steps: 3\n", ["trian"]),
    ("- 1\n- 2\n", ["mapping"]),
    ("train: [1, 2]\n", ["train", "mapping"]),
    ("train: {steps: 3\n", ["could not be parsed"]),
    ("generator:\n  widht: 3\n", ["widht"]),
    ("dataset:\n  nmae: shapes\n", ["nmae"]),
])
def test_bad_config_files(capsys, tmp_path, text, needles):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    check(capsys, 2, ["train", "vdm", "--config", cfg, *TINY, "--results", tmp_path / "res"], *needles)
    assert not (tmp_path / "res").exists()


def test_missing_config_file(capsys, tmp_path):
    check(capsys, 2, ["train", "vdm", "--config", tmp_path / "nope.yaml", "--results", tmp_path / "res"], "nope.yaml")


# -- weights and checkpoints -----------------------------------------------------------------------------
def _i3d_samples(tmp: Path) -> Path:
    d = tmp / "s256"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((256, 16, 3, 8, 8), np.uint8))
    return d


@pytest.mark.parametrize("kind", ["missing", "truncated", "wrong-architecture", "random-bytes", "pickle-code"])
def test_bad_i3d_weights_files(capsys, metrics_env, kind):
    import torch

    w = metrics_env / "i3d.pt"
    if kind == "truncated":
        torch.save({"conv.weight": torch.zeros(64, 3, 7, 7, 7)}, w)
        w.write_bytes(w.read_bytes()[:5000])
    elif kind == "wrong-architecture":
        torch.save({"conv.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(2)}, w)
    elif kind == "random-bytes":
        w.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle-code":
        w.write_bytes(_evil_pickle(metrics_env / "PWNED"))
    msg = check(capsys, 1, ["evaluate", "--samples", _i3d_samples(metrics_env), "--dataset", "reltiny", "--metrics",
                            "fvd256_16f", "--fit", "--i3d-weights", w, "--offline", "--results", metrics_env / "res"],
                "i3d.pt")
    assert not (metrics_env / "PWNED").exists(), msg


@pytest.mark.parametrize("kind", ["missing", "truncated", "random-bytes", "wrong-architecture", "torchscript-bytes"])
def test_bad_c3d_weights_files(capsys, metrics_env, kind):
    w = metrics_env / ("c3d_ucf101.pt" if kind == "torchscript-bytes" else "conv3d_deepnetA_ucf.npz")
    np.savez(metrics_env / "mean2.npz", mean=np.zeros(3, np.float32))  # read after the weights
    if kind == "wrong-architecture":
        np.savez(w, **{"conv1a/W": np.zeros((3, 3, 3, 3, 3), np.float32), "conv1a/b": np.zeros(3, np.float32)})
    elif kind == "truncated":
        np.savez(w, a=np.zeros(1000, np.float32))
        w.write_bytes(w.read_bytes()[:300])
    elif kind in ("random-bytes", "torchscript-bytes"):
        w.write_bytes(np.random.default_rng(0).bytes(4096))
    d = metrics_env / "s"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((2048, 16, 3, 1, 1), np.uint8))
    check(capsys, 1, ["evaluate", "--samples", d, "--dataset", "reltiny", "--metrics", "is2048_ucf_tganv2",
                      "--trials", "1", "--fit", "--c3d-weights", w, "--results", metrics_env / "res"], w.name)


def test_checkpoint_from_another_generator_or_foreign_file(capsys, trained, tmp_path):
    import torch

    res = tmp_path / "res"
    shutil.copytree(trained, res)
    run = res / "runs" / "v"
    cfg = json.loads((run / "config.json").read_text())
    before = tree_digest(trained)

    # the run says videofusion, its checkpoints were written by vdm
    cfg2 = dict(cfg, generator="videofusion")
    (run / "config.json").write_text(json.dumps(cfg2))
    check(capsys, 1, ["sample", "v", "--num", "2", "--results", res, "--no-progress"], "step-0000002.pt", "'vdm'",
          "videofusion")
    (run / "config.json").write_text(json.dumps(cfg))

    # a checkpoint of another architecture (wider U-Net) under the same generator name
    state = torch.load(run / "checkpoints" / "step-0000002.pt", weights_only=True)
    state["generator_config"] = dict(state["generator_config"], base_channels=999)
    torch.save(state, tmp_path / "other.pt")
    check(capsys, 1, ["sample", "v", "--num", "2", "--results", res, "--checkpoint", tmp_path / "other.pt",
                      "--no-progress"], "other.pt", "architecture")

    # foreign files given as --checkpoint
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    check(capsys, 1, ["sample", "v", "--num", "2", "--results", res, "--checkpoint", tmp_path / "foreign.pt"],
          "foreign.pt", "not a vfbench training checkpoint")
    data = (run / "checkpoints" / "step-0000002.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    check(capsys, 1, ["sample", "v", "--num", "2", "--results", res, "--checkpoint", tmp_path / "torn.pt"],
          "torn.pt", "truncated")
    (tmp_path / "evil.pt").write_bytes(_evil_pickle(tmp_path / "PWNED"))
    code, _out, err = cli(capsys, "sample", "v", "--num", "2", "--results", res, "--checkpoint", tmp_path / "evil.pt")
    assert code == 1 and "evil.pt" in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()

    # every checkpoint of the run torn: resume refuses cleanly (nothing to resume from is not a crash)
    for p in (run / "checkpoints").glob("step-*.pt"):
        p.write_bytes(p.read_bytes()[:1000])
    check(capsys, 1, ["sample", "v", "--num", "2", "--results", res, "--no-progress"], "no complete checkpoint")
    assert tree_digest(trained) == before


def test_crafted_checkpoint_message_is_one_line(capsys, trained, tmp_path):
    (tmp_path / "evil.pt").write_bytes(_evil_pickle(tmp_path / "PWNED"))
    msg = check(capsys, 1, ["sample", "v", "--num", "2", "--results", trained, "--checkpoint", tmp_path / "evil.pt"],
                "evil.pt")
    assert "weights_only=False" not in msg


def test_truncated_run_config_json(capsys, trained, tmp_path):
    res = tmp_path / "res"
    shutil.copytree(trained, res)
    cfg = res / "runs" / "v" / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    check(capsys, 1, ["sample", str(res / "runs" / "v"), "--num", "2", "--results", res], "config.json", "not valid JSON")


def _evil_pickle(sentinel: Path) -> bytes:
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(sentinel)!r}, 'w').write('pwned')",))

    return pickle.dumps({"state_dict": Evil()}, protocol=2)


# -- results directory not writable, disk full --------------------------------------------------------------
def test_results_dir_under_a_file(capsys, metrics_env):
    blocker = metrics_env / "blocker"
    blocker.write_text("I am a file")
    res = blocker / "res"
    run_dir = make_samples_run(metrics_env / "elsewhere", "r")
    msg = check(capsys, 1, ["evaluate", "--samples", run_dir / "samples" / "t", *EVAL, "--results", res], "blocker")
    assert "--results" in msg
    msg = check(capsys, 1, ["train", "vdm", *TINY, "--steps", "1", "--results", res], "blocker", "--results")
    assert blocker.read_text() == "I am a file"


def _can_unshare_ro() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp /tmp"],
                       capture_output=True, timeout=20)
    return r.returncode == 0


def test_results_dir_on_a_read_only_mount(tmp_path):
    if not _can_unshare_ro():
        pytest.skip("no unshare/mount here: the read-only case is covered by test_results_dir_under_a_file")
    res = tmp_path / "res"
    run_dir = make_samples_run(res, "r")
    (res / "records").mkdir()
    (res / "records" / "old.json").write_text('{"metric": "x", "value": 1}')
    before = tree_digest(res)
    helper = str(ROOT / "tests" / "helpers_reliability.py")
    script = (f"mount --bind {res} {res} && mount -o remount,ro,bind {res} {res} && "
              f"exec {sys.executable} {helper} evaluate r --metrics fvd_rel --results {res} --batch-size 4")
    env = child_env(VFB_TEST_METRICS="1", VFBENCH_CACHE=str(tmp_path / "cache"))
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert_clean_error(r.stderr, r.returncode, 1, "read-only", "--results")
    assert tree_digest(res) == before
    assert run_dir.is_dir()


def test_disk_full_while_saving_a_checkpoint_injected(capsys, trained, tmp_path, monkeypatch, one_thread):
    import vfbench.atomic as atomic

    res = tmp_path / "res"
    shutil.copytree(trained, res)
    before = tree_digest(res / "runs" / "v" / "checkpoints")
    monkeypatch.setattr(atomic, "os", atomic.os)  # restored after the test
    install_faults("enospc:step-0000003.pt:1")
    check(capsys, 1, ["train", "vdm", "--dataset", "shapes", *TINY, "--steps", "3", "--ckpt-every", "1",
                      "--results", res, "--name", "v", "--resume"], "step-0000003.pt", "disk is full")
    after = tree_digest(res / "runs" / "v" / "checkpoints")
    assert after == before  # the older checkpoints and latest.json are intact, no temp file left


def test_disk_full_on_a_real_tiny_filesystem(capsys, trained, tmp_path, one_thread):
    mnt = tmp_path / "small"
    if not try_mount_tmpfs(mnt, "2600k"):
        pytest.skip("cannot mount a tmpfs here; test_disk_full_while_saving_a_checkpoint_injected covers ENOSPC")
    try:
        res = mnt / "res"
        shutil.copytree(trained, res)  # two checkpoints of ~1.1 MB: the third does not fit
        before = tree_digest(res / "runs" / "v" / "checkpoints")
        check(capsys, 1, ["train", "vdm", "--dataset", "shapes", *TINY, "--steps", "4", "--ckpt-every", "1",
                          "--results", res, "--name", "v", "--resume"], "disk is full")
        after = tree_digest(res / "runs" / "v" / "checkpoints")
        for name, data in before.items():
            if name.startswith("step-") and name in after:
                assert after[name] == data
        assert not [n for n in after if n.endswith(".tmp")]
        from vfbench.checkpoint import find_latest

        found = find_latest(res / "runs" / "v" / "checkpoints")
        assert found is not None and found[1]["step"] >= 2
    finally:
        umount(mnt)


def test_disk_full_while_writing_a_record(capsys, metrics_env, monkeypatch):
    import vfbench.atomic as atomic

    res = metrics_env / "res"
    run_dir = make_samples_run(res, "r")
    code, _, err = cli(capsys, "evaluate", "r", "--metrics", "is_rel", "--results", res, "--batch-size", "4")
    assert code == 0, err
    before = tree_digest(res)
    monkeypatch.setattr(atomic, "os", atomic.os)
    install_faults("enospc:/records/:1")
    check(capsys, 1, ["evaluate", "r", "--metrics", "is_rel", "--results", res, "--batch-size", "4"], "records",
          "disk is full")
    assert tree_digest(res) == before
    assert run_dir.is_dir()


def test_corrupt_stats_cache_and_records_are_survived(capsys, metrics_env):
    res = metrics_env / "res"
    make_samples_run(res, "r")
    code, _, err = cli(capsys, "evaluate", "r", "--metrics", "fvd_rel", "--results", res, "--batch-size", "4")
    assert code == 0, err
    rec = json.loads(next((res / "records").glob("*.json")).read_text())
    for p in (metrics_env / "cache" / "stats").glob("*.npz"):
        p.write_bytes(p.read_bytes()[:200])  # a foreign/torn cache entry is recomputed, not trusted
    (res / "records" / "zz-hand-edited.json").write_text("{not json")
    code, _, err = cli(capsys, "evaluate", "r", "--metrics", "fvd_rel", "--results", res, "--batch-size", "4")
    assert code == 0, err
    values = {json.loads(p.read_text())["value"] for p in (res / "records").glob("r-*.json")}
    assert values == {rec["value"]}
    with pytest.warns(UserWarning, match="zz-hand-edited.json"):
        code, out, err = cli(capsys, "evaluate", "--all", "--metrics", "fvd_rel", "--results", res)
    assert code == 0 and "nothing to evaluate" in out


def test_real_console_script_prints_no_traceback(tmp_path):
    """End to end through ``python -m vfbench`` (no in-process shortcuts)."""
    r = vfbench(["evaluate", "--samples", tmp_path / "nope", "--dataset", "shapes", "--results", tmp_path])
    assert_clean_error(r.stderr, r.returncode, 1, "nope")
    r = vfbench(["--debug", "evaluate", "--samples", tmp_path / "nope", "--dataset", "shapes"])
    assert r.returncode == 1 and "Traceback" in r.stderr  # --debug shows it


def test_disk_full_while_writing_a_sample_shard_then_resume(capsys, trained, tmp_path, monkeypatch, one_thread):
    import vfbench.atomic as atomic

    res = tmp_path / "res"
    shutil.copytree(trained, res)
    cmd = ["sample", "v", "--num", "4", "--batch-size", "2", "--control", "steps=2", "--tag", "full-disk",
           "--no-preview", "--no-progress", "--device", "cpu", "--results", res]
    monkeypatch.setattr(atomic, "os", atomic.os)
    install_faults("enospc:shard-00001.npy:1")
    check(capsys, 1, cmd, "shard-00001.npy", "disk is full")
    out = res / "runs" / "v" / "samples" / "full-disk"
    shard0 = (out / "shard-00000.npy").read_bytes()
    assert not (out / "shard-00001.npy").exists() and not list(out.glob(".*.tmp"))
    monkeypatch.undo()  # space freed: the same command finishes the job without redrawing shard 0
    code, _, err = cli(capsys, *cmd)
    assert code == 0, err
    assert (out / "shard-00000.npy").read_bytes() == shard0
    assert json.loads((out / "manifest.json").read_text())["drawn_now"] == [1]


def test_disk_full_while_appending_to_log_csv(capsys, trained, tmp_path, monkeypatch, one_thread):
    """log.csv is appended with a plain open() (not vfbench.atomic): a full disk there must still be
    one clear line (the CLI's OSError handler), and the checkpoints stay intact."""
    import builtins
    import errno

    import vfbench.training as training

    res = tmp_path / "res"
    shutil.copytree(trained, res)
    real_open = builtins.open

    def full_open(file, mode="r", *a, **kw):
        if str(file).endswith("log.csv") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(training, "open", full_open, raising=False)
    before = tree_digest(res / "runs" / "v" / "checkpoints")
    check(capsys, 1, ["train", "vdm", "--dataset", "shapes", *TINY, "--steps", "3", "--ckpt-every", "1",
                      "--log-every", "1", "--results", res, "--name", "v", "--resume"], "log.csv", "disk is full")
    after = tree_digest(res / "runs" / "v" / "checkpoints")
    assert {k: v for k, v in after.items() if k.startswith("step-0000001") or k.startswith("step-0000002")} == \
        {k: v for k, v in before.items() if k.startswith("step-")}
