"""What the report shows beside what: real clips beside every generated grid (same size), labelled
control grids, measured and published values on separate axes, and banner / columns that follow
the records (no claim about an extractor or dataset the records do not use, no published column
without a measured one)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from vfbench.reports import html as report_html
from vfbench.reports.grids import COL_LABEL_H, ROW_LABEL_W, grid_gif


def _gif_size(src: str):
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size


def _store_with_control_grid(tmp_path):
    from test_report import make_store

    store = make_store(tmp_path / "results")
    run = store.runs_dir / "ablate-lambda-0.25-shapes-s0"
    import zipfile

    with zipfile.ZipFile(run / "checkpoints" / "step-0000020.pt", "w") as z:   # a whole container: step 20
        z.writestr("data.pkl", b"x")
    clips = np.random.default_rng(1).integers(0, 256, (report_html.GRID_ROWS * report_html.GRID_COLS, 4, 3, 8, 8),
                                              dtype=np.uint8)
    (run / "report").mkdir(exist_ok=True)
    np.save(run / "report" / "control-grid-step20.npy", clips)   # as `--control-grid` caches it
    return store


def test_real_clips_beside_every_generated_grid_at_the_same_size(tmp_path):
    text = report_html.build_report(_store_with_control_grid(tmp_path), control_grid=False)
    generated = re.findall(r'<img alt="(?:samples|control grid) of ', text)
    pairs = re.findall(r'<div class="pair">(.*?)</div>', text, flags=re.S)
    assert len(generated) == 4 and len(pairs) == 4    # 3 sample grids, 1 control grid
    for pair in pairs:
        (real_alt, real_src), (gen_alt, gen_src) = re.findall(r'<img alt="([^"]*)" src="([^"]*)"', pair)
        assert real_alt.startswith("real clips of ") and not gen_alt.startswith("real")
        assert _gif_size(real_src) == _gif_size(gen_src)


def test_samples_are_grouped_by_their_table(tmp_path):
    text = report_html.build_report(_store_with_control_grid(tmp_path), control_grid=False)
    samples = text[text.index('id="samples"'):text.index('id="control"')]
    assert "<h3>lambda runs</h3>" in samples and "<h3>other runs</h3>" in samples


def test_control_grid_has_row_and_column_labels(tmp_path):
    text = report_html.build_report(_store_with_control_grid(tmp_path), control_grid=False)
    control = text[text.index('id="control"'):]
    assert "<i>content k</i>" in control and "<i>motion k</i>" in control   # what rows and columns share
    src = re.search(r'<img alt="control grid of [^"]*" src="([^"]*)"', control).group(1)
    clips = np.zeros((12, 2, 3, 8, 8), np.uint8)
    plain = Image.open(io.BytesIO(grid_gif(clips, 4)))
    assert _gif_size(src) == (plain.size[0] + ROW_LABEL_W, plain.size[1] + COL_LABEL_H)


def test_grid_labels_are_drawn_in_the_margins():
    clips = np.zeros((6, 2, 3, 8, 8), np.uint8)
    labelled = np.asarray(Image.open(io.BytesIO(grid_gif(clips, 3, row_labels=["a", "b"],
                                                         col_labels=["x", "y", "z"]))).convert("L"))
    blank = np.asarray(Image.open(io.BytesIO(grid_gif(clips, 3, row_labels=["", ""],
                                                      col_labels=["", "", ""]))).convert("L"))
    assert labelled.shape == blank.shape
    assert labelled[COL_LABEL_H:, :ROW_LABEL_W].min() < 128 and labelled[:COL_LABEL_H, ROW_LABEL_W:].min() < 128
    assert blank[:, :ROW_LABEL_W].min() == 255 and blank[:COL_LABEL_H].min() == 255


def _lambda_table(metrics):
    from test_report import make_store  # noqa: F401  (records shaped like the report fixture's)

    from vfbench.ablation import ExpandOptions, expand, lambda_spec
    from vfbench.reports.tables import build_table

    spec = lambda_spec([0.25, 0.5])
    plans = expand(spec, ExpandOptions(steps=20, frames=4, size=8, preset="tiny"))
    records = [{"run": p.name, "metric": m, "protocol": "mini", "value": 100.0 + 10 * i + j, "std": 1.0,
                "extractor": {"name": "i3d"}, "num_fake": 64}
               for i, p in enumerate(plans) for j, m in enumerate(metrics)]
    return build_table(spec, plans, records, metrics, "mini", name="t")


def test_measured_and_published_never_share_a_plot():
    from vfbench.reports.plots import metric_vs_x_figure

    table = _lambda_table(["fvd_taichi64", "is_taichi64"])
    fig = metric_vs_x_figure(table)
    boxes = [tuple(np.round(ax.get_position().bounds, 4)) for ax in fig.axes]
    assert len(boxes) == 4 and len(set(boxes)) == 4          # measured | published per metric, no twin axes
    fvd_measured, fvd_paper = fig.axes[0], fig.axes[1]
    assert fvd_measured.get_title().startswith("measured") and fvd_paper.get_title().startswith("published")
    assert list(fvd_paper.lines[0].get_ydata()) == [v[0] for v in table.paper_values]   # Table 5 FVD
    assert sorted(fvd_measured.lines[0].get_ydata()) == [100.0, 110.0]


def test_no_published_column_without_a_measured_one():
    from vfbench.reports.tables import build_table  # noqa: F401

    table = _lambda_table(["fvd_taichi64"])                  # no IS measured (e.g. TaiChi with I3D)
    assert [c[0] for c in table.paper_columns] == ["FVD"]
    assert not any("IS" in h for h in table.paper_headers())
    assert any("published IS values are left out" in n for n in table.notes)
    html_table = report_html._ablation_table(table)
    assert "paper IS" not in html_table and "paper FVD" in html_table
    assert "paper IS" in " ".join(_lambda_table(["fvd_taichi64", "is_taichi64"]).paper_headers())


def test_banner_names_what_the_records_used():
    recs = [{"protocol": "mini", "dataset": "taichi", "extractor": {"name": "i3d-torchscript"}, "num_fake": 64}]
    banner = " ".join(report_html._mini_banner(recs))
    assert "i3d-torchscript" in banner and "taichi" in banner and "64 generated clips" in banner
    assert "shapes" not in banner and "built-in" not in banner
    assert report_html._mini_banner([{"protocol": "paper", "dataset": "ucf101"}]) == []


def test_record_columns_follow_what_was_measured():
    bare = [{"run": "r", "metric": "fvd_x", "protocol": "mini", "value": 1.0, "trials": 1, "num_fake": 8}]
    text = report_html._records_table(bare)
    assert "<th>value</th>" in text
    assert not any(f"<th>{h}</th>" in text for h in ("std", "95% CI", "trials", "sample set"))
    full = report_html._records_table([dict(bare[0], std=0.5, ci_low=0.5, ci_high=1.5, trials=3)])
    assert all(f"<th>{h}</th>" in full for h in ("std", "95% CI", "trials"))


def test_screenshot_without_chromium_is_one_error_line_before_any_work(tmp_path, capsys, monkeypatch):
    import pytest

    from test_report import make_store
    from vfbench.cli import main

    store = make_store(tmp_path / "res")
    monkeypatch.setenv("VFBENCH_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit) as ei:
        main(["report", "--results", str(store.root), "--screenshot", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert ei.value.code == 2 and err[-1].startswith("error:") and "VFBENCH_CHROMIUM" in err[-1]
    assert not (store.root / "reports" / "report.html").exists()
