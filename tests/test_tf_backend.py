"""The optional TensorFlow FVD backend: runs in a child process; tested with a tiny local SavedModel.

TensorFlow is only ever imported in child processes here too, so the tests can also check that the
backend never loads it into the calling process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vfbench.errors import UsageError
from vfbench.metrics import tf_backend

needs_tf = pytest.mark.skipif(not tf_backend.tf_available(), reason="TensorFlow is not installed (extra [tf])")


def _clips(seed, n=3, frames=9, size=16):
    return np.random.RandomState(seed).randint(0, 256, (n, frames, 3, size, size)).astype(np.uint8)


def _run_tf(code: str, *args) -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_input_is_refused_before_any_child_runs():
    with pytest.raises(UsageError, match="tf-module"):
        tf_backend.tf_embeddings(_clips(0), _clips(1), "")
    with pytest.raises(UsageError, match="at least 9"):
        tf_backend.tf_embeddings(_clips(0, frames=8), _clips(1), "some/module")


@pytest.mark.skipif(tf_backend.tf_available(), reason="TensorFlow is installed: the missing-TF message cannot be shown")
def test_missing_tensorflow_says_how_to_install(tmp_path):
    with pytest.raises(UsageError, match=r"vfbench\[tf\]"):
        tf_backend.tf_embeddings(_clips(0), _clips(1), str(tmp_path))


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory):
    """A SavedModel with the TF-Hub I3D signature ("default": [B, T, 224, 224, 3] -> [B, 400]): a fixed
    linear map of the per-channel means, so the embeddings can be computed without TF."""
    if not tf_backend.tf_available():
        pytest.skip("TensorFlow is not installed (extra [tf])")
    root = tmp_path_factory.mktemp("tf")
    weights = np.random.RandomState(0).randn(3, 400).astype(np.float32)
    np.save(root / "w.npy", weights)
    _run_tf("""
        import sys
        import numpy as np
        import tensorflow as tf

        w = tf.constant(np.load(sys.argv[1]))

        class Tiny(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, None, 224, 224, 3], tf.float32)])
            def default(self, x):
                return {"default": tf.matmul(tf.reduce_mean(x, axis=[1, 2, 3]), w)}

        m = Tiny()
        tf.saved_model.save(m, sys.argv[2], signatures={"default": m.default})
    """, root / "w.npy", root / "tiny_i3d")
    return root / "tiny_i3d", weights


@needs_tf
def test_tiny_savedmodel_embeddings_and_fvd(tiny_module):
    from vfbench.metrics.fvd import features_to_fvd
    from vfbench.metrics.i3d_extractor import preprocess

    path, weights = tiny_module
    real, fake = _clips(0, n=5), _clips(1, n=6)
    emb = tf_backend.tf_embeddings(real, fake, str(path), batch_size=2)
    assert emb["real"].shape == (5, 400) and emb["fake"].shape == (6, 400)
    # the same map on vfbench's own reference preprocessing (TF1 legacy resize, 2x/255 - 1)
    ours = preprocess(torch.from_numpy(real)).double().mean(dim=(2, 3, 4)).numpy() @ weights.astype(np.float64)
    np.testing.assert_allclose(emb["real"], ours, rtol=1e-4, atol=1e-4)
    fvd = tf_backend.tf_fvd(real, fake, str(path), batch_size=4)
    assert fvd == pytest.approx(features_to_fvd(emb["real"], emb["fake"]), rel=1e-6)
    assert "tensorflow" not in sys.modules  # TF only ever ran in children


@needs_tf
def test_tf1_resize_matches_tensorflow(tmp_path):
    from vfbench.metrics.tf_resize import resize_bilinear_tf1

    frames = np.random.RandomState(3).randint(0, 256, (4, 64, 48, 3)).astype(np.uint8)
    np.save(tmp_path / "in.npy", frames)
    _run_tf("""
        import sys
        import numpy as np
        import tensorflow as tf

        x = tf.constant(np.load(sys.argv[1]))
        y = tf.compat.v1.image.resize_bilinear(x, (224, 224), align_corners=False, half_pixel_centers=False)
        np.save(sys.argv[2], y.numpy())
    """, tmp_path / "in.npy", tmp_path / "out.npy")
    expected = np.load(tmp_path / "out.npy")
    ours = resize_bilinear_tf1(torch.from_numpy(frames).permute(0, 3, 1, 2), (224, 224)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ours, expected)  # bit for bit: same float32 operations in the same order
