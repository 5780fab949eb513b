"""Datasets: uint8 clips [T, C, H, W] with labels, from the registry (docs/CONTRACTS.md "Datasets").

``build_dataset(name, ...)`` looks ``name`` up in ``vfbench.registry.DATASETS`` (an unknown name is
answered with "did you mean ..."), and ``collate_clips`` stacks items into the exchange format
``batch["video"]`` uint8 ``[B, T, C, H, W]`` with int64 label vectors.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional

from vfbench.errors import UsageError, check_positive

LABEL_KEYS = ("label", "content", "motion", "index")


def build_dataset(name: str, split: str = "train", frames: int = 16, size: int = 64,
                  data_root: Optional[str] = None, stride: Optional[int] = None, seed: int = 0, **kwargs):
    """Instantiate the registered dataset ``name``; ``stride=None`` means the dataset's own default."""
    from vfbench.registry import DATASETS

    cls = DATASETS.get(name)
    from vfbench.options import check_seed

    check_positive("--frames", frames)
    check_positive("--size", size)
    check_seed(seed, "the dataset seed (dataset.seed)")
    if stride is not None:
        check_positive("--stride", stride)
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            known = sorted(set(params) - {"split", "frames", "size", "data_root", "stride", "seed"})
            raise UsageError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))};"
                             f" its options are: {', '.join(known) or '(none)'}")
    return cls(split=split, frames=frames, size=size, data_root=data_root, stride=stride, seed=seed, **kwargs)


def collate_clips(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack dataset items: ``video`` uint8 [B, T, C, H, W] and int64 vectors for the label keys."""
    import torch

    if not items:
        raise UsageError("cannot collate an empty list of clips; use a batch size of at least 1")
    batch: Dict[str, Any] = {"video": torch.stack([it["video"] for it in items])}
    for key in LABEL_KEYS:
        batch[key] = torch.tensor([int(it.get(key, -1)) for it in items], dtype=torch.int64)
    return batch


__all__ = ["build_dataset", "collate_clips", "LABEL_KEYS"]
