"""Optional FVD backend on TensorFlow itself (extra ``[tf]``): the reference embeddings, for cross-checks.

The embeddings come from a TF-Hub I3D module (a local SavedModel / hub-module directory, or a
TF-Hub handle the user passes, handed to ``tensorflow_hub.load`` verbatim) with the reference
preprocessing done by TF: ``tf.compat.v1.image.resize_bilinear`` (align_corners=False,
half_pixel_centers=False) to 224x224 and ``2x/255 - 1`` (google-research
``frechet_video_distance``). TensorFlow runs in a child process (``python -c``), so it never loads
into vfbench's process (no clash with torch's threads or CUDA context); clips go to it as ``.npy``
files and embeddings come back the same way. The Fréchet distance is then vfbench's own
(``vfbench.metrics.fvd``), so only the network differs from the PyTorch path.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from vfbench.errors import UsageError, VfbenchError

# The child: argv = [work_dir, module, batch_size]; reads real.npy / fake.npy ([B, T, H, W, C]
# uint8), writes real_emb.npy / fake_emb.npy ([B, D] float64).
_CHILD = r"""
import os, sys
import numpy as np
import tensorflow as tf

work, module, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.path.isdir(module):
    obj = tf.saved_model.load(module)
else:
    import tensorflow_hub as hub
    obj = hub.load(module)
fn = obj.signatures["default"] if hasattr(obj, "signatures") and "default" in obj.signatures else obj
# signature functions take their one input by keyword; its name differs between modules
_, named = getattr(fn, "structured_input_signature", ((), {}))
call = (lambda x: fn(**{next(iter(named)): x})) if named else fn


def embed(videos):
    out = []
    for start in range(0, len(videos), batch):
        v = tf.constant(videos[start:start + batch])
        b, t, h, w, c = v.shape
        frames = tf.reshape(v, [b * t, h, w, c])
        frames = tf.compat.v1.image.resize_bilinear(frames, (224, 224), align_corners=False,
                                                    half_pixel_centers=False)
        x = tf.reshape(frames, [b, t, 224, 224, c])
        x = 2.0 * tf.cast(x, tf.float32) / 255.0 - 1.0
        y = call(x)
        if isinstance(y, dict):
            y = y["default"] if "default" in y else next(iter(y.values()))
        out.append(np.asarray(y, np.float64).reshape(b, -1))
    return np.concatenate(out)


for name in ("real", "fake"):
    np.save(os.path.join(work, name + "_emb.npy"), embed(np.load(os.path.join(work, name + ".npy"))))
"""


def tf_available() -> bool:
    """Whether TensorFlow is installed (checked without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def _to_tf_layout(clips, name: str) -> np.ndarray:
    from vfbench.clips import check_clips

    check_clips(clips, name, min_frames=9)
    arr = clips.numpy() if hasattr(clips, "numpy") else np.asarray(clips)
    return np.ascontiguousarray(arr.transpose(0, 1, 3, 4, 2))  # [B, T, C, H, W] -> TF's [B, T, H, W, C]


def tf_embeddings(real, fake, module: str, *, batch_size: int = 16, python: Optional[str] = None,
                  timeout: Optional[float] = None) -> Dict[str, np.ndarray]:
    """I3D embeddings of uint8 clips ``[B, T, C, H, W]`` computed by TensorFlow in a child process."""
    if not module:
        raise UsageError("tf_embeddings needs a tf-module: give a local TF-Hub I3D module directory or a TF-Hub handle")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive number, got {batch_size!r}")
    with tempfile.TemporaryDirectory(prefix="vfbench-tf-") as work:
        np.save(Path(work) / "real.npy", _to_tf_layout(real, "real clips"))
        np.save(Path(work) / "fake.npy", _to_tf_layout(fake, "fake clips"))
        cmd = [python or sys.executable, "-c", _CHILD, work, str(module), str(batch_size)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VfbenchError(f"the TensorFlow FVD backend did not finish within {timeout} s; raise the timeout"
                               " or use the PyTorch backend") from None
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()
            if any("No module named 'tensorflow" in line for line in err):
                raise UsageError("the TensorFlow FVD backend needs TensorFlow: pip install 'vfbench[tf]'"
                                 " (or use the default PyTorch backend)")
            raise VfbenchError(f"the TensorFlow FVD backend failed on module {module}: "
                               f"{err[-1] if err else 'exit code ' + str(proc.returncode)}")
        return {name: np.load(Path(work) / f"{name}_emb.npy", allow_pickle=False) for name in ("real", "fake")}


def tf_fvd(real, fake, module: str, *, batch_size: int = 16, unbiased: bool = True, **kw) -> float:
    """FVD between uint8 clip sets with the embeddings of a TF-Hub I3D module (reference arithmetic)."""
    from vfbench.metrics.fvd import features_to_fvd

    emb = tf_embeddings(real, fake, module, batch_size=batch_size, **kw)
    return features_to_fvd(emb["real"], emb["fake"], unbiased=unbiased)
