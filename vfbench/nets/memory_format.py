"""Memory format of the networks' weights (and so of their activations) on CPU.

oneDNN's convolutions on a CPU run fastest with NHWC ("channels-last") tensors: the channel dimension is
innermost, so a 3x3 or 1x1 convolution is one blocked matrix product with no reorder of its input or output.
A module whose 4-D weights are channels-last makes every convolution's output channels-last too (PyTorch
suggests the format from the input *or* the weight), so converting the weights once is enough; the nets'
reshapes between [B*T, C, H, W] and [B, C, T, H, W] and the attention layers keep working on any strides.
The numbers change only by float rounding (``benchmarks/channels_last.py`` reports the max difference).
"""

from __future__ import annotations

import torch

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Store ``module``'s 4-D parameters and buffers channels-last (in place); returns the module."""
    return module.to(memory_format=torch.channels_last)


def resolve_memory_format(setting: str, device: torch.device | str) -> str:
    """``auto`` -> ``channels_last`` on a CPU, ``contiguous`` elsewhere (cuDNN picks its own layouts)."""
    if setting not in MEMORY_FORMATS:
        from vfbench.errors import UsageError

        raise UsageError(f"--memory-format must be one of {', '.join(MEMORY_FORMATS)}, got {setting!r}")
    if setting != "auto":
        return setting
    return "channels_last" if torch.device(device).type == "cpu" else "contiguous"
