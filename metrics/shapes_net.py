"""``shapes-net``: the built-in feature extractor for the ``shapes`` protocol.

A small 3D CNN trained by vfbench (``vfbench weights train shapes-net``) on the two factors of the
built-in ``shapes`` dataset: **content** (shape x colour x texture, predicted as three factor heads
whose product is the 120-way content posterior) and **motion** (8 trajectory families).

* FVD / KVD of the ``shapes`` protocol use its penultimate features (``features``, 128-d after
  global space-time average pooling), in the same role I3D's logits play for real video.
* IS uses its content posteriors (``probs``, 120-way); ``probs_motion`` is the 8-way motion one.
* The content/motion disentanglement score (VideoFusion Sec. 4.7) uses its predicted labels.

Preprocessing (part of the protocol, recorded in ``describe()``): every frame is resized to
32x32 with anti-aliased bilinear interpolation (``torch.nn.functional.interpolate(...,
antialias=True)``, skipped when already 32x32), then mapped to [-1, 1]; any clip length >= 4
frames works (global temporal pooling). These numbers are only comparable with other numbers
of this extractor on ``shapes``, never with I3D FVD on real data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vfbench.clips import check_clips
from vfbench.errors import WeightsError
from vfbench.metrics.base import FeatureExtractor
from vfbench.registry import EXTRACTORS

INPUT_SIZE = 32
MIN_FRAMES = 4
FEATURE_DIM = 128
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "shapes_net.safetensors"
CARD_FILE = WEIGHTS_DIR / "shapes_net.json"
# factor sizes of the shapes dataset (vfbench.data.shapes): shape, colour, texture, motion
FACTORS = {"shape": 5, "colour": 6, "texture": 4, "motion": 8}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class ShapesNet(nn.Module):
    """[B, 3, T, 32, 32] in [-1, 1] -> features [B, 128] and per-factor logits.

    Shapes are only ~8 pixels wide at 32x32, so the stem keeps full resolution (a strided stem
    confused squares with diamonds) and the features take the spatial maximum (where the shape
    is) before the temporal mean.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 16, (1, 3, 3), padding=(0, 1, 1), bias=False),
                                  nn.GroupNorm(8, 16), nn.ReLU(inplace=True))       # 32x32, pool -> 16x16
        self.block1 = _block(16, 32)                                                # pool -> 8x8
        self.block2 = _block(32, 64)                                                # pool -> T/2 x 4x4
        self.block3 = _block(64, FEATURE_DIM)
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, n) for k, n in FACTORS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool3d(self.stem(x), (1, 2, 2))
        h = F.max_pool3d(self.block1(h), (1, 2, 2))
        h = F.max_pool3d(self.block2(h), (2, 2, 2), ceil_mode=True)
        h = self.block3(h)
        return h.amax(dim=(3, 4)).mean(dim=2)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        f = self.features(x)
        out = {k: head(f) for k, head in self.heads.items()}
        out["features"] = f
        return out


def preprocess(clips: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, C, H, W] -> float32 [B, 3, T, 32, 32] in [-1, 1] (the protocol's resize)."""
    b, t, c, h, w = clips.shape
    x = clips.reshape(b * t, c, h, w).float()
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    x = x.div(127.5).sub(1.0)
    return x.reshape(b, t, c, INPUT_SIZE, INPUT_SIZE).permute(0, 2, 1, 3, 4).contiguous()


def content_log_posterior(logits: Dict[str, torch.Tensor]) -> torch.Tensor:
    """120-way log p(content) as the product of the shape, colour and texture posteriors.

    Ordering matches ``ShapesDataset.content_id``: ``(shape * 6 + colour) * 4 + texture``.
    """
    ls = F.log_softmax(logits["shape"].double(), -1)
    lc = F.log_softmax(logits["colour"].double(), -1)
    lt = F.log_softmax(logits["texture"].double(), -1)
    joint = ls[:, :, None, None] + lc[:, None, :, None] + lt[:, None, None, :]
    return joint.reshape(joint.shape[0], -1)


def save_weights(model: ShapesNet, path: Path) -> str:
    """Write the weights as safetensors (atomically); return their sha256."""
    from safetensors.torch import save

    from vfbench.atomic import atomic_write_bytes
    from vfbench.provenance import sha256_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state))
    return sha256_file(path)


def load_shapes_net(path: Optional[Path] = None) -> tuple:
    """(model, sha256) from a safetensors file (default: the weights shipped in the package)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vfbench.provenance import sha256_file

    path = Path(path) if path else WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"shapes-net weights {path} are missing; reinstall vfbench or rebuild them with"
                           " `vfbench weights train shapes-net`")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"shapes-net weights {path} are not a readable safetensors file ({exc});"
                           " rebuild them with `vfbench weights train shapes-net`") from None
    model = ShapesNet()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path} does not hold shapes-net weights of this architecture ({first})") from None
    model.eval()
    return model, sha256_file(path)


def weights_card() -> Dict[str, Any]:
    """The shipped weights' card: sha256, test accuracies, the command that reproduces them."""
    if CARD_FILE.is_file():
        return json.loads(CARD_FILE.read_text())
    return {}


@EXTRACTORS.register("shapes-net", description="built-in 3D CNN on the shapes factors (features, content probs)")
class ShapesNetExtractor(FeatureExtractor):
    """uint8 clips -> {features [B,128], probs [B,120] (content), probs_motion [B,8], labels}."""

    name = "shapes-net"
    outputs = ("features", "probs", "probs_motion")
    min_frames = MIN_FRAMES

    def __init__(self, weights: Optional[str] = None, device: str = "cpu", batch_size: int = 64):
        self.model, self.sha256 = load_shapes_net(Path(weights) if weights else None)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = int(batch_size)

    def extract(self, clips) -> Dict[str, np.ndarray]:
        if isinstance(clips, np.ndarray):
            clips = torch.from_numpy(clips)
        check_clips(clips, "clips for shapes-net", min_frames=MIN_FRAMES)
        outs: Dict[str, list] = {"features": [], "probs": [], "probs_motion": []}
        with torch.inference_mode():
            for i in range(0, clips.shape[0], self.batch_size):
                x = preprocess(clips[i:i + self.batch_size]).to(self.device)
                out = self.model(x)
                outs["features"].append(out["features"].double().cpu().numpy())
                outs["probs"].append(content_log_posterior(out).exp().cpu().numpy())
                outs["probs_motion"].append(F.softmax(out["motion"].double(), -1).cpu().numpy())
        return {k: np.concatenate(v) for k, v in outs.items()}

    def predict_labels(self, clips) -> Dict[str, np.ndarray]:
        """Predicted content (0..119) and motion (0..7) labels."""
        out = self.extract(clips)
        return {"content": out["probs"].argmax(1), "motion": out["probs_motion"].argmax(1)}

    def describe(self) -> Dict[str, Any]:
        card = weights_card()
        return {"name": self.name, "weights_sha256": self.sha256, "feature_dim": FEATURE_DIM,
                "preprocessing": f"antialiased bilinear resize to {INPUT_SIZE}x{INPUT_SIZE}, x/127.5-1,"
                                 " spatial max then temporal mean pooling",
                "trained_with": card.get("command"), "version": "shapes-net-v1"}
