"""The one exchange format: uint8 clips ``[B, T, C, H, W]``; conversions to a model's [-1, 1] range."""

from __future__ import annotations

from vfbench.errors import UsageError


def check_clips(x, name: str = "clips", *, min_frames: int = 1, channels: int | None = 3):
    """Raise a clear UsageError unless ``x`` is a uint8 tensor/array of shape [B, T, C, H, W]."""
    import numpy as np
    import torch

    dtype = x.dtype
    is_u8 = dtype == torch.uint8 if isinstance(x, torch.Tensor) else dtype == np.uint8
    if not is_u8:
        raise UsageError(f"{name} must be uint8 in [0, 255] with layout [B, T, C, H, W], got dtype {dtype};"
                         " convert floats with (x.clamp(-1, 1) + 1) * 127.5 rounded, or x * 255 for [0, 1]")
    if x.ndim != 5:
        raise UsageError(f"{name} must have 5 dimensions [B, T, C, H, W], got shape {tuple(x.shape)}")
    b, t, c, h, w = x.shape
    if channels is not None and c != channels:
        hint = " (it looks channels-last: use x.permute(0, 1, 4, 2, 3))" if w == channels else ""
        raise UsageError(f"{name} must have {channels} channels in dimension 2 of [B, T, C, H, W],"
                         f" got shape {tuple(x.shape)}{hint}")
    if t < min_frames:
        raise UsageError(f"{name} have {t} frames but at least {min_frames} are needed")
    if b == 0:
        raise UsageError(f"{name} is empty (batch of 0 clips)")
    return x


def uint8_to_unit(x):
    """uint8 [0, 255] -> float32 [-1, 1] (the diffusion models' data range)."""
    return x.float().div(127.5).sub(1.0)


def unit_to_uint8(x):
    """float [-1, 1] -> uint8 by rounding (clamped). NaN maps to 0 only after a caller's own check."""
    import torch

    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
