"""C3D for the video IS: loading files in TGAN's chainer layout (random weights), protocols, errors."""

import numpy as np
import pytest
import torch

from vfbench.errors import UsageError, WeightsError
from vfbench.metrics.c3d import (CONV_LAYERS, FC_IN, C3DExtractor, build_c3d, load_chainer_c3d,
                                 mean_for_preset, preprocess)

FC = 64  # hidden width of fc6/fc7 in the test file (the real file has 4096; read from the file)


def _write_chainer_files(tmp, *, prefix="", fc8_out=101, drop=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for name, cin, cout in CONV_LAYERS:
        arrays[f"{prefix}{name}/W"] = (rng.standard_normal((cout, cin, 3, 3, 3), dtype=np.float32)
                                       * np.float32(np.sqrt(2.0 / (cin * 27))))
        arrays[f"{prefix}{name}/b"] = rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)
    for name, i, o in (("fc6", FC_IN, FC), ("fc7", FC, FC), ("fc8", FC, fc8_out)):
        arrays[f"{prefix}{name}/W"] = rng.standard_normal((o, i), dtype=np.float32) * np.float32(np.sqrt(1.0 / i))
        arrays[f"{prefix}{name}/b"] = np.zeros(o, np.float32)
    if drop:
        arrays.pop(drop)
    w = tmp / "conv3d_deepnetA_ucf.npz"
    np.savez(w, **arrays)
    mean = (rng.uniform(80, 120, size=(1, 3, 16, 128, 171))).astype(np.float32)
    np.savez(tmp / "mean2.npz", mean=mean)
    return w, arrays, mean.reshape(3, 16, 128, 171)


@pytest.fixture(scope="module")
def chainer_files(tmp_path_factory):
    return _write_chainer_files(tmp_path_factory.mktemp("c3d"), prefix="predictor/")


def test_architecture_shapes():
    net = build_c3d(FC, FC)
    assert net.conv1a(torch.zeros(1, 3, 2, 8, 8)).shape[1] == 64
    assert [getattr(net, n).out_channels for n, _, _ in CONV_LAYERS] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert net.fc6.in_features == 8192 == 512 * 1 * 4 * 4 and net.fc8.out_features == 101
    # the full 16 x 112 x 112 forward (pool5 = 512 x 1 x 4 x 4) runs in test_extract_probs_...
    with pytest.raises(UsageError, match="16 x 112 x 112"):
        with torch.no_grad():
            net(torch.zeros(1, 3, 16, 16, 16))


def test_loader_maps_chainer_names_and_layouts(chainer_files):
    path, arrays, _ = chainer_files
    sd = load_chainer_c3d(path)
    assert np.array_equal(sd["conv1a.weight"].numpy(), arrays["predictor/conv1a/W"])  # (out, in, kt, kh, kw)
    assert np.array_equal(sd["fc6.weight"].numpy(), arrays["predictor/fc6/W"])
    assert sd["fc6.weight"].shape == (FC, 8192)
    net = build_c3d(FC, FC)
    net.load_state_dict(sd)  # every parameter present with the right shape


def test_extract_probs_and_batch_independence(chainer_files):
    path, _, _ = chainer_files
    ext = C3DExtractor(weights=path, preset="tganv2", batch_size=2)
    d = ext.describe()
    assert len(d["weights_sha256"]) == 64 and d["preset"] == "tganv2" and "mean_sha256" in d
    rng = np.random.default_rng(1)
    clips = torch.from_numpy(rng.integers(0, 256, size=(2, 16, 3, 64, 64), dtype=np.uint8))
    out = ext.extract(clips)
    assert out["probs"].shape == (2, 101) and out["probs"].dtype == np.float64
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-9)
    ext.batch_size = 1
    one = ext.extract(clips[1:])
    # float32 kernels chosen per batch shape (AVX2 vs AVX-512 builds differ) move logits of size ~100 by a few
    # 1e-6 of their scale: compare at 1e-5 of the largest logit
    np.testing.assert_allclose(one["logits"], out["logits"][1:], rtol=1e-4, atol=1e-5 * np.abs(out["logits"]).max())


