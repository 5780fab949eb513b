"""Content/motion disentanglement score for VideoFusion's Sec. 4.7 experiment (``shapes`` protocol).

VideoFusion claims that the shared base noise ``b`` carries the content and the residual noise
``r`` the motion (Sec. 3.5, 4.7, Fig. 1/7). We measure it with the built-in extractor's predicted
labels on groups of generated clips:

* **content agreement**: clips sampled with the *same* base noise and different residual noises;
  the fraction of pairs inside a group whose predicted content labels agree;
* **motion agreement**: clips with the *same* residual noise and different base noises; the
  fraction of pairs whose predicted motion labels agree.

Raw agreement is misleading on its own: a collapsed generator whose clips all get the same label
agrees perfectly. Each agreement is therefore corrected for chance like Cohen's kappa,
``(agreement - chance) / (1 - chance)`` with ``chance = sum_k p_k^2`` of the predicted label
distribution (1/120 and 1/8 for uniform labels), and counts as 0 when every clip got the same label
(chance 1: no evidence either way). The score is the mean of the two corrected agreements: 1 is
perfect control, 0 is what noise-independent factors give.
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


def chance_corrected(agreement: float, chance: float) -> float:
    """Cohen's-kappa-style correction; 0 when all labels are equal (chance 1)."""
    return 0.0 if chance >= 1.0 else (agreement - chance) / (1.0 - chance)


def disentanglement_score(content_same_base: np.ndarray, motion_same_residual: np.ndarray) -> Dict[str, float]:
    """Score from predicted labels: ``content_same_base`` [G, K] content labels of clips sharing a base
    noise per row, ``motion_same_residual`` [G, K] motion labels of clips sharing residual noise per row."""
    content, motion = pairwise_agreement(content_same_base), pairwise_agreement(motion_same_residual)
    c_chance, m_chance = chance_agreement(content_same_base), chance_agreement(motion_same_residual)
    c_kappa, m_kappa = chance_corrected(content, c_chance), chance_corrected(motion, m_chance)
    return {"content_agreement": content, "motion_agreement": motion,
            "content_chance": c_chance, "motion_chance": m_chance,
            "content_kappa": c_kappa, "motion_kappa": m_kappa, "score": 0.5 * (c_kappa + m_kappa)}
