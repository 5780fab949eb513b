"""The disentanglement evaluation of a VideoFusion run (vfbench.disentangle) end to end, tiny."""

import numpy as np
import pytest
import torch

from vfbench.errors import UsageError
from vfbench.results import ResultsStore


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from vfbench.data import build_dataset
    from vfbench.generators.vdm import VDM
    from vfbench.generators.videofusion import VideoFusion
    from vfbench.runs import create_run
    from vfbench.training import TrainConfig, train

    store = ResultsStore.open(tmp_path_factory.mktemp("results"))
    data = {"name": "shapes", "frames": 4, "size": 8}
    ds = build_dataset("shapes", frames=4, size=8, length=8)
    tc = TrainConfig(steps=1, batch_size=2, ckpt_every=1, device="cpu")
    for name, cls in (("vf", VideoFusion), ("vdm", VDM)):
        gcfg = cls.config_for("tiny", frames=4, size=8)
        run = create_run(store, name, cls.name, gcfg, data, tc)
        torch.manual_seed(0)
        train(run, cls(gcfg), ds, tc, progress=False)
    return store


def test_record_written_with_agreements(tiny_runs):
    from vfbench.disentangle import evaluate_disentanglement

    rec = evaluate_disentanglement("vf", tiny_runs, groups=2, per_group=3, seed=1, steps=2)
    d = rec["details"]
    assert 0.0 <= d["content_agreement"] <= 1.0 and 0.0 <= d["motion_agreement"] <= 1.0
    assert rec["value"] == pytest.approx(0.5 * (d["content_kappa"] + d["motion_kappa"]))
    assert -1.0 <= rec["value"] <= 1.0
    assert rec["num_fake"] == 12 and rec["metric"] == "disentangle_shapes"
    stored = tiny_runs.load_records()
    assert (stored["metric"] == "disentangle_shapes").sum() == 1
    again = evaluate_disentanglement("vf", tiny_runs, groups=2, per_group=3, seed=1, steps=2, write=False)
    assert again["value"] == rec["value"]  # same seed, same clips, same score


def test_shared_base_groups_share_the_keyframe(tiny_runs):
    """The control the score relies on: one base noise per group fixes the keyframe exactly (Sec. 3.5)."""
    from vfbench.disentangle import sample_control_groups
    from vfbench.runs import load_run

    from helpers_models import perturbed

    gen, _ = load_run(tiny_runs.run_dir("vf"))
    perturbed(gen)  # a 2-step run's x0 outputs are still near the flat init; the noise must matter here
    same_base, same_res = sample_control_groups(gen, 2, 3, seed=4, steps=2)
    assert same_base.shape == (2, 3, 4, 3, 8, 8) and same_base.dtype == torch.uint8
    key = gen.config.frames // 2
    for g in range(2):
        assert all(torch.equal(same_base[g, 0, key], same_base[g, j, key]) for j in range(1, 3))
    assert not torch.equal(same_res[0, 0, key], same_res[0, 1, key])  # different base: different keyframe


def test_refuses_other_generators_and_bad_groups(tiny_runs):
    from vfbench.disentangle import evaluate_disentanglement

    with pytest.raises(UsageError, match="needs a VideoFusion run"):
        evaluate_disentanglement("vdm", tiny_runs, groups=1, per_group=2, steps=1)
    with pytest.raises(UsageError, match="at least 2"):
        evaluate_disentanglement("vf", tiny_runs, groups=1, per_group=1, steps=1)
