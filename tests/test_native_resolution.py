"""Native-resolution scoring (issue 13): a metric scores clips at the size its protocol names, real clips are
prepared at that size, and I3D's own TF1 resize takes both sides straight to 224 -- the reference FVD path.

Known answers: the FVD that ``evaluate`` records for 64-px and 128-px clips equals the reference path computed
here by hand (TF1 legacy bilinear resize of the uint8 frames to 224, ``2x/255 - 1``, the layer-for-layer I3D
port with the reference weights, an independent Fréchet distance). Before this change the 64-px clips went
through an extra antialiased resize to 128 (rounded to uint8) first, which these values would not match.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vfbench.errors import UsageError, WeightsError
from vfbench.metrics.protocols import MetricSpec
from vfbench.registry import DATASETS, METRICS, Entry
from vfbench.results import ResultsStore

FRAMES = 9  # I3D's fewest frames: the cheapest clip the network takes


def _smooth_clips(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, FRAMES, 3, size, size]: coloured blobs drifting over a gradient (content I3D responds to)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, FRAMES, 3, size, size), np.uint8)
    for i in range(n):
        cx, cy, vx, vy = g.uniform(0.2, 0.8, 2).tolist() + g.uniform(-0.04, 0.04, 2).tolist()
        colour = g.uniform(0, 255, 3)
        for t in range(FRAMES):
            blob = np.exp(-((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) / 0.02)
            for c in range(3):
                out[i, t, c] = np.clip(60 * xx + 40 * yy * c + colour[c] * blob, 0, 255).round()
    return out


class ClipsDataset(torch.utils.data.Dataset):
    """TEST DOUBLE: fixed smooth clips at the requested size (the real side)."""

    sizes = []

    def __init__(self, split="train", frames=FRAMES, size=64, data_root=None, stride=None, seed=0):
        ClipsDataset.sizes.append(size)
        self.clips, self.size = _smooth_clips(2, size, 100 + size), size

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return {"video": torch.from_numpy(self.clips[i]), "label": -1, "index": i}

    def describe(self):
        return {"name": "clips", "split": "train", "size": self.size}


def _reference_input(clips: np.ndarray) -> torch.Tensor:
    """The reference FVD preprocessing, written out: TF1 resize of the uint8 frames straight to 224, then
    ``2x/255 - 1``; NCDHW, the I3D input."""
    from vfbench.metrics.tf_resize import resize_bilinear_tf1

    x = torch.from_numpy(np.ascontiguousarray(clips))
    b, t, c, h, w = x.shape
    frames = resize_bilinear_tf1(x.reshape(b * t, c, h, w), (224, 224))
    return (2.0 * frames / 255.0 - 1.0).reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4).contiguous()


def _pool_features(video_ncdhw: torch.Tensor) -> np.ndarray:
    """TEST DOUBLE of the I3D network (its weights do not matter to the resize path): 28x28 block means of
    the network input, averaged over time -> 192 features."""
    x = torch.nn.functional.avg_pool3d(video_ncdhw, (1, 28, 28)).mean(dim=2)
    return x.reshape(x.shape[0], -1).double().numpy()


class PoolNet(torch.nn.Module):
    """Stands in for the (fused, channels-last) I3D network inside the real extractor."""

    def forward(self, x):  # [B, T, 224, 224, 3]
        return torch.from_numpy(_pool_features(x.permute(0, 4, 1, 2, 3))).float()


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s_b @ root)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                 - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, "clips", Entry("clips", obj=ClipsDataset))
    monkeypatch.setattr(ClipsDataset, "sizes", [])
    for size in (64, 128):
        spec = MetricSpec(f"fvd2_{size}", "fvd", "i3d", num_real=2, num_fake=2, frames=FRAMES, resolution=size)
        monkeypatch.setitem(METRICS._entries, spec.name, Entry(spec.name, obj=spec, meta={"kind": "fvd"}))
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    return ResultsStore(tmp_path / "results")


@pytest.fixture(scope="module")
def weights():
    """The reference I3D weights of the user's cache (read before ``env`` points the cache elsewhere)."""
    from vfbench.metrics.i3d_weights import fetch_i3d

    try:
        return fetch_i3d(offline=True, progress=None)
    except WeightsError as exc:
        pytest.skip(f"reference I3D weights unavailable: {exc}")


@pytest.fixture
def pool_i3d(monkeypatch, weights):
    """The real I3D extractor (its preprocessing) with the network replaced by ``PoolNet``."""
    import vfbench.evaluation as E

    build = E.build_extractor

    def with_pool_net(*args, **kwargs):
        ext = build(*args, **kwargs)
        ext.net = PoolNet()
        return ext

    monkeypatch.setattr(E, "build_extractor", with_pool_net)


