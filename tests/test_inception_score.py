"""Inception Score of class posteriors: known values and bad inputs."""

import numpy as np
import pytest

from vfbench.errors import UsageError
from vfbench.metrics.inception_score import inception_score, probs_to_is


def test_uniform_posteriors_score_one():
    p = np.full((50, 101), 1 / 101)
    assert probs_to_is(p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 7, 101])
def test_one_hot_spread_uniformly_scores_k(k):
    p = np.eye(k)[np.arange(5 * k) % k]
    assert probs_to_is(p) == pytest.approx(k, rel=1e-12)


def test_matches_direct_formula_and_splits():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((60, 10)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p.mean(0)
    ref = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1)))
    assert probs_to_is(p) == pytest.approx(ref, rel=1e-12)
    mean, std = inception_score(p, splits=3)
    parts = [probs_to_is(p[i * 20:(i + 1) * 20]) for i in range(3)]
    assert mean == pytest.approx(np.mean(parts)) and std == pytest.approx(np.std(parts))
    assert 1.0 < probs_to_is(p) < 10.0


def test_bad_posteriors_are_errors():
    with pytest.raises(UsageError, match="softmax"):
        probs_to_is(np.random.default_rng(0).standard_normal((4, 5)))
    bad = np.full((4, 5), 0.2)
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="NaN or inf"):
        probs_to_is(bad)
    with pytest.raises(UsageError, match="2-D"):
        probs_to_is(np.full(5, 0.2))
    with pytest.raises(UsageError, match="splits"):
        inception_score(np.full((3, 5), 0.2), splits=4)
