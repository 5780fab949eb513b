"""Training of the built-in ``shapes-net`` extractor (``vfbench weights train shapes-net``).

The shipped weights (``metrics/weights/shapes_net.safetensors``) were produced by this function
with the arguments recorded in ``metrics/weights/shapes_net.json``; rerunning the same command on a
CPU reproduces them (same seed, same data order), up to the last bits of float arithmetic that
differ between CPU kernels.

Data: clips of the ``shapes`` train split, rendered directly at 32x32 or at 64x64 and put through
the protocol's anti-aliased resize (so generated clips of either size look familiar), with 8 or 16
frames per batch (the network pools over time). Accuracies are measured on the test split.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch.nn import functional as F

from vfbench.errors import check_positive


@dataclass
class ShapesNetTrainConfig:
    steps: int = 1800
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    test_clips: int = 1000


def _labels(ds, items) -> Dict[str, torch.Tensor]:
    shapes, colours, textures = zip(*(ds.content_factors(it["content"]) for it in items))
    return {"shape": torch.tensor(shapes), "colour": torch.tensor(colours), "texture": torch.tensor(textures),
            "motion": torch.tensor([it["motion"] for it in items])}


def _batch(step: int, cfg: ShapesNetTrainConfig, datasets, rng: np.random.Generator):
    from vfbench.metrics.shapes_net import preprocess

    ds = datasets[int(rng.integers(len(datasets)))]
    idx = rng.integers(len(ds), size=cfg.batch_size)
    items = [ds[int(i)] for i in idx]
    video = torch.stack([it["video"] for it in items])
    return preprocess(video), _labels(ds, items)


def evaluate_shapes_net(model, num_clips: int = 1000, seed: int = 0, frames: int = 16, size: int = 32,
                        batch_size: int = 100) -> Dict[str, float]:
    """Test-split accuracies: shape, colour, texture, content (all three right) and motion."""
    from vfbench.data.shapes import ShapesDataset
    from vfbench.metrics.shapes_net import content_log_posterior, preprocess

    ds = ShapesDataset("test", frames=frames, size=size, seed=seed, length=num_clips)
    correct = {k: 0 for k in ("shape", "colour", "texture", "motion", "content")}
    model.eval()
    with torch.inference_mode():
        for start in range(0, num_clips, batch_size):
            items = [ds[i] for i in range(start, min(num_clips, start + batch_size))]
            out = model(preprocess(torch.stack([it["video"] for it in items])))
            lab = _labels(ds, items)
            for k in ("shape", "colour", "texture", "motion"):
                correct[k] += int((out[k].argmax(1) == lab[k]).sum())
            content = torch.tensor([it["content"] for it in items])
            correct["content"] += int((content_log_posterior(out).argmax(1) == content).sum())
    return {k: v / num_clips for k, v in correct.items()}


def train_shapes_net(cfg: ShapesNetTrainConfig, out_path: Path,
                     log: Optional[Callable[[str], None]] = print) -> Dict[str, object]:
    """Train, evaluate on the test split, write the weights and return the card."""
    from vfbench.data.shapes import ShapesDataset
    from vfbench.metrics.shapes_net import ShapesNet, save_weights

    check_positive("--steps", cfg.steps)
    check_positive("--batch-size", cfg.batch_size)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    datasets = [ShapesDataset("train", frames=t, size=s, seed=cfg.seed) for t in (8, 16) for s in (32, 64)]
    model = ShapesNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    t0 = time.time()
    for step in range(cfg.steps):
        model.train()
        x, lab = _batch(step, cfg, datasets, rng)
        out = model(x)
        loss = sum(F.cross_entropy(out[k], lab[k]) for k in lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 100 == 0 or step == cfg.steps - 1):
            log(f"shapes-net step {step + 1}/{cfg.steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    acc = evaluate_shapes_net(model, cfg.test_clips, seed=cfg.seed)
    sha = save_weights(model, Path(out_path))
    card = {"sha256": sha, "accuracy_test": acc, "train": asdict(cfg), "train_seconds": round(time.time() - t0, 1),
            "command": f"vfbench weights train shapes-net --steps {cfg.steps} --batch-size {cfg.batch_size}"
                       f" --lr {cfg.lr} --seed {cfg.seed}",
            "torch": torch.__version__}
    return card
