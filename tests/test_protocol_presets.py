"""Other codebases' FVD conventions as named presets (issue 13), each tested on its distinguishing choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfbench.metrics.i3d_extractor import PRESETS, preprocess
from vfbench.metrics.protocols import get_spec


def _desc(preset: str) -> dict:
    """What ``I3DExtractor.describe()`` reports of a preset's downstream conventions."""
    cfg = PRESETS[preset]
    out = {k: cfg[k] for k in ("covariance", "real_clips")}
    if "real_stride" in cfg:
        out["real_stride"] = cfg["real_stride"]
    return out


def test_every_preset_documents_every_choice_and_a_source():
    from vfbench.metrics.conventions import CHOICES, presets

    table = presets()
    assert set(table) == {"reference", "stylegan-v", "tats", "latte", "cd-fvd"}
    for name, choices in table.items():
        assert [label for label, _ in CHOICES] == list(choices)
        assert all(v != "-" for v in choices.values()), name
        assert "/" in choices["source"], name  # a repository or file


def test_stylegan_v_biased_covariance_and_first_videos():
    spec = get_spec("fvd2048_16f").resolved(_desc("stylegan-v"))
    assert spec.unbiased_cov is False and spec.real_selection == "stylegan-v"
    ref = get_spec("fvd2048_16f").resolved(_desc("reference"))
    assert ref.unbiased_cov is True and ref.real_selection == "reference"


@pytest.mark.parametrize("dataset,stride", [("ucf101", 3), ("sky", 3), ("taichi", 6)])
def test_latte_reads_real_clips_at_its_frame_interval(dataset, stride, monkeypatch):
    """Latte: every 3rd frame, every 6th on TaiChi; the reference keeps the dataset's own (TaiChi 4)."""
    import vfbench.data as D
    from vfbench.data.folders import TaiChiDataset
    from vfbench.evaluation import build_real_dataset

    seen = []
    monkeypatch.setattr(D, "build_dataset", lambda name, **kw: seen.append((name, kw["stride"])) or "ds")
    latte = get_spec("fvd2048_16f").with_preset("latte").resolved(_desc("latte"), dataset)
    ref = get_spec("fvd2048_16f").resolved(_desc("reference"), dataset)
    assert latte.name == "fvd2048_16f-latte" and latte.real_stride == stride and ref.real_stride is None
    build_real_dataset(dataset, latte, 0)
    build_real_dataset(dataset, ref, 0)
    assert seen == [(dataset, stride), (dataset, None)]  # None: the dataset's default
    assert TaiChiDataset.default_stride == 4  # TaiChi: stride 4 (reference) vs 6 (latte)


def test_latte_stride_enters_the_extractor_description(monkeypatch):
    from vfbench.metrics.i3d_extractor import I3DExtractor

    ext = I3DExtractor.__new__(I3DExtractor)  # describe() of the preset without loading a network
    ext.preset, ext.config, ext.impl = "latte", PRESETS["latte"], "eager"
    ext.weights = type("W", (), {"path": type("P", (), {"name": "w"})(), "format": "f", "sha256": "s",
                                 "content_sha256": "c", "reproduces_reference": True, "notes": []})()
    assert ext.describe()["real_stride"] == {"*": 3, "taichi": 6}
    ext.preset, ext.config = "reference", PRESETS["reference"]
    assert "real_stride" not in ext.describe()  # unchanged descriptions keep the existing cache keys


def test_cd_fvd_plain_bilinear_resize_differs_from_the_reference():
    g = np.random.default_rng(0)
    clips = torch.from_numpy(g.integers(0, 256, size=(1, 2, 3, 64, 64), dtype=np.uint8))
    cd = preprocess(clips, PRESETS["cd-fvd"]["resize"])
    plain = F.interpolate(clips.reshape(2, 3, 64, 64).float(), size=(224, 224), mode="bilinear", align_corners=False)
    expected = (2 * plain / 255 - 1).reshape(1, 2, 3, 224, 224).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(cd, expected, rtol=0, atol=1e-6)
    ref = preprocess(clips, PRESETS["reference"]["resize"])
    assert (cd - ref).abs().max() * 127.5 > 10  # more than 10 uint8 levels apart somewhere
    assert PRESETS["cd-fvd"]["bn_eps"] == 1e-5 and PRESETS["reference"]["bn_eps"] == 1e-3


def test_tats_port_choices():
    from vfbench.metrics.conventions import diff

    assert PRESETS["tats"]["bn_eps"] == 1e-5 and PRESETS["tats"]["resize"] == "torch-bilinear"
    rows = {label for label, _, _ in diff("tats", "cd-fvd")}
    assert rows == {"crop", "float -> uint8", "real clips", "samples"}
    assert {label for label, _, _ in diff("stylegan-v", "latte")} == {"real-data frames"}


def test_cli_protocols_and_diff(capsys):
    from vfbench.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["protocols"])
    out = capsys.readouterr().out
    assert ei.value.code == 0 and all(f"{n}:" in out for n in PRESETS)
    with pytest.raises(SystemExit) as ei:
        main(["protocols", "diff", "stylegan-v", "latte"])
    out = capsys.readouterr().out
    assert ei.value.code == 0 and "real-data frames" in out and "every 3rd frame" in out and "covariance" not in out
    with pytest.raises(SystemExit) as ei:
        main(["protocols", "diff", "reference", "lattee"])
    assert ei.value.code == 2 and "did you mean 'latte'" in capsys.readouterr().err
