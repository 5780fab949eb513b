"""Animated GIF grids of clips for the report, with optional row and column labels drawn in.

The labels are part of the image (not HTML around it) so they stay aligned with their tiles
however the page scales the picture. A grid of real clips and a grid of generated clips made with
the same ``cols``, clip shape and label setting have the same pixel size, which is how the report
shows real clips beside every sample grid at the same scale.
"""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np

MIN_TILE = 64        # tiny clips (8-16 px) are enlarged by an integer factor to at least this size
PAD = 2
ROW_LABEL_W = 84     # left margin for row labels, px
COL_LABEL_H = 14     # top margin for column labels, px


def _tiles(clips) -> np.ndarray:
    """uint8 ``[N, T, H, W, 3]``, enlarged by nearest neighbour to at least ``MIN_TILE`` pixels."""
    from vfbench.clips import check_clips

    x = np.asarray(check_clips(np.asarray(clips), "grid clips", channels=None))
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] != 3:
        raise ValueError(f"grid clips need 1 or 3 channels, got {x.shape[2]}")
    scale = max(1, math.ceil(MIN_TILE / max(1, min(x.shape[3:]))))
    return x.transpose(0, 1, 3, 4, 2).repeat(scale, axis=2).repeat(scale, axis=3)


def grid_gif(clips, cols: int, *, row_labels: Optional[Sequence[str]] = None,
             col_labels: Optional[Sequence[str]] = None, fps: int = 8) -> bytes:
    """GIF bytes of clips ``[N, T, C, H, W]`` laid out row-major, ``cols`` per row.

    With ``row_labels`` / ``col_labels`` (one string per row / column; blanks allowed) a margin is
    reserved on the left / top and the labels are written into it; passing blank labels keeps the
    same geometry without text (a real-clips grid beside a labelled one)."""
    from PIL import Image, ImageDraw

    x = _tiles(clips)
    n, t, h, w, _ = x.shape
    cols = max(1, min(int(cols), n))
    rows = math.ceil(n / cols)
    for what, labels, want in (("row", row_labels, rows), ("column", col_labels, cols)):
        if labels is not None and len(labels) != want:
            raise ValueError(f"{len(labels)} {what} labels for a grid of {want} {what}s")
    left = ROW_LABEL_W if row_labels is not None else 0
    top = COL_LABEL_H if col_labels is not None else 0
    canvas = np.full((t, top + rows * (h + PAD) + PAD, left + cols * (w + PAD) + PAD, 3), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y0, x0 = top + PAD + r * (h + PAD), left + PAD + q * (w + PAD)
        canvas[:, y0:y0 + h, x0:x0 + w] = x[k]
    # the labels are the same on every frame: draw them once (the margins are still white) and copy
    label = Image.fromarray(canvas[0].copy())
    draw = ImageDraw.Draw(label)
    for r, text in enumerate(row_labels or ()):
        draw.text((2, top + PAD + r * (h + PAD) + h // 2 - 6), str(text), fill=(0, 0, 0))
    for q, text in enumerate(col_labels or ()):
        draw.text((left + PAD + q * (w + PAD) + 2, 1), str(text), fill=(0, 0, 0))
    marked = np.asarray(label)
    if left:
        canvas[:, :, :left] = marked[:, :left]
    if top:
        canvas[:, :top] = marked[:top]
    frames = [Image.fromarray(f) for f in canvas]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)),
                   loop=0)
    return buf.getvalue()
