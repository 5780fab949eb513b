"""Bounded fuzzing (hypothesis, derandomized, few examples, no deadline).

* CLI numeric options (``--steps``, ``--batch-size``, ``--num``, ``--lam``, ``--size``, ``--frames``,
  ``--lr``, ``--trials``, ``--bootstrap``, ``--seed``) given ints (negative, zero, huge), floats, NaN /
  inf spellings and arbitrary text: the CLI answers with exit code 0, 1 or 2, one line, never a
  traceback nor the last-resort "unexpected" message. ``train`` runs through argument parsing,
  config resolution, validation, dataset and generator construction and the run folder; only the
  optimisation loop itself is replaced by a stub (the crash tests train for real). ``evaluate``
  runs for real with a test-double extractor. ``sample`` runs for real against a stub generator
  (valid ``--num`` values are kept small: a request for 10^12 clips is valid and would run).
* Video readers: random bytes, truncated / bit-flipped real videos (mp4, avi, mkv), and frame
  folders of random-size PNG frames in every Pillow mode: a ``DataError`` or a valid uint8 clip,
  nothing else. The video part runs in a child process, so a crash of the native decoder (a
  segfault) fails the test instead of killing the test session.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_reliability import ROOT, child_env, make_samples_run, register_test_metrics
from vfbench.cli import main

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SPECIAL = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "", " ", "0x10", "1_000", "٣",
           "1.0", "2.5", "-0", "+3", "3 ", "1e3", "-", "--", "0", "-1", "9" * 40, "-" + "9" * 40, "1/2", "None",
           "true", "\x00", "１"]
values = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


def call(capsys, argv):
    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    code = ei.value.code if isinstance(ei.value.code, int) else (0 if ei.value.code is None else 1)
    return code, out.out, out.err


def assert_answer(code, err, argv):
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    assert "error: unexpected" not in err, (argv, err)
    if code:
        assert err.strip(), (argv, "an error exit without a message")


@pytest.fixture(scope="module")
def stub_training():
    """The optimisation loop is out of scope here: everything before it runs for real."""
    import vfbench.training as training

    real = training.train
    seen = []

    def fake_train(run_dir, generator, dataset, cfg, **kw):
        seen.append(cfg)
        return {"steps": cfg.steps, "steps_this_call": 0, "steps_per_s": None, "final_loss": None}

    training.train = fake_train
    yield seen
    training.train = real


_names = itertools.count()


def cfg_frames(res) -> int:
    """The frames of the newest run written under ``res`` (the fuzzed option's accepted value)."""
    import json

    newest = max((p for p in (res / "runs").iterdir()), key=lambda p: p.stat().st_mtime_ns)
    return json.loads((newest / "config.json").read_text())["dataset"]["frames"]


@given(option=st.sampled_from(["--steps", "--batch-size", "--size", "--frames", "--lr", "--lam", "--seed",
                               "--ckpt-every"]),
       value=values)
@FUZZ
def test_fuzz_train_numeric_options(capsys, tmp_path_factory, stub_training, option, value):
    res = tmp_path_factory.getbasetemp() / "fuzz-train"
    gen = "videofusion" if option == "--lam" else "vdm"
    argv = ["train", gen, "--preset", "tiny", "--frames", "4", "--size", "8", "--device", "cpu", "--no-progress",
            "--results", res, "--name", f"f{next(_names)}", option, value]
    code, _out, err = call(capsys, argv)
    assert_answer(code, err, argv)
    if code == 0:  # accepted: then the value really was valid
        cfg = stub_training[-1]
        if option == "--steps":
            assert isinstance(cfg.steps, int) and cfg.steps > 0
        if option == "--batch-size":
            assert cfg.batch_size > 0
        if option == "--lr":
            assert cfg.lr > 0 and np.isfinite(cfg.lr)
        if option == "--seed":
            assert cfg.seed >= 0
        if option == "--frames":
            assert cfg_frames(res) >= 2


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run folder whose 'generator' is a stub returning zeros (sample_run's logic runs for real)."""
    import vfbench.runs as runs

    res = tmp_path_factory.mktemp("fuzz-sample")
    run = res / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"generator": "vdm", "generator_config": {}}')

    class Stub(torch.nn.Module):
        def sample(self, n, generator=None, **controls):
            return torch.zeros(n, 2, 3, 4, 4, dtype=torch.uint8)

    real = runs.load_run
    runs.load_run = lambda run_dir, ema=True, checkpoint=None, device="cpu", memory_format="auto": (
        Stub(), {"generator": "vdm", "step": 1, "weights": "ema" if ema else "raw", "run": "r",
                 "memory_format": "contiguous"})
    yield res
    runs.load_run = real


small_or_bad = st.one_of(st.sampled_from([v for v in SPECIAL if v != "9" * 40]), st.integers(-10**30, 6).map(str),
                         st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=4))


@given(option=st.sampled_from(["--num", "--batch-size", "--seed"]), value=small_or_bad)
@FUZZ
def test_fuzz_sample_numeric_options(capsys, fake_run, option, value):
    argv = ["sample", "r", "--results", fake_run, "--no-progress", "--no-preview", "--device", "cpu",
            "--tag", f"t{next(_names)}"]
    argv += [option, value] + (["--num", "3"] if option != "--num" else [])
    code, _out, err = call(capsys, argv)
    assert_answer(code, err, argv)


