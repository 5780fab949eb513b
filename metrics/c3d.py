"""C3D on UCF-101: the classifier of the video Inception Score (Saito et al., TGAN 2017 / TGANv2 2020).

Network: C3D (Tran et al. 2015), Sports-1M pre-trained and fine-tuned on UCF-101 (Caffe
``c3d_ucf101_finetune_whole_iter_20000``), as converted to chainer by TGAN's authors:
``conv3d_deepnetA_ucf.npz`` with the Caffe mean clip ``mean2.npz``. Input 16 x 112 x 112 BGR,
mean subtracted; 3x3x3 convolutions (padding 1) conv1a 64, pool1 (1,2,2); conv2a 128, pool2;
conv3a/3b 256, pool3; conv4a/4b 512, pool4; conv5a/5b 512, pool5 (chainer ``cover_all`` pooling =
ceil mode, so pool5 gives 512 x 1 x 4 x 4 = 8192); fc6 4096, fc7 4096, fc8 101, softmax.

The weights are never bundled or downloaded: the user gives the file (``--c3d-weights``).

* ``.npz``: the chainer pair. Arrays ``<layer>/W`` and ``<layer>/b`` (any prefix before the
  layer name), chainer layouts: conv ``W`` (out, in, kt, kh, kw), linear ``W`` (out, in).
  ``mean2.npz`` (key ``mean``, 3 x 16 x 128 x 171 values, BGR) is looked for beside the weights
  unless given. Both are read with ``np.load(allow_pickle=False)``.
* ``.pt`` / ``.pth``: StyleGAN-V's TorchScript ``c3d_ucf101.pt`` (``torch.jit.load`` on CPU). It
  is called with uint8 clips ``[B, 3, T, H, W]`` and does its own preprocessing; it must return
  ``[B, 101]`` probabilities. **A TorchScript file is a program**: loading it runs code from the
  file, so only use files you trust.

Protocols (``preset``; both map frames with ``(x + 1) * 128 - mean`` from x in [-1, 1], RGB->BGR):

* ``tgan`` (TGAN v1): every frame resized to 128x128 with bicubic interpolation, the mean
  (width-cropped 21:149) subtracted, centre crop 112 (rows and columns 8:120).
* ``tganv2`` (TGANv2; what VideoGPT/TATS report): frames resized straight to 112x112 bilinearly
  (chainer ``resize_images`` sampling, align_corners=True); the mean's central 112x112 window of
  the same region as TGAN v1's (rows 8:120, columns 29:141) is subtracted.

Verified against TGAN v1's evaluation script: the mean file layout and crop (3 x 16 x 128 x 171,
columns 21:149, then 8:120), the BGR order and the ``x * 128 + 128`` arithmetic. Not verified
against TGANv2's own code (unavailable here): its mean window and resize sampling above are this
module's reading of the spec and are recorded in ``describe()``; as is the StyleGAN-V TorchScript
calling convention (uint8 ``[B, 3, T, H, W]`` in, probabilities out), which is checked at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from vfbench.arrays import ZIP_ERRORS, load_npz
from vfbench.errors import UsageError, WeightsError
from vfbench.metrics.base import FeatureExtractor
from vfbench.registry import EXTRACTORS

CONV_LAYERS = [("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
               ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512)]
FC_IN = 512 * 1 * 4 * 4  # pool5 output for a 16 x 112 x 112 clip
NUM_CLASSES = 101
MEAN_SHAPE = (3, 16, 128, 171)
PRESETS = ("tgan", "tganv2")


def _torch():
    import torch

    return torch


def build_c3d(fc6: int = 4096, fc7: int = 4096, num_classes: int = NUM_CLASSES):
    """The C3D network (torch module), with randomly initialised weights."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class C3D(nn.Module):
        def __init__(self):
            super().__init__()
            for name, cin, cout in CONV_LAYERS:
                setattr(self, name, nn.Conv3d(cin, cout, 3, padding=1))
            self.fc6 = nn.Linear(FC_IN, fc6)
            self.fc7 = nn.Linear(fc6, fc7)
            self.fc8 = nn.Linear(fc7, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """x: float [B, 3, 16, 112, 112] BGR, mean subtracted -> logits [B, num_classes]."""
            h = F.relu(self.conv1a(x))
            h = F.max_pool3d(h, (1, 2, 2), (1, 2, 2), ceil_mode=True)
            h = F.max_pool3d(F.relu(self.conv2a(h)), 2, 2, ceil_mode=True)
            h = F.relu(self.conv3b(F.relu(self.conv3a(h))))
            h = F.max_pool3d(h, 2, 2, ceil_mode=True)
            h = F.relu(self.conv4b(F.relu(self.conv4a(h))))
            h = F.max_pool3d(h, 2, 2, ceil_mode=True)
            h = F.relu(self.conv5b(F.relu(self.conv5a(h))))
            h = F.max_pool3d(h, 2, 2, ceil_mode=True)
            if h.shape[1:] != (512, 1, 4, 4):
                raise UsageError(f"C3D expects 16 x 112 x 112 input clips; pool5 gave {tuple(h.shape[1:])}")
            h = h.flatten(1)
            h = F.relu(self.fc6(h))  # dropout is the identity at test time
            h = F.relu(self.fc7(h))
            return self.fc8(h)

    return C3D()


def _weights_limit() -> int:
    """The most bytes a C3D UCF-101 weights file can declare: its parameters (fc6/fc7 4096 wide) as float64,
    twice over (a file may carry extra arrays such as optimiser state)."""
    params = sum(cout * cin * 27 + cout for _, cin, cout in CONV_LAYERS)
    params += FC_IN * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * NUM_CLASSES + NUM_CLASSES
    return 2 * 8 * params


def _find(arrays: Dict[str, np.ndarray], layer: str, param: str, path) -> np.ndarray:
    hits = [k for k in arrays if k == f"{layer}/{param}" or k.endswith(f"/{layer}/{param}")]
    if len(hits) != 1:
        raise WeightsError(f"{path} has {'no' if not hits else 'several'} array(s) named '{layer}/{param}':"
                           " it is not the chainer conv3d_deepnetA_ucf.npz C3D file (expected conv1a..conv5b,"
                           " fc6, fc7, fc8 with W and b)")
    return arrays[hits[0]]


def load_chainer_c3d(path) -> Dict[str, Any]:
    """Read the chainer ``conv3d_deepnetA_ucf.npz`` into a torch state dict (shapes verified)."""
    torch = _torch()
    path = Path(path)
    try:  # sizes from the members' headers, checked against the architecture before anything is allocated
        arrays = load_npz(path, _weights_limit(), "the C3D UCF-101 weights take (float64, with room to spare)")
    except (ValueError,) + ZIP_ERRORS as exc:
        raise WeightsError(f"{path} is not a readable C3D .npz file ({exc}); pass the chainer"
                           " conv3d_deepnetA_ucf.npz to --c3d-weights") from None
    sd = {}
    for name, cin, cout in CONV_LAYERS:
        w, b = _find(arrays, name, "W", path), _find(arrays, name, "b", path)
        if w.shape != (cout, cin, 3, 3, 3) or b.shape != (cout,):
            raise WeightsError(f"{path}: {name} has W {w.shape} and b {b.shape}, expected"
                               f" ({cout}, {cin}, 3, 3, 3) and ({cout},): not the C3D UCF-101 architecture")
        sd[f"{name}.weight"], sd[f"{name}.bias"] = w, b
    prev = FC_IN
    for name in ("fc6", "fc7", "fc8"):
        w, b = _find(arrays, name, "W", path), _find(arrays, name, "b", path)
        if w.ndim != 2 or w.shape[1] != prev or b.shape != (w.shape[0],):
            raise WeightsError(f"{path}: {name} has W {w.shape} and b {b.shape}, expected W (out, {prev}):"
                               " not the C3D architecture for 16 x 112 x 112 clips")
        sd[f"{name}.weight"], sd[f"{name}.bias"] = w, b
        prev = w.shape[0]
    if sd["fc8.weight"].shape[0] != NUM_CLASSES:
        raise WeightsError(f"{path}: fc8 has {sd['fc8.weight'].shape[0]} outputs, expected 101 UCF-101 classes")
    out = {}
    for k, v in sd.items():
        v = np.asarray(v, np.float32)
        if not np.isfinite(v).all():
            raise WeightsError(f"{path}: {k} contains NaN or inf; the file is corrupt, download it again")
        out[k] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def load_mean(path) -> np.ndarray:
    """The Caffe mean clip of ``mean2.npz`` as float32 [3, 16, 128, 171] (BGR)."""
    path = Path(path)
    try:  # the mean clip is 3 x 16 x 128 x 171 values: twice that in float64 is the most a real file holds
        z = load_npz(path, 2 * 8 * int(np.prod(MEAN_SHAPE)) + (1 << 16), "the C3D mean clip takes")
    except (ValueError,) + ZIP_ERRORS as exc:
        raise WeightsError(f"{path} is not a readable .npz file ({exc}); pass TGAN's mean2.npz") from None
    key = "mean" if "mean" in z else (next(iter(z)) if len(z) == 1 else None)
    if key is None:
        raise WeightsError(f"{path} has no array named 'mean'; put TGAN's mean2.npz beside the --c3d-weights file")
    m = np.asarray(z[key], np.float32)
    if m.size != int(np.prod(MEAN_SHAPE)):
        raise WeightsError(f"{path}: the mean has shape {m.shape} ({m.size} values), expected 3 x 16 x 128 x 171"
                           " (the C3D UCF-101 mean clip mean2.npz)")
    return m.reshape(MEAN_SHAPE)


def mean_for_preset(mean: np.ndarray, preset: str) -> np.ndarray:
    """The mean (BGR, [3, 16, H, W]) that each protocol subtracts: 128x128 (``tgan``) or 112x112."""
    m = mean[:, :, :, 21:21 + 128]  # the 128 x 128 window TGAN uses
    if preset == "tgan":
        return np.ascontiguousarray(m)
    return np.ascontiguousarray(m[:, :, 8:8 + 112, 8:8 + 112])


def preprocess(clips, mean_bgr, preset: str):
    """uint8 clips [B, T, 3, H, W] -> float32 [B, 3, 16, 112, 112] BGR minus mean, per protocol."""
    torch = _torch()
    import torch.nn.functional as F

    x = clips if isinstance(clips, torch.Tensor) else torch.from_numpy(np.asarray(clips))
    x = x[:, :16]
    b, t, c, h, w = x.shape
    # x in [-1, 1] is u / 127.5 - 1, so (x + 1) * 128 = u * 128 / 127.5
    x = x.reshape(b * t, c, h, w).to(torch.float32) * (128.0 / 127.5)
    if preset == "tgan":
        if (h, w) != (128, 128):
            x = F.interpolate(x, size=(128, 128), mode="bicubic", align_corners=False)
    else:
        if (h, w) != (112, 112):
            x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=True)
    x = x.reshape(b, t, c, *x.shape[-2:]).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W]
    x = x.flip(1)  # RGB -> BGR
    x = x - mean_bgr.to(x.device)
    if preset == "tgan":
        x = x[:, :, :, 8:8 + 112, 8:8 + 112]
    return x.contiguous()


