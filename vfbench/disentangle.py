"""The content/motion disentanglement evaluation of a VideoFusion run on ``shapes`` (Sec. 4.7).

Unlike FVD/KVD/IS it needs the generator, not only its samples: groups of clips are drawn with
one shared base noise and different residual noises (content should agree), and with one shared
residual noise and different base noises (motion should agree); the built-in ``shapes-net``
predicts the labels and ``metrics.disentanglement`` scores them. One result record is written
(metric ``disentangle_shapes``), with the agreements, their chance levels and the seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from vfbench.errors import UsageError, check_positive
from vfbench.results import ResultsStore

METRIC = "disentangle_shapes"


def sample_control_groups(gen, groups: int, per_group: int, seed: int, steps: Optional[int] = None):
    """(same_base, same_residual): uint8 clips [groups, per_group, T, C, H, W] each.

    Group g of ``same_base`` shares ``base_seed = seed + g`` (each clip its own residual stream);
    group g of ``same_residual`` shares ``residual_seed = seed + g``.
    """
    same_base, same_residual = [], []
    for g in range(groups):
        gb = torch.Generator().manual_seed(seed * 7919 + 2 * g)
        gr = torch.Generator().manual_seed(seed * 7919 + 2 * g + 1)
        same_base.append(gen.sample(per_group, generator=gb, base_seed=seed + g, steps=steps))
        same_residual.append(gen.sample(per_group, generator=gr, residual_seed=seed + g, steps=steps))
    return torch.stack(same_base), torch.stack(same_residual)


def evaluate_disentanglement(run: str, store: Optional[ResultsStore] = None, *, groups: int = 8,
                             per_group: int = 4, seed: int = 0, steps: Optional[int] = None,
                             device: str = "cpu", weights: Optional[str] = None, write: bool = True) -> Dict[str, Any]:
    """Score one VideoFusion run and write its record (unless ``write=False``); returns the record."""
    from vfbench.metrics.disentanglement import disentanglement_score
    from vfbench.metrics.shapes_net import ShapesNetExtractor
    from vfbench.runs import load_run

    check_positive("groups (evaluate_disentanglement)", groups)
    if per_group < 2:
        raise UsageError(f"per_group (evaluate_disentanglement) must be at least 2 (pairs of clips are compared), got {per_group}")
    store = store or ResultsStore.open()
    run_dir = store.resolve_run(run)
    t0 = time.time()
    gen, info = load_run(run_dir, device=device)
    if info["generator"] != "videofusion":
        raise UsageError(f"{METRIC} needs a VideoFusion run (base/residual noise control); {run_dir.name}"
                         f" is a {info['generator']!r} run")
    dataset = info.get("dataset") or {}
    if (dataset.get("name") or "shapes") != "shapes":
        raise UsageError(f"{METRIC} uses the shapes-net labels and needs a run trained on shapes,"
                         f" not {dataset.get('name')!r}")
    ext = ShapesNetExtractor(weights=weights, device=device)
    same_base, same_res = sample_control_groups(gen, groups, per_group, seed, steps)
    g, k = groups, per_group
    content = ext.predict_labels(same_base.flatten(0, 1))["content"].reshape(g, k)
    motion = ext.predict_labels(same_res.flatten(0, 1))["motion"].reshape(g, k)
    score = disentanglement_score(content, motion)
    record = {
        "run": run_dir.name, "generator": info["generator"], "dataset": "shapes", "metric": METRIC,
        "protocol": "mini", "value": score["score"], "higher_is_better": True, "std": None,
        "ci_low": None, "ci_high": None, "trials": 1, "num_real": 0, "num_fake": 2 * g * k,
        "seeds": {"seed": seed, "groups": g, "per_group": k}, "details": score,
        "extractor": ext.describe(), "config": {k_: v for k_, v in info.items() if k_ != "provenance"},
        "samples_dir": None, "sampling_steps": steps, "elapsed": round(time.time() - t0, 2),
    }
    if write:
        record["record_id"] = store.write_record(record).stem
    return record
