"""Do generated clips look like ``shapes`` videos? Statistics beside FVD that say *how* they differ.

FVD says how far two sets are; these say what is wrong when they are far (README, "Generators that
learn"):

* ``pixel_std``: the spread of a clip's pixel values (uint8 levels), averaged over clips. Saturated
  colour noise is ~95, a real ``shapes`` clip (grey texture, one small shape) ~20, a flat grey clip 0.
* ``frame_to_frame_std``: the std of ``x[t+1] - x[t]``, averaged over clips: how much a clip changes
  from one frame to the next. Real ``shapes`` clips ~5 (a small shape moves over a still background);
  frames that do not belong to the same video give the pixel std times sqrt(2).
* ``label_statistics`` (shapes-net): the predicted content (120 classes: shape x colour x texture) and
  motion (8 families) of every clip, summarised as the mean confidence of the prediction (does the
  classifier see a shape at all?), the normalised entropy and the coverage of the predicted classes
  (an unconditional generator should spread over many), and **within-clip consistency**: the content
  predicted from the first half of a clip's frames agrees with that from the second half (a coherent
  video keeps its content; frames of different videos do not).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from vfbench.clips import check_clips


def _as_numpy(clips) -> np.ndarray:
    check_clips(clips, "clips")
    return np.asarray(clips.cpu() if hasattr(clips, "cpu") else clips)


def pixel_std(clips) -> float:
    """Mean over clips of the std of each clip's pixel values (uint8 levels)."""
    x = _as_numpy(clips).astype(np.float64)
    return float(x.reshape(x.shape[0], -1).std(axis=1).mean())


def frame_to_frame_std(clips) -> float:
    """Mean over clips of the std of the differences between consecutive frames (uint8 levels)."""
    x = _as_numpy(clips).astype(np.float64)
    if x.shape[1] < 2:
        return 0.0
    d = np.diff(x, axis=1)
    return float(d.reshape(d.shape[0], -1).std(axis=1).mean())


def _entropy(labels: np.ndarray, classes: int) -> float:
    p = np.bincount(labels, minlength=classes) / max(1, len(labels))
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(classes))


def label_statistics(clips, extractor=None) -> Dict[str, float]:
    """shapes-net's view of a set of clips (module doc). ``extractor``: a ``ShapesNetExtractor`` (default:
    the shipped weights on the CPU)."""
    from vfbench.metrics.shapes_net import FACTORS, MIN_FRAMES, ShapesNetExtractor

    x = _as_numpy(clips)
    ext = extractor or ShapesNetExtractor()
    out = ext.extract(x)
    content, motion = out["probs"].argmax(1), out["probs_motion"].argmax(1)
    n_content = FACTORS["shape"] * FACTORS["colour"] * FACTORS["texture"]
    stats = {
        "content_confidence": float(out["probs"].max(1).mean()),
        "motion_confidence": float(out["probs_motion"].max(1).mean()),
        "content_entropy": _entropy(content, n_content),
        "motion_entropy": _entropy(motion, FACTORS["motion"]),
        "content_coverage": float(len(np.unique(content)) / min(n_content, len(content))),
        "motion_coverage": float(len(np.unique(motion)) / min(FACTORS["motion"], len(motion))),
    }
    half = x.shape[1] // 2
    if half >= MIN_FRAMES:
        first = ext.extract(np.ascontiguousarray(x[:, :half]))["probs"].argmax(1)
        second = ext.extract(np.ascontiguousarray(x[:, half:2 * half]))["probs"].argmax(1)
        stats["content_consistency"] = float((first == second).mean())
    return stats


def clip_statistics(clips, extractor=None, with_labels: bool = True) -> Dict[str, float]:
    """``pixel_std``, ``frame_to_frame_std`` and (``with_labels``) ``label_statistics`` in one dict."""
    stats = {"num_clips": int(_as_numpy(clips).shape[0]), "pixel_std": pixel_std(clips),
             "frame_to_frame_std": frame_to_frame_std(clips)}
    if with_labels:
        stats.update(label_statistics(clips, extractor))
    return stats


__all__ = ["pixel_std", "frame_to_frame_std", "label_statistics", "clip_statistics"]
