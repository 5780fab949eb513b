"""Contracts of the metric pipeline: extractor -> statistic -> score.

* ``FeatureExtractor``: uint8 clips ``[B, T, C, H, W]`` -> dict of float64 numpy arrays, e.g.
  ``{"features": [B, D]}`` for FVD/KVD and ``{"probs": [B, K]}`` for IS. It owns its protocol
  preprocessing (resize, range) and describes it, with its weights' sha256, in ``describe()``.
* A statistic is a streaming, float64 accumulator with ``update(features)`` and a serialisable
  ``state()`` (cacheable for the real data).
* A score is a pure numpy/scipy function of states.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict

import numpy as np


class FeatureExtractor(ABC):
    name: str = "extractor"
    #: output keys this extractor produces ("features", "probs")
    outputs: tuple = ("features",)
    #: fewest frames a clip may have
    min_frames: int = 1

    @abstractmethod
    def extract(self, clips) -> Dict[str, np.ndarray]:
        """uint8 clips [B, T, C, H, W] (torch or numpy) -> {key: float64 array [B, ...]}."""

    @abstractmethod
    def describe(self) -> Dict[str, Any]:
        """Everything that changes the features: name, preset, preprocessing, weights_sha256."""
