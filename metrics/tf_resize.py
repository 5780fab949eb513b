"""TF1's legacy bilinear resize (``tf.image.resize_bilinear``, align_corners=False,
half_pixel_centers=False), the resize of the reference FVD preprocessing.

Semantics (TensorFlow ``core/kernels/image/resize_bilinear_op.cc``, ``LegacyScaler``): with
``scale = in / out`` (float32), output index ``d`` samples source coordinate ``src = d * scale``;
neighbours ``lo = floor(src)``, ``hi = min(ceil(src), in - 1)``, weight ``frac = src - lo``, and
each pixel is ``top + (bottom - top) * y_frac`` with ``top/bottom = left + (right - left) * x_frac``,
all in float32. It is *not* torch's bilinear (which samples at ``(d + 0.5) * scale - 0.5``) and it
never anti-aliases when shrinking.
"""

from __future__ import annotations

from typing import Tuple

import torch


def legacy_source_coords(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lo, hi, frac) of each output index along one axis, in TF1 legacy float32 arithmetic."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lo_f = torch.floor(src)
    lo = lo_f.to(torch.int64).clamp_(0, in_size - 1)
    hi = torch.ceil(src).to(torch.int64).clamp_(max=in_size - 1)
    return lo, hi, src - lo_f


def resize_bilinear_tf1(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize ``[..., H, W]`` images to ``size = (out_h, out_w)`` like TF1 ``resize_bilinear``.

    Any dtype in (uint8 values are exact in float32); the result is float32, as TF returns.
    """
    out_h, out_w = size
    x = images.to(torch.float32)
    in_h, in_w = x.shape[-2:]
    device = x.device
    x_lo, x_hi, x_frac = (t.to(device) for t in legacy_source_coords(in_w, out_w))
    y_lo, y_hi, y_frac = (t.to(device) for t in legacy_source_coords(in_h, out_h))
    # along W first: "top" and "bottom" of TF's formula are rows y_lo and y_hi interpolated in x,
    # so doing every source row once gives the same float32 operations in the same order
    left, right = x.index_select(-1, x_lo), x.index_select(-1, x_hi)
    rows = left + (right - left) * x_frac
    top, bottom = rows.index_select(-2, y_lo), rows.index_select(-2, y_hi)
    return top + (bottom - top) * y_frac.unsqueeze(-1)
