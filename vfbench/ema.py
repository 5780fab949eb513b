"""Exponential moving average of a model's weights (the weights used for sampling).

``ema <- decay * ema + (1 - decay) * param`` after every optimiser step, in float32 (or the
parameter's own dtype if wider), so that bf16/fp16 training does not quantise the average away.
Buffers (e.g. normalisation statistics) are copied, not averaged.

With ``warmup`` the decay of update ``n`` (1-based) is ``min(decay, (1 + n) / (10 + n))``: early
updates move the average quickly, so a short run (a CPU demo of a few hundred steps) does not
sample from weights that are still mostly the random initialisation; long runs reach ``decay``. The shadow is keyed exactly like
``model.state_dict()`` so that ``model.load_state_dict(ema.state_dict())`` gives the EMA model.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from vfbench.errors import UsageError


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        if not 0.0 <= float(decay) <= 1.0:
            raise UsageError(f"--ema-decay must be in [0, 1] (e.g. 0.999), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self._params = dict(model.named_parameters())
        self._buffers = dict(model.named_buffers())
        self.shadow: Dict[str, torch.Tensor] = {}
        for name, t in model.state_dict().items():
            t = t.detach()
            # Average floating tensors in >= float32; integer buffers are copied as they are.
            if t.is_floating_point() and t.dtype in (torch.float16, torch.bfloat16):
                t = t.float()
            self.shadow[name] = t.clone()

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step from ``model``'s current weights."""
        decay = self.current_decay()
        self.num_updates += 1
        state = model.state_dict()
        names = [n for n in self._params if n in self.shadow and self.shadow[n].is_floating_point()]
        if names:
            ema_t = [self.shadow[n] for n in names]
            cur = [state[n].detach().to(self.shadow[n].dtype) for n in names]
            # lerp: ema + (1 - decay) * (param - ema) == decay * ema + (1 - decay) * param
            torch._foreach_lerp_(ema_t, cur, 1.0 - decay)
        for n, t in state.items():
            if n not in self._params:  # buffers follow the model
                self.shadow[n].copy_(t.detach())

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The EMA weights, keyed and typed like ``model.state_dict()``."""
        out = {}
        for n, t in self.shadow.items():
            ref = self._params.get(n, self._buffers.get(n))
            out[n] = t.to(ref.dtype) if ref is not None and ref.dtype != t.dtype else t.clone()
        return out

    def load_state_dict(self, sd: Dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        unexpected = set(sd) - set(self.shadow)
        if missing or unexpected:
            raise RuntimeError(f"EMA state mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        for n, t in sd.items():
            if t.shape != self.shadow[n].shape:
                raise RuntimeError(f"EMA state mismatch for {n}: shape {tuple(t.shape)} vs {tuple(self.shadow[n].shape)}")
            self.shadow[n].copy_(t.to(self.shadow[n].dtype))

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.state_dict())