def test_preprocessing_arithmetic_bgr_and_mean(chainer_files):
    _, _, mean = chainer_files
    rgb = np.array([10, 100, 200], np.uint8)
    clip = np.broadcast_to(rgb[None, None, :, None, None], (1, 16, 3, 112, 112)).copy()
    m2 = torch.from_numpy(mean_for_preset(mean, "tganv2"))
    x = preprocess(torch.from_numpy(clip), m2, "tganv2")
    assert x.shape == (1, 3, 16, 112, 112)
    bgr = rgb[::-1].astype(np.float64) * 128 / 127.5  # (x + 1) * 128 with x = u / 127.5 - 1
    expect = bgr[:, None, None, None] - mean[:, :, 8:120, 29:141]
    np.testing.assert_allclose(x[0].numpy(), expect, rtol=0, atol=1e-3)
    # TGAN v1: 128x128 frames, mean width-cropped 21:149, then centre crop 8:120 -- the same window
    clip128 = np.broadcast_to(rgb[None, None, :, None, None], (1, 16, 3, 128, 128)).copy()
    m1 = torch.from_numpy(mean_for_preset(mean, "tgan"))
    x1 = preprocess(torch.from_numpy(clip128), m1, "tgan")
    np.testing.assert_allclose(x1[0].numpy(), expect, rtol=0, atol=1e-3)
    # longer clips: the first 16 frames are used
    assert preprocess(torch.zeros(1, 20, 3, 112, 112, dtype=torch.uint8), m2, "tganv2").shape[2] == 16


def test_missing_and_malformed_files_are_clear_errors(tmp_path, chainer_files):
    with pytest.raises(WeightsError, match="--c3d-weights"):
        C3DExtractor(weights=None)
    with pytest.raises(WeightsError, match="does not exist"):
        C3DExtractor(weights=tmp_path / "nope.npz")
    bad, _, _ = _write_chainer_files(tmp_path, drop="conv4b/W")
    with pytest.raises(WeightsError, match="conv4b/W"):
        load_chainer_c3d(bad)
    w, _, _ = chainer_files
    solo = tmp_path / "solo"
    solo.mkdir()
    (solo / "c3d.npz").write_bytes(w.read_bytes())
    with pytest.raises(WeightsError, match="mean2.npz"):
        C3DExtractor(weights=solo / "c3d.npz")
    with pytest.raises(UsageError, match="did you mean"):
        C3DExtractor(weights=w, preset="tganv3")


def test_float_clips_rejected(chainer_files):
    ext = C3DExtractor(weights=chainer_files[0])
    with pytest.raises(UsageError, match="uint8"):
        ext.extract(torch.rand(1, 16, 3, 112, 112))
    with pytest.raises(UsageError, match="at least 16"):
        ext.extract(torch.zeros(1, 8, 3, 112, 112, dtype=torch.uint8))


def test_torchscript_file(tmp_path):
    class Tiny(torch.nn.Module):
        def forward(self, x):
            pooled = x.float().mean(dim=(2, 3, 4))  # [B, 3]
            logits = pooled @ torch.linspace(-1, 1, 303).reshape(3, 101) / 50
            return torch.softmax(logits, dim=1)

    path = tmp_path / "c3d_ucf101.pt"
    torch.jit.script(Tiny()).save(str(path))
    ext = C3DExtractor(weights=path)
    assert ext.describe()["format"] == "torchscript"
    out = ext.extract(torch.full((2, 16, 3, 32, 32), 7, dtype=torch.uint8))
    assert out["probs"].shape == (2, 101)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)


def test_registered_as_extractor():
    from vfbench.registry import EXTRACTORS

    assert EXTRACTORS.get("c3d-ucf101") is C3DExtractor
