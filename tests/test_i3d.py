"""I3D network, TF1 resize and extractor: arithmetic checks, then the known answers of spec/metrics.md
with the real reference weights (obtained through ``fetch_i3d``; skipped if they cannot be had)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfbench.errors import UsageError, WeightsError
from vfbench.metrics.i3d import I3D, MaxPool3dSame, Unit3D, same_padding
from vfbench.metrics.tf_resize import resize_bilinear_tf1


# -- padding, pooling, resize: small exact cases -------------------------------------------------
@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)),   # Conv3d_1a_7x7 spatially: out 112, total 5
    (16, 7, 2, (2, 3)),    # Conv3d_1a_7x7 in time, 16 frames
    (15, 7, 2, (3, 3)),    # 15 frames: out 8, total 6
    (112, 3, 2, (0, 1)),   # MaxPool3d_2a_3x3: the odd pixel goes to the back
    (8, 3, 2, (0, 1)),     # MaxPool3d_4a_3x3 in time
    (4, 2, 2, (0, 0)),     # MaxPool3d_5a_2x2
    (7, 3, 1, (1, 1)),
    (5, 1, 1, (0, 0)),
    (1, 3, 2, (1, 1)),
])
def test_same_padding_matches_tf_formula(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_maxpool_pads_with_minus_infinity():
    x = -torch.arange(1, 1 + 4 * 4, dtype=torch.float32).reshape(1, 1, 1, 4, 4) - 100.0
    out = MaxPool3dSame((1, 3, 3), (1, 2, 2))(x)  # pads (0, 1) in H and W
    # the last window of each row reaches the padding: zero padding would make it 0
    assert out.shape == (1, 1, 1, 2, 2)
    assert out.max() < -100
    expected = torch.tensor([[-101.0, -103.0], [-109.0, -111.0]])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_unit3d_asymmetric_same_padding_equals_explicit_tf_padding():
    g = torch.Generator().manual_seed(0)
    unit = Unit3D(3, 4, (7, 7, 7), (2, 2, 2))
    with torch.no_grad():
        unit.weight.copy_(torch.randn(unit.weight.shape, generator=g) * 0.1)
        unit.beta.copy_(torch.randn(4, generator=g))
        unit.moving_mean.copy_(torch.randn(4, generator=g))
        unit.moving_variance.copy_(torch.rand(4, generator=g) + 0.5)
    x = torch.randn(1, 3, 10, 12, 11, generator=g)
    # TF SAME for (10, 12, 11) with k=7, s=2: totals 5, 5, 6 -> fronts 2, 2, 3
    padded = F.pad(x, (3, 3, 2, 3, 2, 3))
    conv = F.conv3d(padded, unit.weight, stride=2)
    ref = torch.relu((conv - unit.moving_mean.view(1, -1, 1, 1, 1))
                     / torch.sqrt(unit.moving_variance.view(1, -1, 1, 1, 1) + 1e-3) + unit.beta.view(1, -1, 1, 1, 1))
    torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-5)


def test_tf1_resize_upsample_hand_computed():
    img = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    # scale 0.5: sources 0, 0.5, 1, 1.5 -> the last column/row clamps to the edge (no half-pixel shift)
    expected = torch.tensor([[0.0, 5.0, 10.0, 10.0],
                             [10.0, 15.0, 20.0, 20.0],
                             [20.0, 25.0, 30.0, 30.0],
                             [20.0, 25.0, 30.0, 30.0]])
    out = resize_bilinear_tf1(img, (4, 4))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    torch_bilinear = F.interpolate(img[None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    assert not torch.allclose(torch_bilinear, expected)  # torch's half-pixel resize is a different function


def test_tf1_resize_downsample_and_non_integer_scale():
    img = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4)
    # scale 2: samples source pixels 0 and 2 exactly, no averaging (no anti-aliasing)
    torch.testing.assert_close(resize_bilinear_tf1(img, (2, 2)), torch.tensor([[[0.0, 2.0], [8.0, 10.0]]]))
    row = torch.tensor([[0.0, 30.0, 60.0]])
    # 3 -> 2 columns: scale 1.5, sources 0 and 1.5 -> 0 and 45
    torch.testing.assert_close(resize_bilinear_tf1(row, (1, 2)), torch.tensor([[0.0, 45.0]]))


def test_network_refuses_short_clips_floats_only_and_wrong_size():
    net = I3D()
    with pytest.raises(UsageError, match="at least 9 frames"):
        net(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(UsageError, match="float"):
        net(torch.zeros(1, 3, 9, 224, 224, dtype=torch.uint8))
    with pytest.raises(UsageError, match=r"\[B, 3, T, H, W\]"):
        net(torch.zeros(1, 9, 3, 224, 224))


def test_parameter_names_follow_tf_scopes():
    keys = set(I3D().state_dict())
    assert "Conv3d_1a_7x7.weight" in keys and "Conv3d_1a_7x7.beta" in keys
    assert "Mixed_5b.Branch_2.Conv3d_0a_3x3.weight" in keys  # the TF-Hub graph's own name
    assert "Mixed_5c.Branch_2.Conv3d_0b_3x3.weight" in keys
    assert "Logits.Conv3d_0c_1x1.bias" in keys
    assert not any(k.endswith("gamma") for k in keys)  # no BatchNorm scale in the reference
    assert len(keys) == 230  # the checkpoint's tensor count: 57 units x 4 + logits weight and bias


# -- extractor with random weights (no download needed) -----------------------------------------
@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in I3D().state_dict().items():
        if key.endswith("moving_variance"):
            state[key] = torch.ones_like(value)
        elif key.endswith("weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.zeros_like(value)
    path = tmp_path_factory.mktemp("i3d-random") / "random.safetensors"
    save_file(state, str(path))
    return path


def test_extractor_refuses_bad_clips_and_presets(random_weights):
    from vfbench.metrics.i3d_extractor import I3DExtractor

    ext = I3DExtractor(weights=random_weights)
    with pytest.raises(UsageError, match="at least 9"):
        ext.extract(np.zeros((1, 8, 3, 32, 32), np.uint8))
    with pytest.raises(UsageError, match="uint8"):
        ext.extract(np.zeros((1, 16, 3, 32, 32), np.float32))
    with pytest.raises(UsageError, match="channels"):
        ext.extract(np.zeros((1, 16, 32, 32, 3), np.uint8))
    with pytest.raises(UsageError, match="did you mean 'tats'"):
        I3DExtractor(weights=random_weights, preset="tat")
    with pytest.raises(UsageError, match="batch-size"):
        I3DExtractor(weights=random_weights, batch_size=0)


def test_extractor_output_batching_and_describe(random_weights):
    from vfbench.metrics.i3d_extractor import I3DExtractor
    from vfbench.provenance import sha256_file
    from vfbench.registry import EXTRACTORS

    assert EXTRACTORS.get("i3d") is I3DExtractor
    clips = torch.randint(0, 256, (2, 9, 3, 24, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    one = I3DExtractor(weights=random_weights, batch_size=1)
    both = I3DExtractor(weights=random_weights, batch_size=2).extract(clips.numpy())["features"]
    assert both.dtype == np.float64 and both.shape == (2, 400)
    assert np.isfinite(both).all() and not np.allclose(both[0], both[1])
    first = one.extract(clips[:1])["features"]  # alone in its batch: batching must not change it
    np.testing.assert_allclose(first[0], both[0], rtol=1e-4, atol=1e-5)
    d = one.describe()
    assert d["weights_sha256"] == sha256_file(random_weights)
    assert d["preset"] == "reference" and d["bn_eps"] == 1e-3 and d["resize"] == "tf1-legacy-bilinear"
    assert d["weights_reproduce_reference"] is False
    tats = I3DExtractor(weights=random_weights, preset="tats").describe()
    assert tats["bn_eps"] == 1e-5 and tats["resize"] == "torch-bilinear" and "trunc" in tats["quantisation"]
    sgv = I3DExtractor(weights=random_weights, preset="stylegan-v").describe()
    assert sgv["covariance"].startswith("biased") and "round" in sgv["quantisation"]


def test_preprocess_reference_range_and_resize():
    from vfbench.metrics.i3d_extractor import preprocess

    clips = torch.zeros(1, 9, 3, 2, 2, dtype=torch.uint8)
    clips[..., 0, 1] = 255
    x = preprocess(clips)
    assert x.shape == (1, 3, 9, 224, 224) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # TF1 legacy: column 112 samples source 1.0 exactly -> +1; torch's half-pixel resize would blend
    assert x[0, 0, 0, 0, 112] == 1.0 and x[0, 0, 0, 0, 56] == 0.0
    y = preprocess(clips, "torch-bilinear")
    assert not torch.equal(x, y)


# -- known answers with the real weights --------------------------------------------------------
@pytest.fixture(scope="module")
def reference_net():
    from vfbench.metrics.i3d_weights import fetch_i3d, load_i3d_weights

    try:
        path = fetch_i3d(progress=None)
    except WeightsError as exc:
        pytest.skip(f"reference I3D weights unavailable: {exc}")
    weights = load_i3d_weights(path)
    assert weights.reproduces_reference
    net = I3D()
    net.load_state_dict(weights.state)
    return net, path


def _frechet_unbiased(a: np.ndarray, b: np.ndarray, ddof: int = 1) -> float:
    """Small independent Fréchet distance (tf-gan trace_sqrt_product via eigh), float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False, ddof=ddof), np.cov(b, rowvar=False, ddof=ddof)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("frames,expected", [(30, 151.3925), (15, 133.908), (16, 152.902)])
