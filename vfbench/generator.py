"""The generator contract (DESIGN.md "Core contracts").

A generator is a ``torch.nn.Module`` with a frozen, serialisable dataclass config (``Config``):

* ``loss(batch) -> dict``: the training objective; ``batch["video"]`` is uint8 ``[B, T, C, H, W]``
  plus optional integer labels (``label``, ``content``, ``motion``; -1 where absent); returns a dict
  with a scalar ``loss`` and any logged terms (floats or 0-d tensors).
* ``sample(n, generator=..., **controls) -> uint8 [n, T, C, H, W]``: same ``torch.Generator`` state,
  same bytes.
* ``param_groups(lr)``: optimiser groups (VideoFusion's smaller base learning rate).

Everything else (optimiser, EMA, precision, DDP, checkpoints, logging) is the shared trainer's.
Checkpoints hold only tensors and plain data, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, List, Optional

import torch
from torch import nn

from vfbench.config import from_dict, to_dict


class Generator(nn.Module):
    name: ClassVar[str] = "generator"
    Config: ClassVar[type]

    def __init__(self, config):
        super().__init__()
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__} config")
        self.config = config

    # -- contract -------------------------------------------------------------------------
    def loss(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, **controls) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def param_groups(self, lr: float) -> List[Dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "all"}]

    # -- serialisation --------------------------------------------------------------------
    def config_dict(self) -> Dict[str, Any]:
        return to_dict(self.config)

    @classmethod
    def from_config_dict(cls, data: Dict[str, Any]) -> "Generator":
        return cls(from_dict(cls.Config, data, where=f"{cls.name} config"))

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


def make_generator(seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   device: str | torch.device = "cpu") -> torch.Generator:
    """Explicit randomness: a torch.Generator from a seed (or the one given)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g
