"""Statistics and scores of FVD / KVD against straightforward numpy/scipy/sklearn references."""

import numpy as np
import pytest
import scipy.linalg

from vfbench.errors import UsageError
from vfbench.metrics.fvd import (bootstrap_fvd, features_to_fvd, frechet_distance, stats_to_fvd,
                                 trace_sqrt_product)
from vfbench.metrics.kvd import kvd_blocks, polynomial_mmd2_unbiased, stats_to_kvd
from vfbench.metrics.stats import FeatureSet, FeatureStats, features_to_stats


def _reference_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(np.imag(covmean)).max() < 1e-8  # well conditioned: sqrtm is trustworthy here
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _feats(rng, n, d, shift=0.0, scale=1.0):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ a * scale + shift


def test_frechet_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    x, y = _feats(rng, 500, 20), _feats(rng, 400, 20, shift=0.3, scale=1.5)
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _reference_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, abs=1e-6, rel=1e-9)
    assert features_to_fvd(x, y) == pytest.approx(ref, abs=1e-6)


def test_fvd_of_identical_sets_is_zero():
    rng = np.random.default_rng(1)
    x = _feats(rng, 300, 32)
    assert abs(features_to_fvd(x, x)) < 1e-8
    assert features_to_fvd(x, x + 1.0) == pytest.approx(32.0, abs=1e-6)  # mean shift only


def test_fvd_finite_and_real_when_n_below_dim():
    rng = np.random.default_rng(2)
    x, y = _feats(rng, 16, 64), _feats(rng, 16, 64, shift=0.2)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    naive = scipy.linalg.sqrtm(s1 @ s2)  # rank-deficient product: not a reliable square root
    assert np.iscomplexobj(naive) or not np.allclose(naive @ naive, s1 @ s2, atol=1e-6)
    v = features_to_fvd(x, y)
    assert isinstance(v, float) and np.isfinite(v) and v > 0
    # the symmetric form gives the exact trace: compare with the eigenvalues of S1 S2 (real, >= 0)
    ev = np.linalg.eigvals(s1 @ s2)
    ref_tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(ref_tr, rel=1e-6, abs=1e-6)


def test_streaming_stats_equal_one_shot():
    rng = np.random.default_rng(3)
    x = _feats(rng, 257, 24, shift=5.0)
    one = features_to_stats(x)
    for chunk in (1, 7, 64, 257):
        for flush in (1, 16, 1024):  # how many rows are buffered before the pairwise merge
            st = FeatureStats()
            st.flush_rows = flush
            for i in range(0, len(x), chunk):
                st.update(x[i:i + chunk])
            assert st.n == 257
            np.testing.assert_allclose(st.mean, one.mean, rtol=0, atol=1e-10)
            np.testing.assert_allclose(st.cov(), one.cov(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(one.cov(), np.cov(x, rowvar=False), atol=1e-10)
    np.testing.assert_allclose(one.cov(unbiased=False), np.cov(x, rowvar=False, bias=True), atol=1e-10)
    a, b = features_to_stats(x[:100]), features_to_stats(x[100:])
    merged = a.merge(b)
    np.testing.assert_allclose(merged.cov(), one.cov(), atol=1e-10)
    back = FeatureStats.from_state(one.state())
    assert back.n == 257 and np.array_equal(back.cov(), one.cov())


def test_biased_covariance_preset_differs():
    rng = np.random.default_rng(4)
    x, y = _feats(rng, 64, 8), _feats(rng, 64, 8, shift=0.1)
    sx, sy = features_to_stats(x), features_to_stats(y)
    unb, bia = stats_to_fvd(sx, sy), stats_to_fvd(sx, sy, unbiased=False)
    ref = _reference_frechet(x.mean(0), np.cov(x, rowvar=False, bias=True), y.mean(0), np.cov(y, rowvar=False, bias=True))
    assert bia == pytest.approx(ref, abs=1e-6) and unb != pytest.approx(bia, abs=1e-9)


def _reference_mmd(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kvd_matches_numpy_and_sklearn():
    from sklearn.metrics.pairwise import polynomial_kernel

    rng = np.random.default_rng(5)
    x, y = _feats(rng, 90, 40), _feats(rng, 70, 40, shift=0.5)
    ours = polynomial_mmd2_unbiased(x, y)
    assert ours == pytest.approx(_reference_mmd(x, y), abs=1e-6)
    g = 1.0 / x.shape[1]
    kxx = polynomial_kernel(x, x, degree=3, gamma=g, coef0=1)
    kyy = polynomial_kernel(y, y, degree=3, gamma=g, coef0=1)
    kxy = polynomial_kernel(x, y, degree=3, gamma=g, coef0=1)
    m, n = len(x), len(y)
    sk = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2 * kxy.mean())
    assert ours == pytest.approx(sk, abs=1e-6)
    assert stats_to_kvd(FeatureSet().update(x), FeatureSet().update(y)) == pytest.approx(ours, abs=1e-12)
    assert ours > 0


def test_kvd_can_be_negative_and_blocks():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 10))
    y = rng.standard_normal((400, 10))
    vals = [polynomial_mmd2_unbiased(x[i::4], y[i::4]) for i in range(4)]
    assert min(vals) < 0 < max(map(abs, vals))  # same distribution: unbiased estimate straddles 0
    mean, std = kvd_blocks(x, y, block_size=100)
    ref = np.mean([polynomial_mmd2_unbiased(a, b) for a, b in zip(np.array_split(x, 4), np.array_split(y, 4))])
    assert mean == pytest.approx(ref, abs=1e-12) and std >= 0


