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
* ``shape_motion``: where the clip's one coloured shape is in each frame and how it moves. ``shapes``
  draws a saturated shape on a grey background, so a pixel's saturation (max - min over RGB) marks the
  shape; its saturation-weighted centroid per frame gives the shape's **speed** (mean step between
  consecutive frames, in image widths per frame), its **net displacement** per frame (first to last
  visible frame) and its **jitter** (mean second difference: 0 for a straight uniform motion, large for
  a shape that jumps). A static blob has speed ~0; frames of different videos jump.
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


# A shapes clip's background is grey (saturation 0) and its shape saturated (>= ~136 levels at full
# coverage): ramp the weight from 40 to 120 levels so anti-aliased edges count partly and grey noise not at all
_SAT_LO, _SAT_HI = 40.0, 120.0
_VISIBLE_AREA = 0.002  # a frame shows the shape when its weighted area is >= 0.2% of the frame (2 px at 32x32)


def shape_centroids(clips):
    """Per clip and frame, the saturation-weighted centroid ``(x, y)`` in image widths and whether the shape
    is visible: ``(centroids [n, T, 2], visible [n, T])`` (module doc)."""
    x = _as_numpy(clips).astype(np.float32)
    sat = x.max(axis=2) - x.min(axis=2)  # [n, T, H, W]
    w = np.clip((sat - _SAT_LO) / (_SAT_HI - _SAT_LO), 0.0, 1.0)
    h, wd = w.shape[-2:]
    area = w.sum(axis=(2, 3))
    ys = (np.arange(h, dtype=np.float32) + 0.5) / wd
    xs = (np.arange(wd, dtype=np.float32) + 0.5) / wd
    safe = np.maximum(area, 1e-12)
    cx = (w.sum(axis=2) * xs).sum(axis=2) / safe
    cy = (w.sum(axis=3) * ys).sum(axis=2) / safe
    return np.stack([cx, cy], axis=-1), area >= _VISIBLE_AREA * h * wd


def shape_motion(clips) -> Dict[str, float]:
    """How the coloured shape moves (module doc): means over clips of ``shape_speed``, ``shape_displacement``
    (both image widths per frame), ``shape_jitter`` (image widths per frame^2) and ``shape_visible`` (the
    fraction of frames that show a shape). Clips with fewer than two (three) visible consecutive frames
    do not enter the speed (jitter)."""
    c, vis = shape_centroids(clips)
    speeds, disps, jitters = [], [], []
    for ci, vi in zip(c, vis):
        step = np.linalg.norm(np.diff(ci, axis=0), axis=-1)
        pair = vi[1:] & vi[:-1]
        if pair.any():
            speeds.append(float(step[pair].mean()))
        idx = np.flatnonzero(vi)
        if len(idx) >= 2:
            disps.append(float(np.linalg.norm(ci[idx[-1]] - ci[idx[0]]) / (idx[-1] - idx[0])))
        triple = vi[2:] & vi[1:-1] & vi[:-2]
        if triple.any():
            jitters.append(float(np.linalg.norm(ci[2:] - 2 * ci[1:-1] + ci[:-2], axis=-1)[triple].mean()))
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"shape_speed": mean(speeds), "shape_displacement": mean(disps), "shape_jitter": mean(jitters),
            "shape_visible": float(vis.mean())}


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
    """``pixel_std``, ``frame_to_frame_std``, ``shape_motion`` and (``with_labels``) ``label_statistics`` in one dict."""
    stats = {"num_clips": int(_as_numpy(clips).shape[0]), "pixel_std": pixel_std(clips),
             "frame_to_frame_std": frame_to_frame_std(clips), **shape_motion(clips)}
    if with_labels:
        stats.update(label_statistics(clips, extractor))
    return stats


__all__ = ["pixel_std", "frame_to_frame_std", "shape_centroids", "shape_motion", "label_statistics", "clip_statistics"]
