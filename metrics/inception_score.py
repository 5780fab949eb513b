"""Inception Score of class posteriors (the score step; numpy only).

IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), applied to videos with a C3D
classifier on UCF-101 by Saito et al. (TGAN, 2017; TGANv2, 2020). The posteriors are split
into ``splits`` consecutive parts; each part gets its own marginal p(y); the score is the mean
(and std) over parts. The video protocols use one split per sample set (TGAN: ~10,000 samples;
TGANv2: 10 rounds of 2048, mean +- std over rounds, handled by the evaluation runner's trials).

KL terms use ``0 log 0 = 0`` exactly (no epsilon); TGAN's script adds 1e-7 inside the logs, which
changes the score by far less than its run-to-run spread.
"""

from __future__ import annotations

import numpy as np

from vfbench.errors import UsageError


def check_probs(probs, name: str = "class posteriors") -> np.ndarray:
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise UsageError(f"{name} must be a 2-D array [N, K] with K >= 2 classes, got shape {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.isfinite(p).all():
        raise UsageError(f"{name} contain NaN or inf: the classifier produced invalid values; check the clips")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise UsageError(f"{name} must be probabilities (non-negative rows summing to 1); apply a softmax"
                         " to logits first")
    return p


def _is_of(p: np.ndarray) -> float:
    py = p.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(np.where(py > 0, py, 1.0))), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def inception_score(probs, splits: int = 1):
    """``(mean, std)`` of the Inception Score over ``splits`` consecutive parts of ``probs`` [N, K]."""
    p = check_probs(probs)
    n = p.shape[0]
    if not isinstance(splits, (int, np.integer)) or splits < 1:
        raise UsageError(f"splits must be a positive integer, got {splits!r}")
    if n < splits:
        raise UsageError(f"{n} posteriors cannot be cut into {splits} splits; use more samples or fewer splits")
    scores = [_is_of(p[i * n // splits:(i + 1) * n // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def probs_to_is(probs, splits: int = 1) -> float:
    """The Inception Score's value only (mean over splits)."""
    return inception_score(probs, splits)[0]