def test_bootstrap_interval_brackets_value():
    rng = np.random.default_rng(7)
    x, y = _feats(rng, 200, 8), _feats(rng, 200, 8, shift=0.5)
    real = features_to_stats(x)
    v = stats_to_fvd(real, features_to_stats(y))
    vals, lo, hi = bootstrap_fvd(real, y, 50, seed=0)
    assert len(vals) == 50 and lo < hi and lo <= np.median(vals) <= hi
    assert lo < v * 1.5 and hi > v * 0.5
    _, lo2, hi2 = bootstrap_fvd(real, y, 50, seed=0)
    assert (lo, hi) == (lo2, hi2)
    # each resample equals the FVD of the explicitly resampled rows (same generator draws)
    rng = np.random.default_rng(0)
    for k in range(3):
        idx = rng.integers(0, len(y), size=len(y))
        assert vals[k] == pytest.approx(stats_to_fvd(real, features_to_stats(y[idx])), rel=1e-9, abs=1e-9)
    vals_b, _, _ = bootstrap_fvd(real, y, 3, seed=0, unbiased=False)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), size=len(y))
    assert vals_b[0] == pytest.approx(stats_to_fvd(real, features_to_stats(y[idx]), unbiased=False), rel=1e-9)


@pytest.mark.parametrize("bad, match", [
    (np.ones((1, 4)), "at least 2"),
])
def test_single_sample_covariance_is_an_error(bad, match):
    with pytest.raises(UsageError, match=match):
        features_to_stats(bad).cov()
    with pytest.raises(UsageError, match="at least 2"):
        polynomial_mmd2_unbiased(bad, np.ones((5, 4)))


def test_nonfinite_features_are_an_error():
    x = np.zeros((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(UsageError, match="NaN or inf in 1 of 5 rows"):
        FeatureStats().update(x)
    x[2, 1] = np.inf
    with pytest.raises(UsageError, match="NaN or inf"):
        polynomial_mmd2_unbiased(x, np.zeros((5, 3)))
    with pytest.raises(UsageError, match="NaN or inf"):
        frechet_distance(np.zeros(2), np.array([[np.nan, 0], [0, 1]]), np.zeros(2), np.eye(2))


def test_mismatched_dims_are_an_error():
    rng = np.random.default_rng(8)
    with pytest.raises(UsageError, match="same extractor"):
        features_to_fvd(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    with pytest.raises(UsageError, match="dimension 5 but 4"):
        polynomial_mmd2_unbiased(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    st = features_to_stats(rng.standard_normal((10, 4)))
    with pytest.raises(UsageError, match="dimension 6 but 4"):
        st.update(rng.standard_normal((3, 6)))
    with pytest.raises(UsageError, match="2-D"):
        FeatureStats().update(np.zeros((2, 3, 4)))


def test_clip_layout_errors_via_check_clips():
    import torch

    from vfbench.clips import check_clips

    with pytest.raises(UsageError, match="must be uint8"):
        check_clips(torch.rand(2, 16, 3, 8, 8))
    with pytest.raises(UsageError, match="channels-last"):
        check_clips(torch.zeros(2, 16, 8, 8, 3, dtype=torch.uint8))
