"""One validation rule per option, shared by every command and config section that takes it.

Each rule lives here once, so ``train``, ``pretrain base``, ``sample``, ``evaluate``, ``quality``,
``ablate``, ``demo``, ``bench`` and ``weights train`` accept and refuse the same values with the
same sentence:

* ``--seed``: a whole number >= 0 (every random stream derives from it; numpy and torch refuse
  negative seeds, and a seed that one command takes must not be refused by the next);
* ``--lr``: a finite number > 0 (``inf`` or ``nan`` pass a plain ``> 0`` test and train nothing but NaNs);
* ``--frames``: at least the generator's ``min_frames`` (2 for the video generators: they learn how
  frames change, and a one-frame clip trains an image model under a video model's name), with its reason;
* ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with N below the number of visible GPUs,
  checked before a run folder is created, so a bad device leaves nothing behind.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from vfbench.errors import UsageError


def check_seed(value: Any, option: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{option} must be a whole number >= 0 (it seeds every random stream), got {value!r}")
    return value


def check_lr(value: Any, option: str = "--lr") -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise UsageError(f"{option} must be a finite number > 0, got {value!r}")
    return float(value)


DEFAULT_MIN_FRAMES = 2
DEFAULT_MIN_FRAMES_REASON = "a video generator learns how frames change over time, and one frame is an image"


def check_frames(frames: Any, generator: Optional[type] = None, option: str = "--frames") -> int:
    """``frames`` for clips of ``generator`` (a registered class; None: any video generator)."""
    need = int(getattr(generator, "min_frames", DEFAULT_MIN_FRAMES))
    why = getattr(generator, "min_frames_reason", DEFAULT_MIN_FRAMES_REASON)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < need:
        who = f" for {generator.name}" if generator is not None and getattr(generator, "name", None) else ""
        raise UsageError(f"{option} must be at least {need}{who} ({why}), got {frames!r}")
    return frames


def check_device(spec: Any, option: str = "--device") -> str:
    """``spec`` if this machine has it; UsageError naming the devices it has otherwise."""
    import torch

    if not isinstance(spec, str) or not (spec in ("auto", "cpu", "cuda") or spec.startswith("cuda:")):
        raise UsageError(f"{option} must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UsageError(f"{option} {spec} was requested but no CUDA GPU is available; use --device cpu")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= n):
            raise UsageError(f"{option} {spec} names a GPU this machine does not have (it has {n}: cuda:0 to"
                             f" cuda:{n - 1}); pick one of those or --device cpu")
    return spec
