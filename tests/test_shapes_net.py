"""The built-in shapes-net extractor and the disentanglement score."""

import json

import numpy as np
import pytest
import torch

from vfbench.data.shapes import ShapesDataset
from vfbench.errors import UsageError, WeightsError
from vfbench.metrics import shapes_net as sn
from vfbench.metrics.disentanglement import chance_agreement, disentanglement_score, pairwise_agreement


def test_preprocess_resizes_and_maps_range():
    clips = torch.full((2, 4, 3, 64, 64), 255, dtype=torch.uint8)
    x = sn.preprocess(clips)
    assert x.shape == (2, 3, 4, 32, 32)
    assert torch.allclose(x, torch.ones_like(x))
    small = torch.randint(0, 256, (1, 4, 3, 32, 32), dtype=torch.uint8)
    y = sn.preprocess(small)  # already the protocol size: no resampling at all
    assert torch.equal(y.permute(0, 2, 1, 3, 4), small.float() / 127.5 - 1)


@pytest.mark.parametrize("shape,colour,texture", [(0, 0, 0), (4, 5, 3), (2, 3, 1)])
def test_content_posterior_order_matches_dataset_ids(shape, colour, texture):
    logits = {k: torch.zeros(1, n) for k, n in sn.FACTORS.items()}
    logits["shape"][0, shape] = logits["colour"][0, colour] = logits["texture"][0, texture] = 20.0
    joint = sn.content_log_posterior(logits).exp()
    assert joint.shape == (1, ShapesDataset.num_content)
    assert int(joint.argmax()) == ShapesDataset.content_id(shape, colour, texture)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_agreement_known_answers():
    assert pairwise_agreement(np.array([[1, 1, 1], [2, 2, 3]])) == pytest.approx((1 + 1 / 3) / 2)
    assert chance_agreement(np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    s = disentanglement_score(np.array([[5, 5], [6, 6]]), np.array([[0, 1], [2, 3]]))
    assert s["content_agreement"] == 1.0 and s["motion_agreement"] == 0.0
    # chance: content labels 5,5,6,6 -> 0.5, motion 0,1,2,3 -> 0.25; kappas 1.0 and -1/3
    assert s["content_kappa"] == pytest.approx(1.0) and s["motion_kappa"] == pytest.approx(-1 / 3)
    assert s["score"] == pytest.approx(1 / 3)
    collapsed = disentanglement_score(np.array([[7, 7], [7, 7]]), np.array([[1, 1], [1, 1]]))
    assert collapsed["content_agreement"] == 1.0 and collapsed["score"] == 0.0  # all one label: no evidence
    with pytest.raises(UsageError, match="at least 2 clips"):
        pairwise_agreement(np.array([[1], [2]]))


def test_corrupt_or_foreign_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        sn.load_shapes_net(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(WeightsError, match="architecture"):
        sn.load_shapes_net(other)
    with pytest.raises(WeightsError, match="missing"):
        sn.load_shapes_net(tmp_path / "absent.safetensors")


def test_shipped_weights_match_card_and_classify_test_clips():
    from vfbench.provenance import sha256_file

    card = json.loads(sn.CARD_FILE.read_text())
    assert sha256_file(sn.WEIGHTS_FILE) == card["sha256"]
    ext = sn.ShapesNetExtractor()
    assert ext.describe()["weights_sha256"] == card["sha256"]
    ds = ShapesDataset("test", frames=16, size=32, length=96)
    clips = torch.stack([ds[i]["video"] for i in range(len(ds))])
    out = ext.extract(clips)
    assert out["features"].shape == (96, sn.FEATURE_DIM) and out["features"].dtype == np.float64
    assert np.allclose(out["probs"].sum(1), 1) and np.allclose(out["probs_motion"].sum(1), 1)
    pred = ext.predict_labels(clips)
    motion_acc = np.mean(pred["motion"] == np.array([ds[i]["motion"] for i in range(len(ds))]))
    content_acc = np.mean(pred["content"] == np.array([ds[i]["content"] for i in range(len(ds))]))
    # chance is 1/8 and 1/120; the shipped weights must be far above it (card: test-split accuracy)
    assert motion_acc > 0.6, motion_acc
    assert content_acc > 0.5, content_acc


def test_extractor_refuses_float_and_short_clips():
    ext = sn.ShapesNetExtractor()
    with pytest.raises(UsageError, match="uint8"):
        ext.extract(torch.zeros(1, 8, 3, 32, 32))
    with pytest.raises(UsageError, match="frames"):
        ext.extract(torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8))
