"""``vfbench probe`` (issue 13): the corruptions, the temporal-sensitivity and sample-count probes (known answers
with test-double extractors whose blindness is known), the records and the report section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vfbench import probe as P


def _clips(n=6, t=8, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, t, 3, size, size), dtype=np.uint8)


class FrameMeanExtractor:
    """TEST DOUBLE, blind to frame order: every frame pooled to 2x2 per channel, averaged over time (12 features)."""

    name = "frame-mean"

    def extract(self, clips):
        x = np.asarray(clips, np.float64)
        pooled = x.reshape(*x.shape[:3], 2, x.shape[3] // 2, 2, x.shape[4] // 2).mean(axis=(4, 6))
        return {"features": pooled.mean(axis=1).reshape(len(x), -1)}

    def describe(self):
        return {"name": self.name}


class FrameDiffExtractor(FrameMeanExtractor):
    """TEST DOUBLE that sees order: the mean of signed frame-to-frame differences, pooled."""

    name = "frame-diff"

    def extract(self, clips):
        x = np.asarray(clips, np.float64)
        d = np.diff(x, axis=1)
        pooled = d.reshape(*d.shape[:3], 2, d.shape[3] // 2, 2, d.shape[4] // 2).mean(axis=(4, 6))
        return {"features": pooled.mean(axis=1).reshape(len(x), -1)}


def test_corruptions():
    base = np.random.default_rng(0).integers(80, 170, size=(6, 1, 3, 12, 12))
    x = (base + 3 * np.arange(8).reshape(1, 8, 1, 1, 1)).astype(np.uint8)  # brightening clips: no clipping
    s = P.shuffle_frames(x, seed=1)
    assert (np.sort(s.reshape(6, 8, -1).sum(-1), 1) == np.sort(x.reshape(6, 8, -1).sum(-1), 1)).all()
    assert all((s[i] != x[i]).any() for i in range(6))  # every clip's order changed
    assert (P.reverse_frames(x)[:, 0] == x[:, -1]).all()
    f = P.freeze_frames(x)
    assert (f == x[:, :1]).all()
    out = P.corruptions(x, seed=1)
    target = P.pixel_mse(x, out["shuffle"][0])
    assert P.pixel_mse(x, out["noise"][0]) == pytest.approx(target, rel=0.1)
    assert out["noise"][1]["sigma"] == pytest.approx(np.sqrt(target))
    assert out["blur"][1]["sigma"] in P.BLUR_SIGMAS
    const = np.full((1, 2, 3, 8, 8), 77, np.uint8)
    assert (P.gaussian_blur(const, 1.5) == 77).all()  # a blur keeps a flat image


def test_temporal_probe_known_answers():
    x, other = _clips(24, seed=0), _clips(24, seed=5)  # more clips than the 12 features: full-rank covariances
    blind = {r["transform"]: r["value"] for r in P.temporal_sensitivity(FrameMeanExtractor(), x, other)}
    # an order-blind metric: shuffling or reversing the frames changes nothing at all
    tol = 1e-9 * blind["floor"]  # rounding of the time average taken in another order
    assert abs(blind["shuffle"]) < tol and abs(blind["reverse"]) < tol
    assert blind["noise"] > 0 and blind["freeze"] > 0 and blind["floor"] > 0
    seeing = {r["transform"]: r["value"] for r in P.temporal_sensitivity(FrameDiffExtractor(), x, other)}
    assert seeing["shuffle"] > 0 and seeing["reverse"] > 0


def test_inverse_n_fit_and_count_bias():
    a, b = P.fit_inverse_n([128, 256, 512], [10 + 1280 / 128, 10 + 1280 / 256, 10 + 1280 / 512])
    assert (a, b) == (pytest.approx(10.0), pytest.approx(1280.0))
    assert P.count_sizes(512) == [128, 256, 512] and P.count_sizes(300) == [128, 256, 300]
    # two samples of one Gaussian: the estimator's bias shrinks like 1/N, FVD_inf is near 0
    g = np.random.default_rng(0)
    x, y = g.standard_normal((1024, 8)), g.standard_normal((1024, 8))
    out = P.sample_count_bias(x, y, [64, 128, 256, 512, 1024], seed=0, repeats=3)
    assert out["fvd"][0] > out["fvd"][-1] > 0 and abs(out["fvd_inf"]) < 0.25 * out["fvd"][0]
    assert out["slope"] > 0


def test_cli_probe_temporal_records_and_report(tmp_path, capsys, monkeypatch):
    from vfbench.cli import main

    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "res"
    with pytest.raises(SystemExit) as ei:
        main(["probe", "temporal", "--dataset", "shapes", "--extractor", "shapes-net", "--num", "4", "--frames", "4",
              "--size", "16", "--results", str(res)])
    out = capsys.readouterr().out
    assert ei.value.code == 0 and "| shapes-net | shuffle |" in out and "6 record(s)" in out
    recs = [json.loads(p.read_text()) for p in sorted((res / "records").glob("*.json"))]
    assert {r["metric"] for r in recs} == {f"probe_temporal_{t}_shapes-net_shapes" for t in ("floor",) + P.TRANSFORMS}
    assert all(r["protocol"] == "probe" and r["extractor"]["weights_sha256"] for r in recs)
    from vfbench.reports.html import build_report
    from vfbench.results import ResultsStore

    html = build_report(ResultsStore(res))
    assert 'id="diagnostics"' in html and "Temporal sensitivity" in html and "temporal sensitivity bars" in html
