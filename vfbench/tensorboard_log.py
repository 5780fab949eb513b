"""TensorBoard curves and sample previews of a training run (``vfbench train --tensorboard``).

Written beside ``log.csv`` (which stays the record): every logged step the averaged loss terms,
each parameter group's learning rate and the EMA decay in use; every ``preview_every`` steps a
filmstrip of a few clips sampled from the EMA weights (one row per clip, one column per frame).
The preview samples a copy of the model inside a forked RNG, so training is bit-identical with or
without it. ``tensorboard`` is an optional extra: ``pip install -e ".[tensorboard]"``.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from vfbench.checkpoint import derive_seed
from vfbench.errors import UsageError

PREVIEW_CLIPS = 4
PREVIEW_STEPS = 10  # DDIM steps of a preview: enough to see the shapes, cheap next to a training interval


def filmstrip(clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``[n, T, C, H, W]`` -> one uint8 image ``[3, n*H, T*W]`` (rows: clips, columns: frames)."""
    n, t, c, h, w = clips.shape
    x = clips if c == 3 else clips[:, :, :1].expand(n, t, 3, h, w)
    return x.permute(2, 0, 3, 1, 4).reshape(3, n * h, t * w).contiguous()


class TensorBoardLog:
    def __init__(self, log_dir: Path, preview_every: Optional[int], seed: int = 0, resume_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard"
                             " (or the extra: pip install -e \".[tensorboard]\")") from None
        self.log_dir, self.preview_every, self.seed = Path(log_dir), preview_every, seed
        # purge_step: a resumed run drops the events past its checkpoint, as log.csv drops its rows
        self.writer = SummaryWriter(str(self.log_dir), purge_step=resume_step or None)

    def scalars(self, step: int, terms: Dict[str, float], lrs: Dict[str, float], ema_decay: float) -> None:
        for name, value in terms.items():
            self.writer.add_scalar(f"loss/{name}" if name != "loss" else "loss/total", value, step)
        for name, value in lrs.items():
            self.writer.add_scalar(f"lr/{name}", value, step)
        self.writer.add_scalar("ema/decay", ema_decay, step)

    def maybe_preview(self, step: int, model: torch.nn.Module, ema: Any, last: bool) -> None:
        if not self.preview_every or not hasattr(model, "sample") or (step % self.preview_every and not last):
            return
        shadow = copy.deepcopy(model)
        ema.copy_to(shadow)
        shadow.eval()
        kw: Dict[str, Any] = {}
        if "steps" in inspect.signature(shadow.sample).parameters:
            kw["steps"] = PREVIEW_STEPS
        device = next(model.parameters()).device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            g = torch.Generator(device=device).manual_seed(derive_seed(self.seed, "preview"))
            clips = shadow.sample(PREVIEW_CLIPS, generator=g, **kw)
        del shadow
        self.writer.add_image("samples/ema", filmstrip(clips.cpu()), step, dataformats="CHW")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
