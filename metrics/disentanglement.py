"""Content/motion disentanglement score for VideoFusion's Sec. 4.7 experiment (``shapes`` protocol).

VideoFusion claims that the shared base noise ``b`` carries the content and the residual noise
``r`` the motion (Sec. 3.5, 4.7, Fig. 1/7). We measure it with the built-in extractor's predicted
labels on groups of generated clips:

* **content agreement**: clips sampled with the *same* base noise and different residual noises;
  the fraction of pairs inside a group whose predicted content labels agree;
* **motion agreement**: clips with the *same* residual noise and different base noises; the
  fraction of pairs whose predicted motion labels agree.

Chance levels for a generator whose factors are independent of the noise split are about
``sum_k p_k^2`` of the predicted label distribution (1/120 and 1/8 for uniform labels); 1.0 is
perfect control. The score is the mean of the two agreements.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from vfbench.errors import UsageError


def pairwise_agreement(groups: np.ndarray) -> float:
    """Mean over groups (rows) of the fraction of unordered pairs with equal labels."""
    groups = np.asarray(groups)
    if groups.ndim != 2 or groups.shape[1] < 2:
        raise UsageError(f"agreement needs groups of at least 2 clips as a [groups, clips] array, got shape {groups.shape}")
    k = groups.shape[1]
    same = (groups[:, :, None] == groups[:, None, :]).sum(axis=(1, 2)) - k  # ordered pairs i != j
    return float(np.mean(same / (k * (k - 1))))


def chance_agreement(labels: np.ndarray) -> float:
    """Agreement expected from the label marginal alone: sum_k p_k^2."""
    _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
    p = counts / counts.sum()
    return float(np.sum(p * p))


def disentanglement_score(content_same_base: np.ndarray, motion_same_residual: np.ndarray) -> Dict[str, float]:
    """Score from predicted labels: ``content_same_base`` [G, K] content labels of clips sharing a base
    noise per row, ``motion_same_residual`` [G, K] motion labels of clips sharing residual noise per row."""
    content = pairwise_agreement(content_same_base)
    motion = pairwise_agreement(motion_same_residual)
    return {"content_agreement": content, "motion_agreement": motion,
            "content_chance": chance_agreement(content_same_base),
            "motion_chance": chance_agreement(motion_same_residual),
            "score": 0.5 * (content + motion)}
