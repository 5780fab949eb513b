"""The I3D feature extractor of FVD and KVD: uint8 clips -> 400 time-averaged Kinetics logits.

Presets (spec/metrics.md; every one recorded in ``describe()``):

* ``reference`` (default) -- the google-research ``frechet_video_distance`` preprocessing: every
  frame stretched to 224x224 by TF1 legacy bilinear resize in float32 on the uint8 values, then
  ``2x/255 - 1``; TF-Hub I3D with BatchNorm eps 1e-3.
* ``stylegan-v`` -- the same network and preprocessing (StyleGAN-V's I3D is the TF-Hub model); its
  protocol differs downstream: biased covariance, float->uint8 by rounding, the first N videos of
  the dataset with one random window each. Recorded so the statistics stage can honour it.
* ``tats`` -- the VideoGPT/TATS port: BatchNorm eps 1e-5 and torch ``F.interpolate`` bilinear
  (align_corners=False, i.e. half-pixel centres) on the float 0..255 values, then ``2x/255 - 1``
  (TATS ``preprocess_i3d``); downstream: float->uint8 by truncation (``.byte()``), random 16-frame
  windows of the shuffled training set.
* ``latte`` -- Latte's evaluation: StyleGAN-V's FVD code (as ``stylegan-v``) with the real clips read at
  Latte's training frame interval: every 3rd frame, every 6th on TaiChi (``real_stride``).
* ``cd-fvd`` -- content-debiased FVD's I3D path: the pytorch-i3d port (BatchNorm eps 1e-5) after a plain
  torch bilinear stretch to 224x224 (no crop, no antialias), unbiased covariance.

Every preset's full list of choices and its source: ``vfbench protocols`` (``metrics/conventions.py``).

Implementations (``impl``, recorded in ``describe()``): ``fused`` (default) runs ``FusedI3D`` of
``metrics/i3d_fused.py`` (channels-last, BatchNorm folded, merged 1x1x1 GEMMs; 1.8x the throughput of a
straightforward eager port on CPU, logits within ~1e-5 of it); ``eager`` runs the layer-for-layer port
``metrics/i3d.py`` (NCDHW, BatchNorm as its own op). Both are fp32 and pass the known answers.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict

import numpy as np

from vfbench.errors import UnknownNameError, UsageError, check_positive
from vfbench.metrics.base import FeatureExtractor
from vfbench.registry import EXTRACTORS

#: Bump when anything that changes the features changes (it is part of cache keys via describe()).
VERSION = 1
SIZE = 224
IMPLS = {
    "fused": "FusedI3D (metrics/i3d_fused.py): NDHWC, BatchNorm folded in float64, merged 1x1x1 GEMMs, fp32",
    "eager": "I3D (metrics/i3d.py): the layer-for-layer port, NCDHW, BatchNorm as its own op, fp32",
}

# Each preset is a documented list of one codebase's choices, with its source. The keys of ``CHOICES``
# (metrics/conventions.py) are what ``vfbench protocols`` prints and ``vfbench protocols diff`` compares. Only
# ``bn_eps``, ``resize``, ``covariance``, ``quantisation``, ``real_clips`` (and ``real_stride`` where set) enter
# ``describe()`` and so the cache keys; the other keys document.
PRESETS: Dict[str, Dict[str, Any]] = {
    "reference": {
        "bn_eps": 1e-3,
        "resize": "tf1-legacy-bilinear",
        "description": "google-research frechet_video_distance / TF-Hub deepmind/i3d-kinetics-400/1",
        "resize_detail": "stretch every frame to 224x224, TF1 resize_bilinear (align_corners=False,"
                         " half_pixel_centers=False) in float32 on the uint8 values",
        "covariance": "unbiased (N-1)",
        "quantisation": "uint8 clips as given (generators round)",
        "real_clips": "protocol-defined",
        "network": "TF-Hub i3d-kinetics-400/1 (DeepMind rgb_scratch weights)",
        "real_frames": "the dataset's own stride (TaiChi 4, others 1)",
        "samples": "2048 real vs 2048 generated (fvd2048_16f)",
        "source": "google-research/google-research frechet_video_distance/frechet_video_distance.py"
                  " (Unterthiner et al. 2018); TaiChi stride 4 as MoCoGAN-HD/DIGAN/VideoFusion",
    },
    "stylegan-v": {
        "bn_eps": 1e-3,
        "resize": "tf1-legacy-bilinear",
        "description": "StyleGAN-V fvd2048_16f (TF-Hub I3D weights, same network and resize)",
        "resize_detail": "stretch every frame to 224x224, TF1 resize_bilinear (align_corners=False,"
                         " half_pixel_centers=False) in float32 on the uint8 values",
        "covariance": "biased (N)",
        "quantisation": "float -> uint8 by rounding",
        "real_clips": "the first N videos of the dataset, one random 16-frame window each",
        "network": "TF-Hub i3d-kinetics-400/1 as a TorchScript export",
        "real_frames": "consecutive frames (subsample_factor 1)",
        "samples": "2048 real vs 2048 generated (fvd2048_16f)",
        "source": "universome/stylegan-v src/metrics/frechet_video_distance.py, metric_utils.py",
    },
    "tats": {
        "bn_eps": 1e-5,
        "resize": "torch-bilinear",
        "description": "VideoGPT/TATS pytorch-i3d port (BatchNorm eps 1e-5, torch bilinear resize)",
        "resize_detail": "stretch every frame to 224x224, torch F.interpolate bilinear"
                         " (align_corners=False, half-pixel centres) on float 0..255",
        "covariance": "unbiased (N-1)",
        "quantisation": "float -> uint8 by truncation (.byte())",
        "real_clips": "random 16-frame windows of the shuffled training set",
        "network": "pytorch-i3d port (i3d_pretrained_400.pt), BatchNorm eps 1e-5",
        "real_frames": "the dataset's own stride (TaiChi 4, others 1)",
        "samples": "2048 real vs 2048 generated (FVD_SAMPLE_SIZE)",
        "crop": "shorter side to 224 then centre crop (the same as the stretch for the square clips vfbench scores)",
        "source": "songweige/TATS tats/fvd/fvd.py (preprocess_single), after wilson1yan/VideoGPT",
    },
    "latte": {
        "bn_eps": 1e-3,
        "resize": "tf1-legacy-bilinear",
        "description": "Latte: StyleGAN-V's FVD code with real clips at the training frame interval",
        "resize_detail": "stretch every frame to 224x224, TF1 resize_bilinear (align_corners=False,"
                         " half_pixel_centers=False) in float32 on the uint8 values",
        "covariance": "biased (N)",
        "quantisation": "float -> uint8 by rounding",
        "real_clips": "the first N videos of the dataset, one random 16-frame window each",
        "real_stride": {"*": 3, "taichi": 6},
        "network": "TF-Hub i3d-kinetics-400/1 as a TorchScript export",
        "real_frames": "every 3rd frame (subsample_factor = training frame_interval 3); TaiChi every 6th",
        "samples": "2048 real vs 2048 generated (fvd2048_16f)",
        "source": "Vchitect/Latte issues #65 and #94 (subsample_factor = frame_interval 3),"
                  " #115 (TaiChi: realdata_subsample_factor 6)",
    },
    "cd-fvd": {
        "bn_eps": 1e-5,
        "resize": "torch-bilinear",
        "description": "content-debiased FVD (cd-fvd), its I3D path",
        "resize_detail": "stretch every frame to 224x224, torch F.interpolate bilinear"
                         " (align_corners=False, half-pixel centres) on float 0..255",
        "covariance": "unbiased (N-1)",
        "quantisation": "uint8 clips as given (generators round)",
        "real_clips": "every real video (n_real='full'); vfbench draws the metric's num_real random windows of"
                      " the shuffled training set instead (departure, named here)",
        "network": "pytorch-i3d port (i3d_pretrained_400.pt), BatchNorm eps 1e-5",
        "real_frames": "the dataset's own stride (TaiChi 4, others 1)",
        "samples": "all real videos vs 2048 generated (n_fake=2048)",
        "source": "songweige/content-debiased-fvd cdfvd/third_party/i3d/utils.py (preprocess_i3d), cdfvd/fvd.py"
                  " (Ge et al., CVPR 2024)",
    },
}


def preprocess(clips, resize: str = "tf1-legacy-bilinear", channels_last: bool = False):
    """uint8 ``[B, T, C, H, W]`` -> float32 ``[B, 3, T, 224, 224]`` in [-1, 1] (the I3D input), or
    ``[B, T, 224, 224, 3]`` with ``channels_last`` (FusedI3D's input; the same values)."""
    import torch
    import torch.nn.functional as F

    from vfbench.metrics.tf_resize import resize_bilinear_tf1

    x = torch.as_tensor(clips)
    b, t, c, h, w = x.shape
    frames = x.reshape(b * t, c, h, w)
    if (h, w) == (SIZE, SIZE):
        frames = frames.to(torch.float32)  # both resizes are the identity at the input size
    elif resize == "tf1-legacy-bilinear":
        frames = resize_bilinear_tf1(frames, (SIZE, SIZE))
    elif resize == "torch-bilinear":
        frames = F.interpolate(frames.to(torch.float32), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    else:
        raise UsageError(f"unknown I3D resize {resize!r}: use tf1-legacy-bilinear or torch-bilinear")
    video = frames.reshape(b, t, c, SIZE, SIZE)
    video = video.permute(0, 1, 3, 4, 2) if channels_last else video.permute(0, 2, 1, 3, 4)
    return (2.0 * video / 255.0 - 1.0).contiguous()  # the reference's `2. * x / 255. - 1`


@contextlib.contextmanager
def _strict_fp32():
    """Disable TF32 convolutions/matmuls (on by default for cuDNN on Ampere+): the reference is fp32."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@EXTRACTORS.register("i3d", description="I3D Kinetics-400 logits (TF-Hub FVD/KVD network), presets"
                                        " reference | stylegan-v | tats | latte | cd-fvd")
class I3DExtractor(FeatureExtractor):
    """FVD/KVD features: 400 pre-softmax I3D logits averaged over time, float64.

    ``weights``: a file for ``load_i3d_weights`` (None: the cached reference weights, fetched on
    first use unless ``offline``). ``preset``: one of ``PRESETS``. ``progress``: where fetch messages
    go (default stderr; None silences them).
    """

    name = "i3d"
    outputs = ("features",)
    min_frames = 9
    feature_dim = 400

    def __init__(self, weights=None, preset: str = "reference", device: str = "cpu", batch_size: int = 8,
                 offline: bool = False, progress="stderr", impl: str = "fused"):
        import torch

        from vfbench.metrics.i3d import I3D
        from vfbench.metrics.i3d_weights import fetch_i3d, load_i3d_weights, to_stderr

        if preset not in PRESETS:
            raise UnknownNameError("I3D preset", preset, PRESETS)
        if impl not in IMPLS:
            raise UnknownNameError("I3D implementation", impl, IMPLS)
        self.impl = impl
        check_positive("--batch-size", batch_size)
        self.preset, self.batch_size = preset, int(batch_size)
        self.config = PRESETS[preset]
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UsageError(f"--device {device!r} is not a torch device ({exc}); use cpu, cuda or cuda:N") from None
        if weights is None:
            weights = fetch_i3d(offline=offline, progress=to_stderr if progress == "stderr" else progress)
        self.weights = load_i3d_weights(weights)
        self.net = I3D(bn_eps=self.config["bn_eps"], bn_scale=self.weights.bn_scale)
        self.net.load_state_dict(self.weights.state)
        if impl == "fused":
            from vfbench.metrics.i3d_fused import FusedI3D

            self.net = FusedI3D(self.net)
        try:
            self.net.to(self.device).eval()
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"--device {device} is not usable here ({exc}); use --device cpu") from None
        self.weights.state = {}  # the network holds the tensors now

    def extract(self, clips) -> Dict[str, np.ndarray]:
        import torch

        from vfbench.clips import check_clips

        check_clips(clips, min_frames=self.min_frames)
        clips = torch.as_tensor(clips)
        out = []
        with torch.inference_mode(), _strict_fp32():
            for start in range(0, clips.shape[0], self.batch_size):
                x = preprocess(clips[start:start + self.batch_size], self.config["resize"],
                               channels_last=self.impl == "fused")
                out.append(self.net(x.to(self.device)).to("cpu", torch.float64))
        return {"features": torch.cat(out).numpy()}

    def describe(self) -> Dict[str, Any]:
        from vfbench.metrics.i3d import MIN_FRAMES

        w = self.weights
        return {
            "name": self.name,
            "version": VERSION,
            "preset": self.preset,
            "preset_description": self.config["description"],
            "network": "I3D Inception-v1 inflated, Kinetics-400 (TF-Hub deepmind/i3d-kinetics-400/1 graph)",
            "embedding": "400 pre-softmax logits averaged over time",
            "feature_dim": self.feature_dim,
            "bn_eps": self.config["bn_eps"],
            "resize": self.config["resize"],
            "resize_detail": self.config["resize_detail"],
            "input": "uint8 [B, T, 3, H, W] -> [-1, 1] via 2x/255 - 1 after resize",
            "min_frames": MIN_FRAMES,
            "covariance": self.config["covariance"],
            "quantisation": self.config["quantisation"],
            "real_clips": self.config["real_clips"],
            **({"real_stride": self.config["real_stride"]} if "real_stride" in self.config else {}),
            "weights": w.path.name,
            "weights_format": w.format,
            "weights_sha256": w.sha256,
            "weights_content_sha256": w.content_sha256,
            "weights_reproduce_reference": w.reproduces_reference,
            "weights_notes": list(w.notes),
            "precision": "fp32",
            "implementation": self.impl,
            "implementation_detail": IMPLS[self.impl],
        }