def _folder(tmp_path, size: int):
    d = tmp_path / f"gen{size}"
    d.mkdir()
    np.save(d / "shard-0.npy", _smooth_clips(2, size, size))
    return d


@pytest.mark.parametrize("size", [64, 128])
def test_fvd_at_native_resolution_equals_the_reference_path(env, pool_i3d, weights, tmp_path, size):
    from vfbench.evaluation import evaluate, fit_clips

    rec = evaluate(_folder(tmp_path, size), [f"fvd2_{size}"], "clips", env, offline=True, progress=False,
                   cache=False, i3d_weights=weights)[0]
    assert ClipsDataset.sizes == [size]  # the real clips were prepared at the metric's size
    assert rec["resolution"] == size and rec["fit"] == "none"
    real, fake = ClipsDataset(size=size).clips, _smooth_clips(2, size, size)
    expected = _frechet(_pool_features(_reference_input(real)), _pool_features(_reference_input(fake)))
    assert rec["value"] == pytest.approx(expected, rel=1e-6)
    if size == 64:  # the old path (antialiased resize to 128, rounded, then 224) is another number
        old = _frechet(*(_pool_features(_reference_input(fit_clips(c, FRAMES, 128).numpy())) for c in (real, fake)))
        assert abs(old / rec["value"] - 1) > 1e-3


@pytest.mark.slow
def test_fvd_64px_with_the_reference_network(env, weights, tmp_path):
    """The same known answer through the real fused I3D against the eager port (about 20 s on 2 cores)."""
    from vfbench.evaluation import evaluate
    from vfbench.metrics.i3d import I3D
    from vfbench.metrics.i3d_weights import load_i3d_weights

    path = weights
    net = I3D()
    net.load_state_dict(load_i3d_weights(path).state)
    net.eval()
    rec = evaluate(_folder(tmp_path, 64), ["fvd2_64"], "clips", env, i3d_weights=path, offline=True,
                   progress=False, cache=False)[0]
    with torch.inference_mode():
        real = net(_reference_input(ClipsDataset(size=64).clips)).double().numpy()
        fake = net(_reference_input(_smooth_clips(2, 64, 64))).double().numpy()
    assert rec["value"] == pytest.approx(_frechet(real, fake), rel=2e-4)


def test_other_sizes_refused_naming_the_metric_that_fits(env, tmp_path):
    from vfbench.evaluation import evaluate

    folder = _folder(tmp_path, 64)
    with pytest.raises(UsageError, match=r"fvd2_128 scores 128x128 clips but .* holds 64x64 clips; score them with"
                                         r" fvd2_64 \(the same metric at 64x64\), or pass --fit"):
        evaluate(folder, ["fvd2_128"], "clips", env, offline=True, progress=False)
    assert ClipsDataset.sizes == []  # refused before anything was built


def test_protocol_metrics_pick_by_size():
    from vfbench.metrics.protocols import get_spec, protocol_metrics

    assert protocol_metrics("paper", "ucf101", 64) == ["fvd2048_16f_64", "kvd2048_16f_64", "is2048_ucf_tganv2_64"]
    assert protocol_metrics("paper", "ucf101", 128) == ["fvd2048_16f", "kvd2048_16f", "is2048_ucf_tganv2"]
    assert protocol_metrics("mini", "taichi", 64) == ["fvd256_16f_64", "kvd256_16f_64"]
    assert protocol_metrics("mini", "shapes", 64) == ["fvd_shapes256", "kvd_shapes256", "is_shapes256"]
    assert [get_spec(n).resolution for n in protocol_metrics("paper", "ucf101", 64)] == [64, 64, 64]
    assert get_spec("fvd_shapes256").resolution is None  # shapes: the clips' own size


def test_ablate_refuses_a_size_no_metric_scores_before_training(tmp_path):
    from vfbench.pipeline import RunPlan, check_sizes, metric_specs

    plan = RunPlan(name="x", generator="vdm", dataset="ucf101", size=32)
    with pytest.raises(UsageError, match=r"fvd256_16f of the mini protocol scores 128x128 clips but this table"
                                         r" trains 32x32 ones; pass --size 128 or --size 64"):
        check_sizes(metric_specs(["fvd256_16f"], None), plan, "mini")
    check_sizes(metric_specs(["fvd256_16f_64"], 16), RunPlan(name="y", generator="vdm", size=64), "mini")
