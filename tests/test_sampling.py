"""Run directories and the sampling runner: resumable shards, manifest, preview GIF, load checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vfbench.errors import DataError, UsageError, WeightsError
from vfbench.results import ResultsStore
from vfbench.runs import create_run, load_run
from vfbench.sampling import iter_sample_shards, load_samples, sample_run, write_gif_grid

from test_trainer import ToyClips, ToyConfig, ToyGen, cfg, make_toy


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    store = ResultsStore.open(tmp_path_factory.mktemp("results"))
    tc = cfg(steps=2, ckpt_every=2)
    run = create_run(store, "toy", "toy-test", ToyConfig(), {"name": "toyclips"}, tc)
    from vfbench.training import train

    train(run, make_toy(), ToyClips(), tc, progress=False)
    return store, run


def _count_samples(monkeypatch):
    calls = []
    orig = ToyGen.sample

    def counting(self, n, **kw):
        calls.append(n)
        return orig(self, n, **kw)

    monkeypatch.setattr(ToyGen, "sample", counting)
    return calls


def test_sample_shards_manifest_preview(trained_run):
    _, run = trained_run
    out = sample_run(run, num=7, seed=3, batch_size=3, tag="a", progress=False)
    assert sorted(p.name for p in out.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["num"] == 7 and m["shards"] == 3 and m["shard_size"] == 3
    assert m["generator"] == "toy-test" and m["run"] == "toy" and m["checkpoint_step"] == 2
    x = load_samples(out)
    assert x.dtype == np.uint8 and x.shape == (7, 2, 3, 8, 8)
    with Image.open(out / "preview.gif") as im:
        assert im.n_frames == 2 and im.size[0] > 64
    # same request elsewhere: same bytes; another seed: different bytes
    again = load_samples(sample_run(run, num=7, seed=3, batch_size=3, tag="b", progress=False, preview=False))
    other = load_samples(sample_run(run, num=7, seed=4, batch_size=3, tag="c", progress=False, preview=False))
    assert np.array_equal(x, again) and not np.array_equal(x, other)


def test_sampling_resumes_only_missing_shards(trained_run, monkeypatch):
    _, run = trained_run
    out = sample_run(run, num=8, seed=1, batch_size=2, tag="resume", progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.npy")}
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*.npy")}
    (out / "shard-00002.npy").unlink()
    blob = before["shard-00003.npy"]
    (out / "shard-00003.npy").write_bytes(blob[: len(blob) // 2])  # a torn shard
    calls = _count_samples(monkeypatch)
    sample_run(run, num=8, seed=1, batch_size=2, tag="resume", progress=False)
    assert calls == [2, 2]  # exactly the two bad shards were redrawn
    assert json.loads((out / "manifest.json").read_text())["drawn_now"] == [2, 3]
    for name in ("shard-00000.npy", "shard-00001.npy"):
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stats[name]
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    calls.clear()
    sample_run(run, num=8, seed=1, batch_size=2, tag="resume", progress=False)
    assert calls == []


def test_sampling_refuses_a_different_request_in_the_same_tag(trained_run):
    _, run = trained_run
    sample_run(run, num=2, seed=0, batch_size=2, tag="x", progress=False, preview=False)
    with pytest.raises(UsageError, match="differs in num"):
        sample_run(run, num=4, seed=0, batch_size=2, tag="x", progress=False, preview=False)
    out = sample_run(run, num=4, seed=0, batch_size=2, tag="x", force=True, progress=False, preview=False)
    assert load_samples(out).shape[0] == 4
    with pytest.raises(UsageError, match="--num"):
        sample_run(run, num=0, seed=0, batch_size=2, tag="y")


def test_reader_refuses_incomplete_and_malformed(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((2, 2, 3, 4, 4), np.uint8))
    (d / "manifest.json").write_text(json.dumps({"num": 4, "shards": 2, "complete": False}))
    with pytest.raises(DataError, match="incomplete"):
        load_samples(d)
    assert load_samples(d, allow_incomplete=True).shape == (2, 2, 3, 4, 4)
    (d / "manifest.json").write_text(json.dumps({"num": 4, "shards": 2, "complete": True}))
    with pytest.raises(DataError, match="should hold 2 shards"):
        load_samples(d)
    np.save(d / "shard-00001.npy", np.zeros((2, 2, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match="must be uint8"):
        list(iter_sample_shards(d))
    # a folder of shards without a manifest (another tool's samples) is readable
    (d / "manifest.json").unlink()
    np.save(d / "shard-00001.npy", np.ones((1, 2, 3, 4, 4), np.uint8))
    assert load_samples(d).shape == (3, 2, 3, 4, 4)


def test_write_gif_grid_grayscale_and_layout(tmp_path):
    clips = torch.zeros(5, 3, 1, 4, 4, dtype=torch.uint8)
    clips[1] = 255
    clips[4, 1] = 100  # frames must differ, or the GIF writer merges them
    p = write_gif_grid(clips, tmp_path / "g.gif", fps=4, min_tile=4, pad=1)
    with Image.open(p) as im:
        assert im.n_frames == 3
        assert im.size == (3 * 5 + 1, 2 * 5 + 1)  # 3 columns x 2 rows of 4px tiles, 1px padding
        rgb = np.asarray(im.convert("RGB"))
        assert rgb[1, 1].tolist() == [0, 0, 0] and rgb[1, 6].tolist() == [255, 255, 255]
    with pytest.raises(UsageError):
        write_gif_grid(np.zeros((2, 3, 4, 4), np.uint8), tmp_path / "bad.gif")


def test_load_run_ema_and_raw_and_mismatches(trained_run, tmp_path):
    store, run = trained_run
    gen, info = load_run(run)
    raw, _ = load_run(run, ema=False)
    ckpt = torch.load(run / "checkpoints/step-0000002.pt", weights_only=True)
    assert info["step"] == 2 and info["weights"] == "ema" and not gen.training
    assert torch.equal(gen.state_dict()["body.weight"], ckpt["ema"]["body.weight"])
    assert torch.equal(raw.state_dict()["body.weight"], ckpt["model"]["body.weight"])
    assert not torch.equal(ckpt["ema"]["body.weight"], ckpt["model"]["body.weight"])

    # a checkpoint from another generator
    other = tmp_path / "other.pt"
    torch.save(dict(ckpt, generator="vdm"), other)
    with pytest.raises(WeightsError, match="written by generator 'vdm'"):
        load_run(run, checkpoint=other)
    # a checkpoint of another architecture (same generator name, different widths)
    wide = make_toy(width=6).state_dict()
    arch = tmp_path / "arch.pt"
    torch.save(dict(ckpt, generator_config={}, ema=wide, model=wide), arch)
    with pytest.raises(WeightsError, match="does not fit generator 'toy-test'"):
        load_run(run, checkpoint=arch)
    with pytest.raises(WeightsError, match="does not exist"):
        load_run(run, checkpoint=99)


def test_create_run_refuses_to_clobber(tmp_path):
    store = ResultsStore.open(tmp_path)
    args = ("r", "toy-test", ToyConfig(), {"name": "toyclips"})
    create_run(store, *args, cfg(steps=2))
    create_run(store, *args, cfg(steps=3))  # nothing trained yet (a failed start): the retry starts afresh
    assert json.loads((store.run_dir("r") / "config.json").read_text())["train"]["steps"] == 3
    (store.run_dir("r") / "checkpoints").mkdir()
    (store.run_dir("r") / "checkpoints" / "step-0000001.pt").write_bytes(b"progress")  # from here it is protected
    with pytest.raises(UsageError, match="--resume"):
        create_run(store, *args, cfg(steps=2))
    create_run(store, *args, cfg(steps=4), resume=True)  # more steps: allowed on resume
    assert json.loads((store.run_dir("r") / "config.json").read_text())["train"]["steps"] == 4
    with pytest.raises(UsageError, match="differs in train.seed"):
        create_run(store, *args, cfg(steps=4, seed=99), resume=True)
    with pytest.raises(UsageError, match="generator_config.width"):
        create_run(store, "r", "toy-test", ToyConfig(width=8), {"name": "toyclips"}, cfg(steps=4), resume=True)
    create_run(store, "r", "toy-test", ToyConfig(width=8), {"name": "toyclips"}, cfg(steps=4), force=True)
    assert json.loads((store.run_dir("r") / "config.json").read_text())["generator_config"]["width"] == 8


def test_sampling_precision_autocasts_the_generator_and_is_recorded(trained_run, monkeypatch):
    import vfbench.training as training

    _, run = trained_run
    seen = []
    orig = ToyGen.sample

    def recording(self, n, **kw):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return orig(self, n, **kw)

    monkeypatch.setattr(ToyGen, "sample", recording)
    out = sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, precision="bf16")
    assert out.name.endswith("-bf16") and json.loads((out / "manifest.json").read_text())["precision"] == "bf16"
    assert seen == [(True, torch.bfloat16)]
    # fp32 is the default and leaves the manifest as it always was (no precision key)
    seen.clear()
    out = sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, tag="p32")
    assert seen[0][0] is False and "precision" not in json.loads((out / "manifest.json").read_text())
    # auto: bf16 only on a CPU with native bf16 (AMX-BF16 / AVX512-BF16)
    for native, want in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(training, "cpu_bf16_native", lambda: native)
        seen.clear()
        sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, precision="auto", tag=f"auto{want}")
        assert seen[0][0] is (want == "bf16")
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, precision="fp16", device="cpu")


def test_memory_format_is_applied_and_recorded(trained_run, monkeypatch):
    """``auto`` is channels-last on a CPU: the loaded nets' 4-D weights are NHWC and the manifest says so;
    ``contiguous`` leaves them NCHW; the format is not part of the request, so a set resumes across it."""
    _, run = trained_run
    gen, info = load_run(run, memory_format="auto")
    convs = [p for p in gen.parameters() if p.dim() == 4]
    assert info["memory_format"] == "channels_last"
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    gen, info = load_run(run, memory_format="contiguous")
    assert info["memory_format"] == "contiguous" and all(p.is_contiguous() for p in gen.parameters())
    out = sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, tag="mf")
    assert json.loads((out / "manifest.json").read_text())["memory_format"] == "channels_last"
    out = sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, tag="mf",
                     memory_format="contiguous")
    assert json.loads((out / "manifest.json").read_text())["memory_format"] == "contiguous"
    with pytest.raises(UsageError, match="--memory-format must be one of auto, contiguous, channels_last"):
        sample_run(run, num=2, seed=0, batch_size=2, progress=False, preview=False, memory_format="nhwc")
