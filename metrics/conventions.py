"""Other codebases' FVD conventions as named presets, each a documented list of choices with its source.

Users of every FVD codebase report that published numbers do not reproduce because conventions differ
silently: the resize path, the real-data frame stride (TaiChi 4 vs 6, Latte's 3), real clips from which
videos, 2048 vs all samples, biased or unbiased covariance. Here each convention is named
(``metrics/i3d_extractor.py: PRESETS``, selected with ``--i3d-preset``; the metric name then carries it,
``fvd2048_16f-latte``), every choice is listed in the same rows (``CHOICES``), and ``diff`` prints the rows
where two presets differ (``vfbench protocols diff reference latte``).

What vfbench does not imitate is said in the rows themselves: every preset runs the TF-Hub reference
weights (with the preset's BatchNorm eps), and ``cd-fvd``'s ``n_real='full'`` stays the metric's ``num_real``.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from vfbench.errors import UnknownNameError

#: (row label, preset key) in the order ``vfbench protocols`` prints them
CHOICES: Tuple[Tuple[str, str], ...] = (
    ("network", "network"),
    ("BatchNorm eps", "bn_eps"),
    ("resize to 224", "resize_detail"),
    ("crop", "crop"),
    ("covariance", "covariance"),
    ("float -> uint8", "quantisation"),
    ("real clips", "real_clips"),
    ("real-data frames", "real_frames"),
    ("samples", "samples"),
    ("source", "source"),
)
DEFAULTS = {"crop": "none: every frame stretched to 224x224"}


def presets() -> Dict[str, Dict[str, str]]:
    """Every preset as ``{row label: value}`` in ``CHOICES`` order."""
    from vfbench.metrics.i3d_extractor import PRESETS

    out = {}
    for name, cfg in PRESETS.items():
        out[name] = {label: str(cfg.get(key, DEFAULTS.get(key, "-"))) for label, key in CHOICES}
    return out


def preset(name: str) -> Dict[str, str]:
    table = presets()
    if name not in table:
        raise UnknownNameError("protocol preset", name, table)
    return table[name]


def diff(a: str, b: str) -> List[Tuple[str, str, str]]:
    """``(row, value in a, value in b)`` for every choice where presets ``a`` and ``b`` differ (sources aside)."""
    pa, pb = preset(a), preset(b)
    return [(label, pa[label], pb[label]) for label, _ in CHOICES if label != "source" and pa[label] != pb[label]]