def test_sample_huge_num_is_a_usage_error(capsys, fake_run):
    argv = ["sample", "r", "--results", fake_run, "--no-progress", "--no-preview", "--device", "cpu",
            "--num", "9" * 40, "--tag", "huge"]
    code, _out, err = call(capsys, argv)
    assert code == 2 and "--num" in err and "unexpected" not in err, err


@pytest.fixture(scope="module")
def eval_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    register_test_metrics(mp)
    base = tmp_path_factory.mktemp("fuzz-eval")
    mp.setenv("VFBENCH_CACHE", str(base / "cache"))
    make_samples_run(base / "res", "r")
    yield base / "res"
    mp.undo()


@given(option=st.sampled_from(["--batch-size", "--trials", "--bootstrap", "--seed"]), value=small_or_bad)
@FUZZ
def test_fuzz_evaluate_numeric_options(capsys, eval_env, option, value):
    argv = ["evaluate", "r", "--metrics", "fvd_rel", "--results", eval_env, option, value]
    code, _out, err = call(capsys, argv)
    assert_answer(code, err, argv)


# -- video readers --------------------------------------------------------------------------------------------
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@given(sizes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=4),
       mode=st.sampled_from(MODES), size=st.integers(1, 24), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_png_frame_folders(tmp_path_factory, sizes, mode, size, seed):
    from PIL import Image

    from vfbench.data.video_io import load_clip, read_frames
    from vfbench.errors import DataError

    folder = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr).convert(mode) if mode not in ("I;16", "I", "F") else \
            Image.fromarray(arr[..., 0].astype(np.uint16) * 257 if mode == "I;16" else arr[..., 0].astype(
                np.int32 if mode == "I" else np.float32) * 3)
        ext = {"F": "tiff", "CMYK": "jpg"}.get(mode, "png")
        img.save(folder / f"frame{i}.{ext}")
    idx = list(range(len(sizes)))
    try:
        frames = read_frames(folder, idx)
    except DataError as exc:
        assert str(folder) in str(exc)
        return
    assert frames.dtype == np.uint8 and frames.shape == (len(sizes), sizes[0][0], sizes[0][1], 3)
    clip = load_clip(folder, idx, size)
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (len(sizes), 3, size, size)


VIDEO_CHILD = r'''
import sys
import numpy as np
from hypothesis import given, settings, strategies as st
from pathlib import Path
from vfbench.data.video_io import count_frames, read_frames
from vfbench.errors import DataError
import av

d = Path(sys.argv[1])
good = {}
rng = np.random.default_rng(0)
for ext, codec, pix in ((".mp4", "mpeg4", "yuv420p"), (".avi", "ffv1", "bgr0"), (".mkv", "libx264", "yuv420p")):
    p = d / f"good{ext}"
    with av.open(str(p), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 20, 32, pix
        for f in rng.integers(0, 256, (10, 32, 20, 3), dtype=np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    good[ext] = p.read_bytes()
stats = {"ok": 0, "DataError": 0}

@given(ext=st.sampled_from(sorted(good)), how=st.sampled_from(["truncate", "random", "flip", "append"]),
       cut=st.floats(0, 1), noise=st.binary(max_size=600), flips=st.lists(st.tuples(st.floats(0, 1),
       st.integers(0, 255)), max_size=20), pick=st.lists(st.integers(0, 40), min_size=1, max_size=4))
@settings(max_examples=int(sys.argv[2]), deadline=None, derandomize=True, database=None)
def fuzz(ext, how, cut, noise, flips, pick):
    data = good[ext]
    if how == "truncate":
        b = data[: int(cut * len(data))]
    elif how == "random":
        b = noise
    elif how == "flip":
        b = bytearray(data)
        for pos, val in flips:
            b[min(int(pos * len(b)), len(b) - 1)] = val
        b = bytes(b)
    else:
        b = data[: int(cut * len(data))] + noise
    p = d / f"fuzz{ext}"
    p.write_bytes(b)
    try:
        n = count_frames(p)
        idx = sorted({i % n for i in pick})
        x = read_frames(p, idx)
    except DataError as exc:
        assert p.name in str(exc), exc
        stats["DataError"] += 1
        return
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[0] == len(idx) and x.shape[-1] == 3, x.shape
    stats["ok"] += 1

fuzz()
print("VIDEO-FUZZ", stats, flush=True)
'''


def test_fuzz_video_files_in_a_child_process(tmp_path):
    r = subprocess.run([sys.executable, "-c", VIDEO_CHILD, str(tmp_path), "60"], cwd=str(ROOT), env=child_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode} (negative: killed by a signal, e.g. a decoder segfault)\n" \
                              f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("VIDEO-FUZZ")]
    assert line, r.stdout
    stats = eval(line[0].split(" ", 1)[1], {})  # noqa: S307 - our own child's dict literal
    assert stats["DataError"] > 0 and stats["ok"] + stats["DataError"] >= 60
