"""vfbench: train, sample and score video diffusion generators under the field's exact protocols.

The exchange format everywhere is uint8 clips ``[B, T, C, H, W]`` (DESIGN.md).
"""

__version__ = "0.1.0"

from vfbench.errors import VfbenchError, UsageError  # noqa: E402,F401
