"""Ablation specs, the skip-if-done pipeline and the table format (no training: counted fakes)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from vfbench import pipeline
from vfbench.ablation import ExpandOptions, expand, get_spec, lambda_spec, run_table
from vfbench.errors import UnknownNameError, UsageError
from vfbench.pipeline import EvalPlan, RunPlan, execute, execute_all
from vfbench.reports.tables import build_table, table_from_recipe
from vfbench.results import ResultsStore

GOLDEN = Path(__file__).parent / "golden"
METRICS = ["fvd_shapes256", "kvd_shapes256", "is_shapes256"]


# -- spec expansion ----------------------------------------------------------------------------------
def test_lambda_expansion_names_overrides_and_seeds():
    plans = expand(lambda_spec([0.1, 0.25]), ExpandOptions(seeds=2, steps=40, preset="tiny"))
    assert [p.name for p in plans] == ["ablate-lambda-0.10-shapes-s0", "ablate-lambda-0.10-shapes-s1",
                                       "ablate-lambda-0.25-shapes-s0", "ablate-lambda-0.25-shapes-s1"]
    assert [p.seed for p in plans] == [0, 1, 0, 1]
    assert plans[2].generator_overrides == {"lam": 0.25}
    assert all(p.steps == 40 and p.preset == "tiny" and p.generator == "videofusion" for p in plans)
    # every lambda starts from one shared pretrained base, as the paper's VideoFusion (Table 5's lambda 0.5 = Table 1)
    assert all(p.pretrain_base_steps == 40 for p in plans) and len({p.base_run_name for p in plans[::2]}) == 1


def test_pretrain_and_stopgrad_specs():
    plans = expand(get_spec("pretrain"), ExpandOptions(steps=30, pretrain_steps=20))
    assert [(p.generator, p.pretrain_base_steps) for p in plans] == [("vdm", 0), ("videofusion", 0), ("videofusion", 20)]
    # equal joint-training steps for every row
    assert {p.steps for p in plans} == {30}
    sg = expand(get_spec("stopgrad"), ExpandOptions(steps=30, dataset="taichi", prefix="x"))
    assert [p.generator_overrides["mode"] for p in sg] == ["fixed", "no-stopgrad", "stopgrad"]
    assert all(p.pretrain_base_steps == 30 for p in sg)  # default: pretrain as long as joint training
    assert sg[0].name == "x-fixed-taichi-s0"
    # the pretrained base is one shared artefact for every run with the same seed
    assert len({p.base_run_name for p in sg}) == 1
    assert plans[2].base_run_name != sg[0].base_run_name  # other dataset, other length


def test_compare_spec_and_paper_reference():
    spec = get_spec("compare", dataset="sky")
    assert [v.generator for v in spec.variants] == ["videofusion", "vdm", "vidm"]
    assert spec.table == 2
    assert expand(spec, ExpandOptions())[0].name == "compare-videofusion-shapes-s0"
    # every generator starts from an image DPM pretrained for the same steps; VideoFusion and VDM share one
    plans = expand(spec, ExpandOptions(steps=30, pretrain_steps=20))
    assert [(p.generator, p.pretrain_base_steps) for p in plans] == [("videofusion", 20), ("vdm", 20), ("vidm", 20)]
    assert plans[0].base_run_name == plans[1].base_run_name != plans[2].base_run_name
    assert plans[2].base_run_name.startswith("pretrained-vidm-base-")


@pytest.mark.parametrize("bad, match", [
    (dict(seeds=0), "--seeds"), (dict(steps=-1), "--steps"), (dict(preset="huge"), "--preset"),
    (dict(prefix="a b"), "--prefix"), (dict(dataset="shapez"), "did you mean 'shapes'"),
])
def test_bad_options_name_the_option(bad, match):
    with pytest.raises(UsageError, match=match):
        expand(lambda_spec(), ExpandOptions(**bad))


def test_bad_lambda_values():
    with pytest.raises(UsageError, match="--values"):
        lambda_spec([0.5, 1.5])
    with pytest.raises(UsageError, match="twice"):
        lambda_spec([0.5, 0.50])
    with pytest.raises(UnknownNameError, match="did you mean 'lambda'"):
        get_spec("lamda")


# -- skip-if-done ------------------------------------------------------------------------------------
class Fakes:
    """Stand-ins for the three stages that write what the real ones write, and count calls."""

    def __init__(self):
        self.calls = {"train": [], "sample": [], "evaluate": []}

    def train(self, store, plan, progress=False):
        self.calls["train"].append(plan.name)
        d = store.run_dir(plan.name)
        (d / "checkpoints").mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"generator": plan.generator}))
        torch.save({}, d / "checkpoints" / f"step-{plan.steps:07d}.pt")  # a whole (zip) checkpoint file
        (d / "checkpoints" / "latest.json").write_text(json.dumps({"step": plan.steps, "file": f"step-{plan.steps:07d}.pt"}))
        return d

    def sample(self, run_dir, num, seed, batch, tag, progress=False):
        self.calls["sample"].append((Path(run_dir).name, tag))
        d = Path(run_dir) / "samples" / tag
        d.mkdir(parents=True, exist_ok=True)
        (d / "manifest.json").write_text(json.dumps({"num": num, "complete": True}))
        return d

    def evaluate(self, store, run_dir, samples_dir, specs, protocol, progress):
        out = []
        for m in (s.name for s in specs):
            self.calls["evaluate"].append((Path(run_dir).name, m))
            out.append(store.write_record({"run": Path(run_dir).name, "metric": m, "protocol": protocol,
                                           "value": 1.0, "samples_dir": str(samples_dir), "num_fake": 256}))
        return out


@pytest.fixture
def fakes(monkeypatch):
    f = Fakes()
    monkeypatch.setattr(pipeline, "train_step", f.train)
    monkeypatch.setattr(pipeline, "sample_step", f.sample)
    monkeypatch.setattr(pipeline, "evaluate_step", f.evaluate)
    return f


def test_pipeline_skips_what_is_done(tmp_path, fakes):
    store = ResultsStore(tmp_path)
    plans = expand(lambda_spec([0.25, 0.5]), ExpandOptions(steps=10, preset="tiny"))
    ev = EvalPlan(metrics=METRICS)
    first = execute_all(store, plans, ev, progress=False)
    assert len(fakes.calls["train"]) == 2 and len(fakes.calls["sample"]) == 2
    assert len(fakes.calls["evaluate"]) == 6
    assert all(o.trained and o.sampled and len(o.records) == 3 for o in first)

    again = execute_all(store, plans, ev, progress=False)  # everything done: nothing recomputed
    assert len(fakes.calls["train"]) == 2 and len(fakes.calls["sample"]) == 2 and len(fakes.calls["evaluate"]) == 6
    assert not any(o.trained or o.sampled or o.evaluated for o in again)
    assert [len(o.records) for o in again] == [3, 3]


def test_pipeline_redoes_only_missing_parts(tmp_path, fakes):
    store = ResultsStore(tmp_path)
    plan = expand(lambda_spec([0.25]), ExpandOptions(steps=10))[0]
    ev = EvalPlan(metrics=METRICS)
    execute(store, plan, ev)
    # a lost record is recomputed alone
    next(p for p in store.records_dir.glob("*kvd*")).unlink()
    out = execute(store, plan, ev)
    assert out.evaluated == ["kvd_shapes256"] and not out.trained and not out.sampled
    # an incomplete sample set (interrupted) is resumed; its records are per sample set
    manifest = out.samples_dir / "manifest.json"
    manifest.write_text(json.dumps({"num": 8, "complete": False}))
    out = execute(store, plan, ev)
    assert out.sampled and not out.trained
    # more steps: training resumes (extends), and new samples/records are made for the new checkpoint
    longer = RunPlan(**{**plan.__dict__, "steps": 20})
    out = execute(store, longer, ev)
    assert out.trained and out.sampled and out.evaluated == METRICS
    assert out.samples_dir.name.endswith("step20")


def test_fewer_samples_means_renamed_metrics(tmp_path, fakes):
    store = ResultsStore(tmp_path)
    plan = expand(lambda_spec([0.25]), ExpandOptions(steps=10))[0]
    out = execute(store, plan, EvalPlan(protocol="mini", num_samples=8))  # the protocol's metrics, resized
    assert out.evaluated == ["fvd_shapes8", "kvd_shapes8", "is_shapes8"]
    assert fakes.calls["sample"][-1][1] == "mini-n8-seed0-step10"
    assert {r["metric"] for r in out.records} == {"fvd_shapes8", "kvd_shapes8", "is_shapes8"}


def test_pipeline_refuses_a_run_made_for_another_plan(tmp_path, fakes):
    store = ResultsStore(tmp_path)
    plan = expand(lambda_spec([0.25]), ExpandOptions(steps=10))[0]
    execute(store, plan, EvalPlan(metrics=METRICS))
    other = RunPlan(**{**plan.__dict__, "generator_overrides": {"lam": 0.3}})
    with pytest.raises(UsageError, match="different settings .*generator_overrides.*--prefix"):
        execute(store, other, EvalPlan(metrics=METRICS))
    # a run made by hand (no plan.json) is not taken over either
    store.save_run_config("ablate-lambda-0.50-shapes-s0", {"generator": "videofusion"})
    with pytest.raises(UsageError, match="not made by this command"):
        execute(store, expand(lambda_spec([0.5]), ExpandOptions())[0], EvalPlan(metrics=METRICS))


def test_runs_made_before_a_new_generator_field_are_reused(tmp_path, fakes):
    # a plan pinned (and a run config saved) by a version without base_prediction: the field's legacy value
    # (None, the base predicts what the residual generator does) is how it was made, so it is not "different"
    from vfbench.pipeline import PLAN_FILE
    from vfbench.runs import prepare_run_dir

    store = ResultsStore(tmp_path)
    plan = expand(lambda_spec([0.25]), ExpandOptions(steps=10))[0]
    execute(store, plan, EvalPlan(metrics=METRICS))
    pinned = store.run_dir(plan.name) / PLAN_FILE
    data = json.loads(pinned.read_text())
    data["identity"]["generator_config"].pop("base_prediction")
    for net in ("base", "residual"):  # a nested (U-Net) field added since: filled by UNetConfig.LEGACY_DEFAULTS
        data["identity"]["generator_config"][net].pop("temporal_attention_scales")
    pinned.write_text(json.dumps(data))
    out = execute(store, plan, EvalPlan(metrics=METRICS))
    assert not out.trained and not out.evaluated
    cfg_path = tmp_path / "r" / "config.json"
    gcfg = pipeline.generator_config(plan)
    prepare_run_dir(cfg_path.parent, "videofusion", gcfg, {"name": "shapes"}, {"steps": 1})
    (cfg_path.parent / "checkpoints").mkdir()
    (cfg_path.parent / "checkpoints" / "step-0000001.pt").write_bytes(b"x")  # progress: a resume compares configs
    old = json.loads(cfg_path.read_text())
    old["generator_config"].pop("base_prediction")
    old["generator_config"]["residual"].pop("temporal_attention_scales")
    cfg_path.write_text(json.dumps(old))
    prepare_run_dir(cfg_path.parent, "videofusion", gcfg, {"name": "shapes"}, {"steps": 2}, resume=True)
    with pytest.raises(UsageError, match="differs in generator_config.lam"):
        prepare_run_dir(cfg_path.parent, "videofusion", dataclasses.replace(gcfg, lam=0.3), {"name": "shapes"},
                        {"steps": 2}, resume=True)


def test_run_table_writes_tables_and_reruns_free(tmp_path, fakes):
    store = ResultsStore(tmp_path)
    opts = ExpandOptions(steps=5, seeds=2)
    table, paths = run_table(store, "stopgrad", opts, EvalPlan(metrics=METRICS), progress=False)
    assert {p.suffix for p in paths.values()} == {".csv", ".md", ".json"}
    assert table.variants == ["Fixed", "w/o stop gradient", "w stop gradient"]
    assert "paper FVD (UCF-101 16x64x64)" in paths["md"].read_text()
    n = {k: len(v) for k, v in fakes.calls.items()}
    run_table(store, "stopgrad", opts, EvalPlan(metrics=METRICS), progress=False)
    assert {k: len(v) for k, v in fakes.calls.items()} == n
    recipe = json.loads(paths["json"].read_text())["recipe"]
    assert table_from_recipe(recipe, list(store.iter_records())).to_markdown() == paths["md"].read_text()


# -- golden table files ------------------------------------------------------------------------------
def _golden_records(plans):
    """Fixed synthetic records (test fixtures): two seeds per lambda, one metric missing for one run."""
    recs = []
    for i, p in enumerate(plans):
        for j, m in enumerate(METRICS):
            if p.name == "ablate-lambda-0.90-shapes-s1" and m == "is_shapes256":
                continue  # not evaluated yet
            value = [300.0, 0.125, 3.5][j] + 10.0 * i * [1, 0.01, 0.1][j]
            recs.append({"run": p.name, "metric": m, "protocol": "mini", "value": value,
                         "higher_is_better": m.startswith("is"), "std": 0.5 if m.startswith("is") else None,
                         "extractor": {"name": "shapes-net"}, "num_fake": 256,
                         "provenance": {"created": "2026-01-01T00:00:00+00:00"}})
    # an older record of the same evaluation is superseded by the newer one
    recs.append({**recs[0], "value": 999.0, "provenance": {"created": "2025-01-01T00:00:00+00:00"}})
    return recs


@pytest.mark.parametrize("suffix", ["md", "csv"])
def test_table_golden(suffix):
    spec = lambda_spec([0.10, 0.5, 0.9])
    plans = expand(spec, ExpandOptions(seeds=2, steps=200, preset="small"))
    table = build_table(spec, plans, _golden_records(plans), METRICS, "mini", name="ablate-lambda-shapes-mini")
    text = table.to_markdown() if suffix == "md" else table.to_csv()
    path = GOLDEN / f"ablate-lambda-shapes-mini.{suffix}"
    if os.environ.get("VFBENCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"table format changed; if intended, rerun with VFBENCH_UPDATE_GOLDEN=1"


def test_table_values():
    spec = lambda_spec([0.10, 0.9])
    plans = expand(spec, ExpandOptions(seeds=2))
    table = build_table(spec, plans, _golden_records(plans), METRICS, "mini", name="t")
    fvd = table.cells[0][0]
    assert fvd.n == 2 and fvd.mean == pytest.approx(305.0) and fvd.std == pytest.approx(7.0710678)
    assert table.cells[1][2].n == 1  # the missing record is not invented
    assert table.paper_values[0] == [149.0, 67.23] and table.paper_values[1] == [None, None]
    assert table.paper_headers() == ["paper FVD (UCF-101 16x64x64)", "paper IS (UCF-101 16x64x64)"]
    assert any("compare only directions" in n for n in table.notes)


# -- the commands (in-process, with the counting fakes) -------------------------------------------------
def _cli(args):
    from vfbench.cli import main

    with pytest.raises(SystemExit) as ei:
        main(args)
    return ei.value.code


def test_ablate_cli_writes_table_and_resumes(tmp_path, fakes, capsys):
    args = ["ablate", "lambda", "--values", "0.1,0.5", "--steps", "5", "--results", str(tmp_path), "--no-progress"]
    assert _cli(args) == 0
    out = capsys.readouterr().out
    assert "| lambda = 0.10 |" in out and "paper FVD (UCF-101 16x64x64)" in out
    assert (tmp_path / "tables" / "ablate-lambda-shapes-mini.csv").is_file()
    n = len(fakes.calls["train"])
    assert n == 2 and _cli(args) == 0 and len(fakes.calls["train"]) == n   # rerun: nothing retrained


def test_config_file_and_flags(tmp_path, fakes, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 7\nseeds: 2\nprefix: mine\n")
    assert _cli(["compare", "--config", str(cfg), "--seeds", "1", "--results", str(tmp_path), "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["mine-vdm-shapes-s0", "mine-videofusion-shapes-s0", "mine-vidm-shapes-s0"]  # flag beat file
    plan = json.loads((tmp_path / "runs" / "mine-vdm-shapes-s0" / "plan.json").read_text())["plan"]
    assert plan["steps"] == 7                                                                  # file beat default


def test_cli_bad_values_exit_2(tmp_path, fakes, capsys):
    assert _cli(["ablate", "lambda", "--values", "0.1,x", "--results", str(tmp_path)]) == 2
    assert "--values" in capsys.readouterr().err
    assert _cli(["ablate", "stopgrad", "--seeds", "0", "--results", str(tmp_path)]) == 2
    assert _cli(["compare", "--protocol", "huge", "--results", str(tmp_path)]) == 2
    assert not fakes.calls["train"]


def test_demo_quick_plumbing(tmp_path, fakes, capsys, monkeypatch):
    """The demo's stages, run names and resumption, with the counting fakes (the real run is slow)."""
    import vfbench.ablation as ablation

    scored = []
    monkeypatch.setattr(ablation, "disentanglement", lambda store, run, **kw: scored.append(run))
    assert _cli(["demo", "--quick", "--results", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = Path(out.strip().splitlines()[-1].split("report: ", 1)[1])
    assert report.is_file() and report.parent == tmp_path / "reports"
    assert sorted(fakes.calls["train"]) == ["demo-quick-vdm-shapes-s0", "demo-quick-videofusion-shapes-s0",
                                            "demo-quick-vidm-shapes-s0"]  # no lambda ablation unless asked
    assert scored == ["demo-quick-videofusion-shapes-s0"]
    plan = json.loads((tmp_path / "runs" / "demo-quick-vidm-shapes-s0" / "plan.json").read_text())["plan"]
    assert plan["preset"] == "tiny" and plan["generator_overrides"] == {"sampling_steps": 4}
    assert {m for _, m in fakes.calls["evaluate"]} == {"fvd_shapes8", "kvd_shapes8", "is_shapes8"}
    assert _cli(["demo", "--quick", "--results", str(tmp_path), "--no-progress"]) == 0
    assert len(fakes.calls["train"]) == 3 and len(fakes.calls["sample"]) == 3   # resumed: nothing redone
    assert _cli(["demo", "--quick", "--lambdas", "0.25", "--results", str(tmp_path), "--no-progress"]) == 0
    assert fakes.calls["train"][-1] == "demo-quick-lambda-0.25-shapes-s0" and len(fakes.calls["train"]) == 4


# -- the real thing ------------------------------------------------------------------------------------
def _shapes_net_weights() -> Path:
    from vfbench.metrics.shapes_net import WEIGHTS_FILE

    return Path(WEIGHTS_FILE)


@pytest.mark.skipif(not _shapes_net_weights().is_file(),
                    reason="the shipped shapes-net weights (metrics/weights/shapes_net.safetensors) are missing")
def test_demo_quick_end_to_end(tmp_path):
    """`vfbench demo --quick` for real: trains, samples, scores, tables, report; a rerun redoes nothing.

    About 25 s on 2 CPU cores with one torch thread (OMP_NUM_THREADS=1 avoids oversubscription).
    """
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "VFBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "vfbench", "demo", "--quick", "--lambdas", "0.25", "--results", str(tmp_path / "res"),
           "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = Path(out.stdout.strip().splitlines()[-1].split("report: ", 1)[1])
    text = report.read_text()
    assert "demo-quick-videofusion-shapes-s0" in text and "data:image/gif;base64," in text
    store = ResultsStore(tmp_path / "res")
    recs = list(store.iter_records())
    assert {r["metric"] for r in recs} == {"fvd_shapes8", "kvd_shapes8", "is_shapes8", "disentangle_shapes"}
    assert len(recs) == 4 * 3 + 1  # 3 compared runs + 1 lambda run, 3 metrics each, and disentanglement
    for name in ("demo-quick-shapes-mini", "demo-quick-lambda-shapes-mini"):
        assert (store.root / "tables" / f"{name}.csv").is_file()
    # the three compared runs start from image DPMs: one shared by VideoFusion and VDM, VIDM's own
    assert sorted(p.name for p in (store.root / "pretrained").iterdir()) == [
        "pretrained-base-shapes-tiny-16x16-p10-s0", "pretrained-vidm-base-shapes-tiny-16x16-p10-s0"]
    assert "VDM's spatial layers (from the same weights)" in (store.root / "tables" / "demo-quick-shapes-mini.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list(store.iter_records())) == len(recs)        # nothing re-evaluated
    assert ": training " not in again.stderr and again.stderr.count("skipping training") == 4


def test_trained_step_ignores_a_torn_checkpoint(tmp_path):
    from vfbench.pipeline import trained_step

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    torch.save({"w": torch.zeros(3)}, ck / "step-0000010.pt")
    whole = (ck / "step-0000010.pt").read_bytes()
    (ck / "step-0000020.pt").write_bytes(whole[: len(whole) // 2])  # killed mid-write
    assert trained_step(tmp_path) == 10


def test_plan_with_residual_init_base_needs_pretraining():
    # without an image DPM the widened residual generator would train from a random init, unannounced
    with pytest.raises(UsageError, match="residual_init 'base'.*pretrain_base_steps is 0"):
        RunPlan(name="ri", generator="videofusion", generator_overrides={"residual_init": "base"})
    RunPlan(name="ri", generator="videofusion", generator_overrides={"residual_init": "base"}, pretrain_base_steps=10)