@EXTRACTORS.register("c3d-ucf101", description="C3D UCF-101 class posteriors for the video IS (user-supplied weights)")
class C3DExtractor(FeatureExtractor):
    """``extract(uint8 clips [B, T, 3, H, W], T >= 16) -> {"probs": [B, 101], "logits": [B, 101]}``."""

    name = "c3d-ucf101"
    outputs = ("probs",)
    min_frames = 16

    def __init__(self, weights=None, preset: str = "tganv2", device: str = "cpu", batch_size: int = 8,
                 offline: bool = False, mean=None):
        from vfbench.provenance import sha256_file

        torch = _torch()
        if preset not in PRESETS:
            from vfbench.errors import did_you_mean

            raise UsageError(did_you_mean("C3D preset", preset, PRESETS))
        if weights is None:
            raise WeightsError("the video Inception Score needs the C3D UCF-101 weights, which vfbench cannot"
                               " download: get TGAN's conv3d_deepnetA_ucf.npz and mean2.npz (rezoo/tgan2 release"
                               " v1.0) or StyleGAN-V's c3d_ucf101.pt and pass the file with --c3d-weights PATH")
        weights = Path(os.path.expanduser(str(weights)))
        if weights.is_dir():
            weights = weights / "conv3d_deepnetA_ucf.npz"
        if not weights.is_file():
            raise WeightsError(f"C3D weights file {weights} does not exist; pass the chainer"
                               " conv3d_deepnetA_ucf.npz (with mean2.npz beside it) or c3d_ucf101.pt to --c3d-weights")
        self.preset = preset
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.weights_path = weights
        self.weights_sha256 = sha256_file(weights)
        self.mean_sha256 = None
        self.format = "torchscript" if weights.suffix in (".pt", ".pth") else "chainer-npz"
        if self.format == "torchscript":
            try:
                self.net = torch.jit.load(str(weights), map_location="cpu").eval().to(self.device)
            except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
                raise WeightsError(f"{weights} could not be loaded as TorchScript ({exc}); pass StyleGAN-V's"
                                   " c3d_ucf101.pt or the chainer .npz") from None
            self.mean = None
        else:
            mean = Path(os.path.expanduser(str(mean))) if mean else weights.with_name("mean2.npz")
            if not mean.is_file():
                raise WeightsError(f"the C3D mean file {mean} does not exist; put TGAN's mean2.npz beside the"
                                   " weights file")
            self.mean_path = mean
            self.mean_sha256 = sha256_file(mean)
            sd = load_chainer_c3d(weights)
            net = build_c3d(sd["fc6.weight"].shape[0], sd["fc7.weight"].shape[0])
            net.load_state_dict(sd)
            self.net = net.eval().to(self.device)
            self.mean = torch.from_numpy(mean_for_preset(load_mean(mean), preset))

    def describe(self) -> Dict[str, Any]:
        d = {"name": self.name, "preset": self.preset, "format": self.format,
             "weights_sha256": self.weights_sha256, "num_classes": NUM_CLASSES, "frames": 16,
             "input": "x in [-1,1] from uint8 u/127.5-1; (x+1)*128, RGB->BGR, minus mean2.npz"}
        if self.format == "torchscript":
            d["input"] = "uint8 [B,3,T,H,W] into the TorchScript file (its own preprocessing)"
        elif self.preset == "tgan":
            d.update(spatial="bicubic resize to 128x128, mean[:, :, :, 21:149], centre crop 8:120")
        else:
            d.update(spatial="bilinear (align_corners=True) resize to 112x112, mean[:, :, 8:120, 29:141]")
        if self.mean_sha256:
            d["mean_sha256"] = self.mean_sha256
        return d

    def extract(self, clips) -> Dict[str, np.ndarray]:
        from vfbench.clips import check_clips

        torch = _torch()
        check_clips(clips, "clips for C3D", min_frames=self.min_frames)
        probs, logits = [], []
        with torch.inference_mode():
            for i in range(0, clips.shape[0], self.batch_size):
                chunk = clips[i:i + self.batch_size]
                if not isinstance(chunk, torch.Tensor):
                    chunk = torch.from_numpy(np.ascontiguousarray(chunk))
                if self.format == "torchscript":
                    out = self.net(chunk[:, :16].permute(0, 2, 1, 3, 4).contiguous().to(self.device))
                    p = out.double().cpu().numpy()
                    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or not np.allclose(p.sum(1), 1, atol=1e-3):
                        raise WeightsError(f"{self.weights_path} returned {tuple(p.shape)} outputs that are not"
                                           " 101-class probabilities; it is not StyleGAN-V's c3d_ucf101.pt")
                    probs.append(p)
                    logits.append(np.log(np.clip(p, 1e-30, None)))
                    continue
                x = preprocess(chunk, self.mean, self.preset).to(self.device)
                lg = self.net(x).double()
                logits.append(lg.cpu().numpy())
                probs.append(torch.softmax(lg, dim=1).cpu().numpy())
        return {"probs": np.concatenate(probs), "logits": np.concatenate(logits)}
