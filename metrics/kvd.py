"""Kernel Video Distance: the score step (numpy only).

KVD is KID's statistic (Bińkowski et al. 2018, "Demystifying MMD GANs") on I3D logits: the
unbiased estimator of the squared MMD with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``.
The video papers (TATS, DIGAN: ``polynomial_mmd`` on 2048 vs 2048) use **all** samples at once
and report the **raw** value (no x1000), which may be negative. tf-gan's KID averages the same
estimator over blocks of at most 1024 samples; ``block_size`` offers that variant.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from vfbench.errors import UsageError


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x.y / d + coef0)^degree`` for every pair of rows (d = feature dimension)."""
    d = x.shape[1]
    k = x @ y.T
    k /= d
    k += coef0
    if degree == 3:  # (cheaper than the generic power; same value up to rounding)
        out = k * k
        out *= k
        return out
    return k ** degree


def polynomial_mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 (Bińkowski et al. 2018, Eq. 4 / KID) with the cubic polynomial kernel::

        sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 mean k(x_i, y_j)
    """
    from vfbench.metrics.stats import check_features

    x = check_features(x, "real features")
    y = check_features(y, "generated features", dim=x.shape[1])
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise UsageError(f"KVD needs at least 2 feature vectors on each side, got {m} real and {n} generated;"
                         " use more clips")
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kvd_blocks(x, y, block_size: int = 1024):
    """tf-gan's KID variant: split both sets into ``ceil(max(m, n) / block_size)`` blocks of nearly
    equal size, average the unbiased MMD^2 of matching blocks. Returns ``(mean, std over blocks)``."""
    from vfbench.metrics.stats import check_features

    x = check_features(x, "real features")
    y = check_features(y, "generated features", dim=x.shape[1])
    if block_size < 2:
        raise UsageError(f"KVD block size must be at least 2, got {block_size}")
    nb = int(np.ceil(max(x.shape[0], y.shape[0]) / block_size))
    xs, ys = np.array_split(x, nb), np.array_split(y, nb)
    vals = np.array([polynomial_mmd2_unbiased(a, b) for a, b in zip(xs, ys)])
    return float(vals.mean()), float(vals.std())


def stats_to_kvd(real_set, fake_set, *, block_size: Optional[int] = None) -> float:
    """KVD of two ``FeatureSet`` (all samples; or tf-gan blocks when ``block_size`` is given)."""
    if block_size:
        return kvd_blocks(real_set.features, fake_set.features, block_size)[0]
    return polynomial_mmd2_unbiased(real_set.features, fake_set.features)