def test_known_answer_constant_videos(reference_net, frames, expected, impl):
    from vfbench.metrics.i3d_extractor import I3DExtractor

    _, path = reference_net
    ext = I3DExtractor(weights=path, impl=impl)
    zeros = np.zeros((1, frames, 3, 64, 64), np.uint8)
    ones = np.full((1, frames, 3, 64, 64), 255, np.uint8)
    # every video of a constant set has the same embedding: both covariances vanish and
    # FVD = ||logits(zeros) - logits(ones)||^2 whatever the set sizes (8 or 16 videos in the spec)
    a, b = ext.extract(zeros)["features"][0], ext.extract(ones)["features"][0]
    fvd = float(((a - b) ** 2).sum())
    assert fvd == pytest.approx(expected, rel=2e-5, abs=2e-3)


def _random_videos(seed: int):
    """Videos of ``np.random.RandomState(seed).rand(128, 16, 224, 224, 3).astype('float32')``, one at a
    time: ``rand`` fills in C order, so consecutive (16, 224, 224, 3) draws are the same values."""
    rs = np.random.RandomState(seed)
    for _ in range(128):
        yield rs.rand(16, 224, 224, 3).astype("float32")


def _net_input(videos) -> torch.Tensor:
    return torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).contiguous()  # [B, 3, T, H, W], in [0, 1]


