"""Streaming float64 statistics of feature sets (the middle step of extractor -> statistic -> score).

``FeatureStats`` keeps the count, mean and centred second moment of a stream of feature batches
(Chan, Golub & LeVeque's pairwise update), so the result does not depend on the batch size and
two partial accumulators (two workers, two shards) merge exactly. It is what FVD needs
(Unterthiner et al. 2018 use mean and covariance of the I3D logits).

``FeatureSet`` keeps every feature vector: KVD (Bińkowski et al. 2018, KID's unbiased MMD^2) and
bootstrap confidence intervals need the samples themselves, not only two moments.

Both are serialisable to a dict of plain numpy arrays (``state()`` / ``from_state()``) that
``np.savez`` writes and ``np.load(..., allow_pickle=False)`` reads back.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from vfbench.errors import UsageError


def check_features(x, name: str = "features", dim: Optional[int] = None) -> np.ndarray:
    """Return ``x`` as a float64 [N, D] array; raise a clear UsageError on a bad shape or non-finite values."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise UsageError(f"{name} must be a 2-D array [N, D] of feature vectors, got shape {x.shape};"
                         " reshape to one row per clip")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise UsageError(f"{name} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if dim is not None and x.shape[1] != dim:
        raise UsageError(f"{name} have dimension {x.shape[1]} but {dim} was expected: both sides of a"
                         " metric must come from the same extractor")
    if x.size and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise UsageError(f"{name} contain NaN or inf in {bad} of {x.shape[0]} rows: the clips or the"
                         " extractor produced invalid values; check the samples (e.g. a diverged generator)")
    return x


class FeatureStats:
    """Streaming count / mean / covariance of feature vectors, in float64.

    ``update`` accepts any batch size; ``merge`` combines two accumulators exactly;
    ``cov(unbiased=True)`` divides by N - 1 (the FVD reference), ``unbiased=False`` by N
    (StyleGAN-V's port).
    """

    kind = "moments"

    def __init__(self, dim: Optional[int] = None):
        self.dim = dim
        self._n = 0
        self._pending, self._pending_rows = [], 0
        self._mean = None if dim is None else np.zeros(dim, np.float64)
        self._m2 = None if dim is None else np.zeros((dim, dim), np.float64)

    #: rows buffered before they are folded into the moments (small batches are merged in bulk)
    flush_rows = 1024

    def update(self, features) -> "FeatureStats":
        x = check_features(features, dim=self.dim)
        if x.shape[0] == 0:
            return self
        if self.dim is None:
            self.dim = x.shape[1]
            self._mean = np.zeros(self.dim, np.float64)
            self._m2 = np.zeros((self.dim, self.dim), np.float64)
        self._pending.append(np.array(x, np.float64, copy=True))
        self._pending_rows += x.shape[0]
        if self._pending_rows >= self.flush_rows:
            self._flush()
        return self

    @property
    def n(self) -> int:
        """Number of feature vectors seen."""
        return self._n + self._pending_rows

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        mb = x.mean(axis=0)
        xc = x - mb
        self._combine(x.shape[0], mb, xc.T @ xc)

    def _combine(self, nb: int, mb: np.ndarray, m2b: np.ndarray) -> None:
        na = self._n
        n = na + nb
        delta = mb - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + np.outer(delta, delta) * (na * nb / n)
        self._n = n

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another accumulator's samples to this one (exact; order-independent up to rounding)."""
        other._flush()
        self._flush()
        if other._n == 0:
            return self
        if self.dim is None:
            self.dim = other.dim
            self._mean = np.zeros(self.dim, np.float64)
            self._m2 = np.zeros((self.dim, self.dim), np.float64)
        if other.dim != self.dim:
            raise UsageError(f"cannot merge statistics of dimension {other.dim} into dimension {self.dim}:"
                             " both must come from the same extractor")
        self._combine(other._n, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        self._require(1)
        return self._mean.copy()

    def cov(self, unbiased: bool = True) -> np.ndarray:
        """Covariance; N - 1 in the denominator by default (needs N >= 2)."""
        self._require(2 if unbiased else 1)
        c = self._m2 / (self._n - 1 if unbiased else self._n)
        return (c + c.T) * 0.5

    def _require(self, k: int) -> None:
        self._flush()
        if self.n < k:
            raise UsageError(f"feature statistics hold {self.n} sample(s) but at least {k} are needed"
                             " (a covariance is undefined for fewer than 2); use more clips")

    def state(self) -> Dict[str, np.ndarray]:
        self._flush()
        if self.dim is None:
            raise UsageError("cannot save empty feature statistics; update them with features first")
        return {"kind": np.array(self.kind), "n": np.array(self._n, np.int64),
                "mean": self._mean.copy(), "m2": self._m2.copy()}

    @classmethod
    def from_state(cls, state) -> "FeatureStats":
        kind = str(np.asarray(state["kind"])) if "kind" in state else cls.kind
        if kind != cls.kind:
            raise UsageError(f"statistics of kind {kind!r} cannot be read as {cls.kind!r}")
        mean = np.asarray(state["mean"], np.float64)
        m2 = np.asarray(state["m2"], np.float64)
        if mean.ndim != 1 or m2.shape != (mean.shape[0], mean.shape[0]):
            raise UsageError(f"statistics state is malformed: mean {mean.shape}, m2 {m2.shape}")
        s = cls(mean.shape[0])
        s._n = int(np.asarray(state["n"]))
        s._mean, s._m2 = mean.copy(), m2.copy()
        return s


class FeatureSet:
    """Keeps every feature vector (float64) for statistics that need samples: KVD, bootstrap."""

    kind = "samples"

    def __init__(self, dim: Optional[int] = None):
        self.dim = dim
        self._chunks = []
        self.n = 0

    def update(self, features) -> "FeatureSet":
        x = check_features(features, dim=self.dim)
        if x.shape[0] == 0:
            return self
        self.dim = x.shape[1]
        self._chunks.append(np.array(x, np.float64, copy=True))
        self.n += x.shape[0]
        return self

    def merge(self, other: "FeatureSet") -> "FeatureSet":
        if other.n:
            self.update(other.features)
        return self

    @property
    def features(self) -> np.ndarray:
        if not self._chunks:
            raise UsageError("the feature set is empty; update it with features first")
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks, axis=0)]
        return self._chunks[0]

    def to_stats(self) -> FeatureStats:
        return FeatureStats(self.dim).update(self.features)

    def state(self) -> Dict[str, np.ndarray]:
        return {"kind": np.array(self.kind), "features": self.features.copy()}

    @classmethod
    def from_state(cls, state) -> "FeatureSet":
        kind = str(np.asarray(state["kind"])) if "kind" in state else cls.kind
        if kind != cls.kind:
            raise UsageError(f"statistics of kind {kind!r} cannot be read as {cls.kind!r}")
        return cls().update(np.asarray(state["features"]))


def features_to_stats(features) -> FeatureStats:
    """One-shot ``FeatureStats`` of an [N, D] array."""
    return FeatureStats().update(features)


def stats_from_state(state):
    """``FeatureStats`` or ``FeatureSet`` from a saved state, by its ``kind``."""
    kind = str(np.asarray(state["kind"]))
    for cls in (FeatureStats, FeatureSet):
        if cls.kind == kind:
            return cls.from_state(state)
    raise UsageError(f"unknown statistics kind {kind!r} in a saved state; delete the cache file and rerun")
