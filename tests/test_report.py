"""The HTML report: self-contained (data URIs only), escaped, and showing what the store holds.

The results directory here is a synthetic fixture (hand-written run dirs, shards and records):
the report must render any store, whatever produced it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vfbench.ablation import ExpandOptions, expand, lambda_spec
from vfbench.reports import html as report_html
from vfbench.reports.tables import build_table, write_table
from vfbench.results import ResultsStore

EVIL = "<script>alert('x')</script>"
EVIL_DIR = "evil<script>alert(1)"     # a run directory name (no '/' possible in a file name)


def _run_dir(store, name, generator, loss0=1.0, shards=True, plan=None):
    d = store.runs_dir / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "generator": generator, "generator_config": {"note": "<b>bold</b>", "lam": 0.5},
        "dataset": {"name": "shapes", "frames": 4, "size": 8}, "train": {"steps": 20}}))
    (d / "checkpoints" / "step-0000020.pt").write_bytes(b"x")
    (d / "checkpoints" / "latest.json").write_text(json.dumps({"step": 20, "file": "step-0000020.pt"}))
    (d / "log.csv").write_text("step,loss,lr\n" + "".join(f"{s},{loss0 / s:.4f},0.0001\n" for s in range(1, 21)))
    (d / "summary.json").write_text(json.dumps({"final_loss": loss0 / 20, "num_params": 123456}))
    if plan is not None:
        (d / "plan.json").write_text(json.dumps({"identity": {}, "plan": plan}))
    if shards:
        s = d / "samples" / "mini-n8-seed0-step20"
        s.mkdir(parents=True)
        rng = np.random.default_rng(0)
        np.save(s / "shard-00000.npy", rng.integers(0, 256, (8, 4, 3, 8, 8), dtype=np.uint8))
        (s / "manifest.json").write_text(json.dumps({"num": 8, "complete": True, "generator": generator}))
    return d


def make_store(root: Path) -> ResultsStore:
    """A results dir with two lambda runs (a table), a run with a hostile name, records and a bench file."""
    store = ResultsStore(root)
    spec = lambda_spec([0.25, 0.5])
    plans = expand(spec, ExpandOptions(steps=20, frames=4, size=8, preset="tiny"))
    for i, p in enumerate(plans):
        _run_dir(store, p.name, "videofusion", 1.0 + i, plan={"group": "lambda", "variant": p.variant, "steps": 20})
        for m, v in (("fvd_shapes256", 100.0 + i), ("is_shapes256", 2.0 + i)):
            store.write_record({"run": p.name, "metric": m, "protocol": "mini", "value": v, "std": 0.1,
                                "ci_low": v - 1, "ci_high": v + 1, "higher_is_better": m.startswith("is"),
                                "num_real": 256, "num_fake": 256, "extractor": {"name": "shapes-net"},
                                "samples_dir": str(store.runs_dir / p.name / "samples" / "mini-n8-seed0-step20")})
    _run_dir(store, EVIL_DIR, "vdm", shards=True)
    store.write_record({"run": EVIL, "metric": "fvd<img src=x onerror=alert(1)>", "protocol": "mini<i>",
                        "value": 1.5, "extractor": EVIL})
    store.write_record({"run": plans[0].name, "metric": "disentangle_shapes", "protocol": "mini", "value": 0.75})
    metrics = ["fvd_shapes256", "is_shapes256"]
    table = build_table(spec, plans, list(store.iter_records()), metrics, "mini", name="ablate-lambda-shapes-mini")
    from dataclasses import asdict

    write_table(store.root / "tables", table, {"name": table.name, "spec": "lambda",
                                               "spec_kwargs": {"values": [0.25, 0.5]},
                                               "plans": [asdict(p) for p in plans], "metrics": metrics,
                                               "protocol": "mini"})
    (store.root / "bench").mkdir()
    (store.root / "bench" / "efficiency.json").write_text(json.dumps(   # `vfbench bench efficiency` layout
        {"benchmark": "efficiency", "paper_table4": {"memory_ratio": 0.781, "latency_ratio": 0.425},
         "variants": {"vdm": {"params": 2e6, "step": {"median_s": 0.4}, "step_memory": {"peak_bytes": 2 ** 30}},
                      "videofusion": {"params": 1.5e6, "step": {"median_s": 0.1},
                                      "step_memory": {"peak_bytes": 2 ** 29}}}}))
    return store


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("results"))
    path = report_html.write_report(store, control_grid=False)
    return store, path, path.read_text(encoding="utf-8")


def test_report_is_written_where_promised(report):
    store, path, text = report
    assert path == store.root / "reports" / "report.html"
    assert text.startswith("<!DOCTYPE html>")


def test_user_strings_are_escaped(report):
    _, _, text = report
    low = text.lower()
    assert "<script" not in low                       # no script at all, hostile or not
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "evil&lt;script&gt;alert(1)" in text       # the hostile run directory's name
    assert "<img src=x" not in low and "fvd&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<b>bold</b>" not in text and "mini&lt;i&gt;" in text


def test_self_contained(report):
    _, _, text = report
    assert not re.search(r"https?://", text)
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs)
    assert "@import" not in text and "url(" not in text
    pngs = re.findall(r'src="data:image/png;base64,', text)
    gifs = re.findall(r'src="data:image/gif;base64,', text)
    assert len(pngs) >= 3     # metric vs lambda, training loss, efficiency bars
    assert len(gifs) == 6     # per run with shards: its sample grid and its real clips beside it
    assert "default-src 'none'" in text


def test_report_content(report):
    store, _, text = report
    assert "paper FVD (UCF-101 16x64x64)" in text and "139" in text   # Table 5 at lambda 0.50
    assert "ablate-lambda-0.25-shapes-s0" in text
    assert "disentangle_shapes" in text and "<b>0.75</b>" in text
    assert "100.0 ± 0.1" in text          # ablation cell: value ± the record's std
    assert "[99.00, 101.0]" in text       # confidence interval of a record
    assert "VideoFusion / VDM" in text and "<td>0.25</td>" in text and "0.425" in text  # measured vs Table 4
    assert "123,456" not in text and "0.12M" in text   # parameter count
    # the rendered sample grid and the real clips beside it are cached in the run dir for the next report
    cache = store.runs_dir / "ablate-lambda-0.25-shapes-s0" / "report"
    assert list(cache.glob("samples-*.gif")) and list(cache.glob("real-*.gif"))
    # real training clips beside every run's samples (a PNG filmstrip: real rows above generated rows)
    assert text.count("real training clips (top) and generated clips") == 3
    strip = next((store.runs_dir / "ablate-lambda-0.25-shapes-s0" / "report").glob("strip-*.png"))
    from PIL import Image

    img = np.asarray(Image.open(strip).convert("RGB"))
    assert img.shape[0] > 8 * 8 and img.shape[1] > 4 * 8  # 4 real + 4 generated rows of 4 frames, upscaled


def test_report_cli(tmp_path, capsys):
    from vfbench.cli import main

    store = make_store(tmp_path / "res")
    with pytest.raises(SystemExit) as ei:
        main(["report", "--results", str(store.root), "--no-control-grid", "--title", "T<1>"])
    assert ei.value.code == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path.is_file() and "T&lt;1&gt;" in path.read_text()
    with pytest.raises(SystemExit) as ei:
        main(["report", "--results", str(tmp_path / "nope")])
    assert ei.value.code == 2 and "--results" in capsys.readouterr().err


def test_control_grid_rows_share_content():
    """Row r of the grid shares base noise: VideoFusion's keyframe depends on the base noise only."""
    import torch

    from vfbench.registry import GENERATORS

    cls = GENERATORS.get("videofusion")
    cfg = cls.config_for("tiny", 4, 8)
    from dataclasses import replace

    cfg = replace(cfg, sampling_steps=2)
    from helpers_models import nonzero_outputs

    torch.manual_seed(0)
    gen = nonzero_outputs(cls(cfg))
    clips = report_html.control_grid_clips(gen, rows=2, cols=3).numpy()
    assert clips.shape[:2] == (6, 4) and clips.dtype == np.uint8
    k = cfg.frames // 2
    grid = clips.reshape(2, 3, *clips.shape[1:])
    assert all((grid[r, c, k] == grid[r, 0, k]).all() for r in range(2) for c in range(3))
    assert not (grid[0, 0, k] == grid[1, 0, k]).all()
    assert not (grid[0, 0] == grid[0, 1]).all()      # other residual noise: other clip


def test_screenshot_width_out_of_range_is_one_usage_error_before_any_work(tmp_path, capsys):
    from helpers_reliability import cli_in_process

    code, out, err = cli_in_process(capsys, "report", "--results", tmp_path, "--screenshot", tmp_path / "r.png",
                                    "--screenshot-width", 100)
    assert code == 2 and "--screenshot-width" in err and "[320, 4000]" in err and "Traceback" not in err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "r.png").exists()