def _forward(reference_net, impl: str):
    """The network of ``impl`` as a function of NCDHW input (FusedI3D takes NDHWC)."""
    net, _ = reference_net
    if impl == "eager":
        return net
    from vfbench.metrics.i3d_fused import FusedI3D

    fused = FusedI3D(net)
    return lambda x: fused(x.permute(0, 2, 3, 4, 1).contiguous())


@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_known_answer_first_logits(reference_net, impl):
    net = _forward(reference_net, impl)
    video0 = next(_random_videos(1))
    with torch.inference_mode():
        logits = net(_net_input([video0]))[0, :5].double().numpy()
    np.testing.assert_allclose(logits, [2.67541, 2.51825, 0.11293, 1.68125, -1.82258], rtol=1e-4, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_known_answer_random_128_vs_128(reference_net, impl):
    net = _forward(reference_net, impl)
    feats = []
    for seed in (1, 2):
        out, batch = [], []
        for video in _random_videos(seed):
            batch.append(video)
            if len(batch) == 4:
                with torch.inference_mode():
                    out.append(net(_net_input(batch)).double().numpy())
                batch = []
        feats.append(np.concatenate(out))
    assert feats[0].shape == (128, 400)
    assert _frechet_unbiased(feats[0], feats[1]) == pytest.approx(10.1380877, rel=1e-4)
    assert _frechet_unbiased(feats[0], feats[1], ddof=0) == pytest.approx(10.0628, rel=1e-4)
