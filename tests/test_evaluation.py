"""The evaluation runner with a test-double extractor and tiny synthetic real/fake clips."""

import json

import numpy as np
import pytest
import torch

from vfbench.errors import DataError, UsageError
from vfbench.metrics.base import FeatureExtractor
from vfbench.metrics.protocols import MetricSpec
from vfbench.registry import DATASETS, EXTRACTORS, METRICS, Entry
from vfbench.results import ResultsStore

FRAMES, SIZE = 4, 8


class ProjectionExtractor(FeatureExtractor):
    """TEST DOUBLE (never registered outside these tests): a fixed random projection of 2x2-pooled pixels."""

    name = "test-projection"
    outputs = ("features", "probs")
    calls = []          # (tag, number of clips) per extract call
    weights_sha256 = "a" * 64

    def __init__(self, preset="reference", device="cpu", batch_size=8):
        self.preset = preset
        g = np.random.default_rng(123)
        self.proj = g.standard_normal((FRAMES * 3 * (SIZE // 2) ** 2, 6)) / 20

    def extract(self, clips):
        from vfbench.clips import check_clips

        check_clips(clips)
        x = clips.float().div(255)
        b, t, c, h, w = x.shape
        x = torch.nn.functional.avg_pool2d(x.reshape(b * t, c, h, w), 2).reshape(b, -1).double().numpy()
        f = x @ self.proj
        ProjectionExtractor.calls.append((int(clips[0, 0, 0, 0, 0]) >= 128, b))
        e = np.exp(f - f.max(1, keepdims=True))
        return {"features": f, "probs": e / e.sum(1, keepdims=True)}

    def describe(self):
        return {"name": self.name, "preset": self.preset, "weights_sha256": ProjectionExtractor.weights_sha256}


class TinyDataset(torch.utils.data.Dataset):
    """Real clips: bright first pixel (>= 128) marks the real side for the call counter."""

    def __init__(self, split="train", frames=FRAMES, size=SIZE, data_root=None, stride=None, seed=0, length=40):
        self.frames, self.size, self.seed, self.length, self.split = frames, size, seed, length, split

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        g = np.random.default_rng([self.seed, i])
        v = g.integers(0, 200, size=(self.frames, 3, self.size, self.size), dtype=np.uint8)
        v[0, 0, 0, 0] = 200
        return {"video": torch.from_numpy(v), "label": -1, "index": i}

    def describe(self):
        return {"name": "tiny", "split": self.split, "frames": self.frames, "size": self.size, "count": self.length,
                "seed": self.seed}


SPECS = [
    MetricSpec("fvd_t", "fvd", "test-projection", num_real=20, num_fake=10, frames=FRAMES, resolution=SIZE),
    MetricSpec("kvd_t", "kvd", "test-projection", num_real=20, num_fake=10, frames=FRAMES, resolution=SIZE),
    MetricSpec("is_t", "is", "test-projection", num_real=0, num_fake=10, frames=FRAMES, resolution=SIZE,
               higher_is_better=True),
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(EXTRACTORS._entries, "test-projection", Entry("test-projection", obj=ProjectionExtractor))
    monkeypatch.setitem(DATASETS._entries, "tiny", Entry("tiny", obj=TinyDataset))
    for s in SPECS:
        monkeypatch.setitem(METRICS._entries, s.name, Entry(s.name, obj=s, meta={"higher_is_better": s.higher_is_better}))
    monkeypatch.setattr(ProjectionExtractor, "calls", [])
    monkeypatch.setattr(ProjectionExtractor, "weights_sha256", "a" * 64)
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    store = ResultsStore(tmp_path / "results")
    return store


def make_run(store, name, n=30, size=SIZE, frames=FRAMES, tag="t1"):
    store.save_run_config(name, {"generator": "vdm", "generator_config": {}, "dataset": {"name": "tiny", "size": 64},
                                 "train": {}})
    d = store.run_dir(name) / "samples" / tag
    d.mkdir(parents=True)
    g = np.random.default_rng(7)
    clips = g.integers(0, 120, size=(n, frames, 3, size, size), dtype=np.uint8)
    clips[:, 0, 0, 0, 0] = 0
    for i in range(0, n, 8):  # shards of 8, the last one short
        np.save(d / f"shard-{i // 8:05d}.npy", clips[i:i + 8])
    (d / "manifest.json").write_text(json.dumps({"generator": "vdm", "num": n, "complete": True}))
    return d, clips


def real_calls():
    return sum(b for real, b in ProjectionExtractor.calls if real)


def test_record_has_all_fields_and_values_match_direct_computation(env):
    from vfbench.evaluation import evaluate
    from vfbench.metrics.fvd import features_to_fvd

    store = env
    sdir, clips = make_run(store, "r1")
    recs = evaluate(metrics=["fvd_t", "kvd_t", "is_t"], store=store, run="r1", progress=False)
    assert [r["metric"] for r in recs] == ["fvd_t", "kvd_t", "is_t"]
    files = sorted(store.records_dir.glob("*.json"))
    assert len(files) == 3
    rec = json.loads((store.records_dir / f"{recs[0]['record_id']}.json").read_text())
    for key in ("run", "generator", "dataset", "metric", "protocol", "value", "higher_is_better", "std", "ci_low",
                "ci_high", "trials", "num_real", "num_fake", "seeds", "extractor", "config", "samples_dir",
                "cache_key", "elapsed", "provenance"):
        assert key in rec, key
    assert rec["run"] == "r1" and rec["generator"] == "vdm" and rec["dataset"] == "tiny"
    assert rec["extractor"]["weights_sha256"] == "a" * 64 and rec["num_real"] == 20 and rec["num_fake"] == 10
    assert rec["config"]["generator"] == "vdm" and rec["samples_dir"].endswith("t1")
    assert rec["higher_is_better"] is False and recs[2]["higher_is_better"] is True
    # the value equals the three pure steps applied by hand
    ext = ProjectionExtractor()
    ds = TinyDataset(seed=0)
    idx = np.random.default_rng(0).permutation(len(ds))[:20]
    real = ext.extract(torch.stack([ds[int(i)]["video"] for i in idx]))["features"]
    fake = ext.extract(torch.from_numpy(clips[:10]))["features"]
    assert rec["value"] == pytest.approx(features_to_fvd(real, fake), rel=1e-10)
    assert rec["value"] > 0


def test_real_stats_cache_hit_bypass_and_key(env, tmp_path):
    from vfbench.evaluation import evaluate

    store = env
    make_run(store, "r1")
    r1 = evaluate(metrics=["fvd_t"], store=store, run="r1", progress=False)
    assert real_calls() == 20
    assert len(list((tmp_path / "cache" / "stats").glob("*.npz"))) == 1
    ProjectionExtractor.calls.clear()
    r2 = evaluate(metrics=["fvd_t"], store=store, run="r1", progress=False)
    assert real_calls() == 0 and r2[0]["value"] == r1[0]["value"] and r2[0]["cache_key"] == r1[0]["cache_key"]
    r3 = evaluate(metrics=["fvd_t"], store=store, run="r1", cache=False, progress=False)
    assert real_calls() == 20 and r3[0]["value"] == pytest.approx(r1[0]["value"], rel=1e-12)
    # the key changes with num_real and with the extractor weights' hash
    more = MetricSpec("fvd_t", "fvd", "test-projection", num_real=24, num_fake=10, frames=FRAMES, resolution=SIZE)
    r4 = evaluate(metrics=[more], store=store, run="r1", progress=False)
    ProjectionExtractor.weights_sha256 = "b" * 64
    r5 = evaluate(metrics=["fvd_t"], store=store, run="r1", progress=False)
    keys = {r1[0]["cache_key"], r4[0]["cache_key"], r5[0]["cache_key"]}
    assert len(keys) == 3


def test_trials_mean_std_and_bootstrap(env):
    from vfbench.evaluation import evaluate

    store = env
    make_run(store, "r1")
    rec = evaluate(metrics=["fvd_t"], store=store, run="r1", trials=3, bootstrap=20, progress=False)[0]
    assert rec["trials"] == 3 and len(rec["values"]) == 3
    assert rec["value"] == pytest.approx(np.mean(rec["values"])) and rec["std"] == pytest.approx(np.std(rec["values"]))
    assert rec["seeds"]["fake_slices"] == [[0, 10], [10, 20], [20, 30]]
    assert rec["ci_low"] < rec["ci_high"]


def test_too_few_samples_is_a_clear_error(env):
    from vfbench.evaluation import evaluate

    store = env
    make_run(store, "r1", n=12)
    with pytest.raises(DataError, match=r"needs 20 generated clips .* holds 12; generate more with `vfbench sample r1 --num 20`"):
        evaluate(metrics=["fvd_t"], store=store, run="r1", trials=2, progress=False)
    big = MetricSpec("fvd_big", "fvd", "test-projection", num_real=20, num_fake=2048, frames=FRAMES, resolution=SIZE)
    with pytest.raises(DataError, match="score the clips there are with --metrics fvd_big_n12"):
        evaluate(metrics=[big], store=store, run="r1", progress=False)


def test_external_samples_folder_resized_and_cut(env, tmp_path):
    from vfbench.evaluation import evaluate

    folder = tmp_path / "ext"
    folder.mkdir()
    g = np.random.default_rng(3)
    np.savez(folder / "samples.npz", a=g.integers(0, 120, size=(6, 6, 3, 16, 16), dtype=np.uint8),
             b=g.integers(0, 120, size=(6, 6, 3, 16, 16), dtype=np.uint8))
    # 16x16 clips for an 8x8 metric: refused, naming the fix (no registered metric scores 16x16 here)
    with pytest.raises(UsageError, match=r"kvd_t scores 8x8 clips but .* holds 16x16 clips; no registered metric"
                                         r" scores 16x16 clips: pass --fit"):
        evaluate(folder, ["kvd_t"], "tiny", env, progress=False)
    with pytest.warns(UserWarning, match="--fit: kvd_t scores 16x16 clips .* resize to 8x8"):
        recs = evaluate(folder, ["kvd_t"], "tiny", env, progress=False, fit=True)
    assert recs[0]["run"] is None and recs[0]["generator"] == "external" and np.isfinite(recs[0]["value"])
    assert recs[0]["fit"] == "first 4 of 6 frames; 16x16 -> centre square crop, antialiased bilinear resize to 8x8"
    # a --samples record is named after its folder, not 'None'
    assert recs[0]["tag"] == "ext" and recs[0]["record_id"].startswith("ext-kvd_t-")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "x.npy", np.zeros((12, 4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="channels-last"):
        evaluate(bad, ["kvd_t"], "tiny", env, progress=False)
    np.save(bad / "x.npy", np.zeros((12, 4, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match="uint8"):
        evaluate(bad, ["kvd_t"], "tiny", env, progress=False)


def test_evaluate_all_skips_done_runs(env):
    from vfbench.evaluation import evaluate_all

    store = env
    make_run(store, "r1")
    make_run(store, "r2")
    store.save_run_config("r3", {"generator": "vdm", "dataset": {"name": "tiny"}})  # no samples: ignored
    evaluate_all(store, protocol="mini", metrics=["fvd_t"], progress=False)
    assert {r["run"] for r in store.iter_records()} == {"r1", "r2"}
    make_run(store, "r4")
    recs, skipped = evaluate_all(store, protocol="mini", metrics=["fvd_t"], progress=False)
    assert [r["run"] for r in recs] == ["r4"] and sorted(skipped) == ["r1", "r2"]


def test_cli_evaluate_prints_table(env, capsys):
    from vfbench.cli import main

    store = env
    make_run(store, "r1")
    with pytest.raises(SystemExit) as ei:
        main(["evaluate", "r1", "--metrics", "fvd_t,is_t", "--results", str(store.root)])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "fvd_t" in out and "is_t" in out and "2 record(s) written" in out
    with pytest.raises(SystemExit) as ei:
        main(["evaluate", "--all", "--metrics", "fvd_t", "--results", str(store.root)])
    assert ei.value.code == 0 and "nothing to evaluate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ei:
        main(["evaluate", "--samples", str(store.root), "--results", str(store.root)])
    assert ei.value.code == 2 and "--dataset" in capsys.readouterr().err


def test_protocol_tables():
    from vfbench.evaluation import protocol_metrics

    assert protocol_metrics("paper", "ucf101") == ["fvd2048_16f", "kvd2048_16f", "is2048_ucf_tganv2"]
    assert protocol_metrics("paper", "taichi") == ["fvd2048_16f", "kvd2048_16f"]
    assert protocol_metrics("mini", "shapes") == ["fvd_shapes256", "kvd_shapes256", "is_shapes256"]
    assert protocol_metrics("mini", "sky") == ["fvd256_16f", "kvd256_16f"]
    spec = METRICS.get("is2048_ucf_tganv2")
    assert spec.trials == 10 and spec.num_fake == 2048 and spec.higher_is_better
    assert METRICS.meta("fvd2048_16f")["higher_is_better"] is False


def test_samples_needed_counts_trials():
    from vfbench.evaluation import samples_needed

    assert samples_needed(["fvd2048_16f", "kvd2048_16f"]) == 2048
    assert samples_needed(["fvd2048_16f", "is2048_ucf_tganv2"]) == 20480
    assert samples_needed(["is2048_ucf_tganv2"], trials=1) == 2048
    assert samples_needed(["fvd_shapes256", "is_shapes256"]) == 256


def test_missing_c3d_weights_fail_before_any_extraction(env):
    from vfbench.errors import WeightsError
    from vfbench.evaluation import evaluate

    store = env
    make_run(store, "r1")
    is_c3d = MetricSpec("is_c3d_t", "is", "c3d-ucf101", preset="tganv2", num_real=0, num_fake=10, frames=FRAMES,
                        resolution=SIZE, higher_is_better=True)
    with pytest.raises(WeightsError, match="--c3d-weights"):
        evaluate(metrics=["fvd_t", is_c3d], store=store, run="r1", progress=False)
    assert ProjectionExtractor.calls == [] and not list(store.records_dir.glob("*.json"))


def test_extractor_preset_conventions_resolve_into_the_spec():
    spec = METRICS.get("fvd2048_16f")
    ref = spec.resolved({"covariance": "unbiased (N-1)", "real_clips": "protocol-defined"})
    assert ref.unbiased_cov is True and ref.real_selection == "reference" and ref.name == "fvd2048_16f"
    sg = spec.with_preset("stylegan-v")
    assert sg.name == "fvd2048_16f-stylegan-v" and sg.preset == "stylegan-v"
    r = sg.resolved({"covariance": "biased (N)",
                     "real_clips": "the first N videos of the dataset, one random 16-frame window each"})
    assert r.unbiased_cov is False and r.real_selection == "stylegan-v"


def test_reference_dataset_of_a_cli_trained_run_drops_recorded_fields():
    """`vfbench train` records the dataset's describe() in config.json; it is not a dataset option."""
    from vfbench.data import build_dataset
    from vfbench.evaluation import reference_dataset_of

    ds = build_dataset("shapes", frames=4, size=8)
    run_cfg = {"dataset": {"name": "shapes", "split": "train", "frames": 4, "size": 8, "seed": 0, "stride": None,
                           "data_root": None, "describe": ds.describe()}}
    spec = reference_dataset_of(run_cfg)
    assert spec == {"name": "shapes", "split": "train", "stride": None, "data_root": None}
    name = spec.pop("name")
    assert len(build_dataset(name, frames=4, size=8, **spec)) > 0
    assert reference_dataset_of({}) is None
