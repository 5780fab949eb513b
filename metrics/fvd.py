"""Fréchet Video Distance: the score step (numpy/scipy only).

FVD (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video: A New Metric &
Challenges") is the Fréchet distance between two Gaussians fitted to I3D logits::

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

The trace of the matrix square root is computed as tf-gan's ``trace_sqrt_product`` does: with
``R = S1^{1/2}`` (symmetric, by eigendecomposition), ``Tr((S1 S2)^{1/2}) = Tr((R S2 R)^{1/2})``
and ``R S2 R`` is symmetric positive semi-definite, so its square root's trace is the sum of the
square roots of its (clipped non-negative) eigenvalues. This stays real and finite when the
covariances are rank deficient (N < D, e.g. 16 clips of 400-d features), where
``scipy.linalg.sqrtm`` returns complex parts or huge values.

The reference uses the unbiased (N - 1) covariance; StyleGAN-V's port uses the biased one
(``unbiased=False``; about -0.7% at N = 128).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from vfbench.errors import UsageError


def _check_gaussian(mu, sigma, name: str):
    mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    if mu.ndim != 1:
        raise UsageError(f"{name} mean must be a vector, got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(f"{name} covariance must be {mu.shape[0]}x{mu.shape[0]} to match its mean,"
                         f" got shape {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UsageError(f"{name} statistics contain NaN or inf: recompute them from finite features")
    return mu, sigma


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues,
    which only rounding produces, are clipped to zero)."""
    sym = (sigma + sigma.T) * 0.5
    w, v = np.linalg.eigh(sym)
    w = np.sqrt(np.clip(w, 0.0, None))
    return (v * w) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray,
                       sqrt_sigma1: Optional[np.ndarray] = None) -> float:
    """``Tr((S1 S2)^{1/2})`` via the symmetric form ``Tr((R S2 R)^{1/2})``, ``R = S1^{1/2}``
    (tf-gan ``trace_sqrt_product``). ``sqrt_sigma1`` may be passed to reuse R across calls."""
    r = sqrtm_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
    m = r @ sigma2 @ r
    m = (m + m.T) * 0.5
    w = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, *, sqrt_sigma1: Optional[np.ndarray] = None) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Unterthiner et al. 2018, Eq. 1).

    float64 throughout; always real and finite for finite PSD inputs. Tiny negative results
    from rounding (identical inputs) are returned as they are, never clipped silently beyond
    ``-1e-9 * scale``.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise UsageError(f"feature dimensions differ ({mu1.shape[0]} vs {mu2.shape[0]}): both statistics"
                         " must come from the same extractor")
    diff = mu1 - mu2
    tr = trace_sqrt_product(sigma1, sigma2, sqrt_sigma1)
    d = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr)
    scale = float(np.trace(sigma1) + np.trace(sigma2) + diff @ diff)
    if d < 0 and d > -1e-9 * max(scale, 1.0):
        d = 0.0
    return d


def stats_to_fvd(stats_real, stats_fake, *, unbiased: bool = True) -> float:
    """FVD of two ``FeatureStats`` (real first). ``unbiased=False`` is the StyleGAN-V convention."""
    return frechet_distance(stats_real.mean, stats_real.cov(unbiased), stats_fake.mean,
                            stats_fake.cov(unbiased))


def features_to_fvd(real, fake, *, unbiased: bool = True) -> float:
    """FVD of two [N, D] feature arrays (one-shot statistics)."""
    from vfbench.metrics.stats import features_to_stats

    return stats_to_fvd(features_to_stats(real), features_to_stats(fake), unbiased=unbiased)


def bootstrap_fvd(stats_real, fake_features, num_resamples: int, *, seed: int = 0,
                  unbiased: bool = True, level: float = 0.95):
    """Percentile bootstrap of FVD over resampled generated features (real statistics fixed).

    Returns ``(values, ci_low, ci_high)``; ``values`` holds one FVD per resample of N fake
    feature vectors drawn with replacement (``numpy.random.default_rng(seed)``).
    """
    from vfbench.metrics.stats import check_features

    fake = check_features(fake_features, "generated features", dim=stats_real.dim)
    if num_resamples < 1:
        raise UsageError(f"--bootstrap must be a positive number of resamples, got {num_resamples}")
    rng = np.random.default_rng(seed)
    mu1, s1 = stats_real.mean, stats_real.cov(unbiased)
    r1 = sqrtm_psd(s1)
    n = fake.shape[0]
    denom = (n - 1) if unbiased else n
    if denom < 1:
        raise UsageError("the bootstrap needs at least 2 generated feature vectors")
    # A resample is a vector of counts c (how often each row is drawn). Its covariance is
    # sum_i c_i (y_i - m)(y_i - m)^T / denom, and R S2 R = sum_i c_i z_i z_i^T / denom with
    # z_i = (y_i - m) R, so y R is computed once and each resample costs one n x d x d product.
    yr = fake @ r1
    tr_s1 = float(np.trace(s1))
    vals = np.empty(num_resamples, np.float64)
    for i in range(num_resamples):
        c = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        m = c @ fake / n
        z = yr - m @ r1
        rsr = (z * c[:, None]).T @ z / denom
        w = np.linalg.eigvalsh((rsr + rsr.T) * 0.5)
        yc = fake - m
        tr_s2 = float(c @ np.einsum("ij,ij->i", yc, yc)) / denom
        diff = mu1 - m
        vals[i] = float(diff @ diff) + tr_s1 + tr_s2 - 2.0 * float(np.sqrt(np.clip(w, 0.0, None)).sum())
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
    return vals, float(lo), float(hi)
