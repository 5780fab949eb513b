"""Still pictures of clips: every clip a row of its frames, labelled groups one above the other.

A GIF shows motion but hides whether two frames belong to the same video; a filmstrip shows both
content (down a column) and coherence (along a row). Used for the README's real-vs-samples figure
(``vfbench figure``) and for looking at memorisation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from vfbench.clips import check_clips


def filmstrip(groups: Sequence[Tuple[str, "object"]], *, frames: Optional[int] = None, scale: int = 2,
              pad: int = 2, label_width: int = 0) -> np.ndarray:
    """An RGB uint8 image ``[H, W, 3]``: for each ``(label, clips)`` group (uint8 ``[n, T, C, H, W]``),
    one row per clip showing its first ``frames`` frames (default all), upscaled ``scale`` x by pixel
    repetition, groups separated by a white band. Labels are drawn when ``label_width`` > 0."""
    from PIL import Image, ImageDraw

    rows = []
    width = None
    for label, clips in groups:
        clips = check_clips(clips, f"clips of {label!r}")
        arr = np.asarray(clips.cpu() if hasattr(clips, "cpu") else clips)
        t = arr.shape[1] if frames is None else min(frames, arr.shape[1])
        for i, clip in enumerate(arr):
            tiles = [np.repeat(np.repeat(f.transpose(1, 2, 0), scale, 0), scale, 1) for f in clip[:t]]
            h = tiles[0].shape[0]
            sep = np.full((h, pad, 3), 255, np.uint8)
            row = np.concatenate([x for tile in tiles for x in (tile, sep)][:-1], axis=1)
            if label_width:
                name = np.full((h, label_width, 3), 255, np.uint8)
                if i == 0:
                    img = Image.fromarray(name)
                    ImageDraw.Draw(img).text((2, 2), label, fill=(0, 0, 0))
                    name = np.asarray(img)
                row = np.concatenate([name, row], axis=1)
            rows.append(row)
            rows.append(np.full((pad, row.shape[1], 3), 255, np.uint8))
        rows.append(np.full((3 * pad, rows[-1].shape[1], 3), 255, np.uint8))
        width = rows[-1].shape[1] if width is None else max(width, rows[-1].shape[1])
    out = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(out, axis=0)


def filmstrip_png_bytes(groups, **kwargs) -> bytes:
    """``filmstrip`` encoded as PNG bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(filmstrip(groups, **kwargs)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_filmstrip(path, groups, **kwargs) -> Path:
    """``filmstrip`` written atomically as a PNG."""
    from vfbench.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as f:
        f.write(filmstrip_png_bytes(groups, **kwargs))
    return path


__all__ = ["filmstrip", "filmstrip_png_bytes", "write_filmstrip"]
