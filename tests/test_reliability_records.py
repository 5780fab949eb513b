"""Files read back from a results or cache directory: checked on read, one bad file never takes down a reader.

Every case writes one damaged file next to good ones and runs the readers of that file: the bad file is
skipped with one warning naming it (readers that scan a store), or is one ``error:`` line naming it and
the fix (the file the user asked for); the good files are still used.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from helpers_reliability import assert_clean_error, make_samples_run, register_test_metrics, cli_in_process as cli

NOT_RECORDS = {
    "list.json": "[1, 2]", "null.json": "null", "text.json": '"fvd"', "number.json": "3",
    "no-metric.json": '{"value": 1.0}', "value-text.json": '{"metric": "fvd_rel", "value": "12"}',
    "bool-value.json": '{"metric": "fvd_rel", "value": true}', "run-list.json": '{"metric": "m", "value": 1, "run": [1]}',
    "torn.json": '{"metric": "fvd_rel", "val', "binary.json": b"\xff\xfe\x00garbage",
}


@pytest.fixture
def metrics_env(tmp_path, monkeypatch):
    register_test_metrics(monkeypatch)
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _plant(records_dir, files=NOT_RECORDS):
    records_dir.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (records_dir / name).write_bytes(body if isinstance(body, bytes) else body.encode())


def test_bad_records_are_skipped_with_one_warning_each(tmp_path):
    from vfbench.results import ResultsStore

    store = ResultsStore(tmp_path / "res")
    good = store.write_record({"run": "r", "metric": "fvd_rel", "protocol": "mini", "value": float("nan")})
    _plant(store.records_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = list(store.iter_records())
    assert [r["id"] for r in recs] == [good.stem]
    named = [str(w.message) for w in caught]
    assert len(named) == len(NOT_RECORDS)
    for name in NOT_RECORDS:
        assert sum(f"/{name} " in m for m in named) == 1, (name, named)


def test_evaluate_all_and_report_survive_records_that_are_not_objects(capsys, metrics_env):
    res = metrics_env / "res"
    make_samples_run(res, "r")
    _plant(res / "records", {"list.json": "[1, 2]", "null.json": "null"})
    with pytest.warns(UserWarning, match="list.json"):
        code, out, err = cli(capsys, "evaluate", "--all", "--metrics", "fvd_rel", "--results", res, "--batch-size", "4")
    assert code == 0, err
    assert "1 record(s) written" in out
    pytest.importorskip("vfbench.reports.html")
    with pytest.warns(UserWarning, match="null.json"):
        code, out, err = cli(capsys, "report", "--results", res, "--no-control-grid")
    assert code == 0 and out.strip().endswith("report.html"), err


def test_records_check_lists_bad_files_and_moves_them_aside(capsys, tmp_path):
    from vfbench.results import ResultsStore

    store = ResultsStore(tmp_path / "res")
    store.write_record({"run": "r", "metric": "m", "value": 1.0})
    _plant(store.records_dir)
    code, out, err = cli(capsys, "records", "check", "--results", store.root)
    assert_clean_error(err, code, 1, "not result records")
    listed = [ln for ln in out.splitlines() if ln.startswith("record ")]
    assert sorted(ln.split()[1].rsplit("/", 1)[1] for ln in listed) == sorted(NOT_RECORDS)
    assert f"{len(NOT_RECORDS) + 1} record file(s)" in out and f"{len(NOT_RECORDS)} bad" in out
    code, out, err = cli(capsys, "records", "check", "--results", store.root, "--move-aside")
    assert code == 0, err
    assert sorted(p.name for p in (store.records_dir / "unreadable").iterdir()) == sorted(NOT_RECORDS)
    code, out, err = cli(capsys, "records", "check", "--results", store.root)
    assert code == 0 and "1 good, 0 bad" in out


def test_a_run_config_that_is_not_an_object(capsys, metrics_env):
    res = metrics_env / "res"
    make_samples_run(res, "good")
    bad = make_samples_run(res, "bad")
    (bad / "config.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="bad/config.json"):  # --all: the other run is still evaluated
        code, out, err = cli(capsys, "evaluate", "--all", "--metrics", "is_rel", "--results", res, "--batch-size", "4")
    assert code == 0 and "1 record(s) written" in out, err
    code, _, err = cli(capsys, "evaluate", "bad", "--metrics", "is_rel", "--results", res)  # named: an error
    assert_clean_error(err, code, 1, "bad/config.json", "not a JSON object")
    (bad / "config.json").write_text('{"generator": null, "generator_config": {}}')
    code, _, err = cli(capsys, "sample", "bad", "--num", "2", "--results", res, "--device", "cpu")
    assert_clean_error(err, code, 1, "config.json", "'generator'")


@pytest.mark.parametrize("manifest", ["null", "[1]", '{"complete": true, "shards": 1000000000000, "num": 4}',
                                      '{"complete": true, "shards": "2", "num": 4}'])
def test_a_damaged_samples_manifest(tmp_path, manifest):
    from vfbench.errors import DataError
    from vfbench.sampling import load_samples

    d = tmp_path / "s"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.zeros((4, 2, 3, 4, 4), np.uint8))
    (d / "manifest.json").write_text(manifest)
    with pytest.raises(DataError, match="manifest.json|shards"):
        load_samples(d)


def test_a_damaged_dataset_index_and_cache_marker_are_ignored(tmp_path):
    from vfbench.data import build_dataset
    from vfbench.data.prepare import cache_paths, index_path

    root = tmp_path / "frames"
    from PIL import Image

    for v in range(2):
        (root / f"v{v}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (v * 60, i * 40, 0)).save(root / f"v{v}" / f"{i}.png")
    prepared = tmp_path / "prepared"
    for body in ("[1, 2]", '{"version": 1, "dataset": "folder", "entries": [{"path": 3}]}'):
        index_path(prepared, "folder", "train").parent.mkdir(parents=True, exist_ok=True)
        index_path(prepared, "folder", "train").write_text(body)
        frames_file, marker = cache_paths(prepared, "folder", "train", 8)
        frames_file.write_bytes(bytes(2 * 4 * 3 * 8 * 8))
        marker.write_text(json.dumps({"version": 1, "shape": [8, 3, 8, 8], "bytes": 1536,
                                      "offsets": {"v0": [0, 99, 0, 0]}}))  # points past the frames
        with pytest.warns(UserWarning) as caught:
            ds = build_dataset("folder", data_root=str(root), frames=4, size=8, prepared=str(prepared))
        assert any("index.json" in str(w.message) for w in caught)
        assert any("frame cache" in str(w.message) for w in caught)
        assert len(ds) == 2 and ds.cache is None and tuple(ds[1]["video"].shape) == (4, 3, 8, 8)


def test_a_binary_training_log(tmp_path):
    from vfbench.reports.plots import read_log
    from vfbench.training import CsvLog

    log = tmp_path / "run" / "log.csv"
    log.parent.mkdir()
    log.write_bytes(b"\xff\xfe\x00\x01" * 50)
    with pytest.warns(UserWarning, match="log.csv"):
        assert read_log(log) == ([], [])  # the report draws no curve for it
    with pytest.warns(UserWarning, match="unreadable"):
        w = CsvLog(log, resume_step=3)  # a resumed run keeps the damaged log aside and starts a new one
    w.write({"step": 4, "loss": 0.5})
    assert log.read_text().splitlines()[0].startswith("step,loss")
    assert (tmp_path / "run" / "unreadable" / "log.csv").read_bytes().startswith(b"\xff\xfe")


def test_a_damaged_i3d_sidecar_is_ignored(tmp_path):
    from vfbench.metrics import i3d_weights as W

    out = W.converted_path(tmp_path)
    out.parent.mkdir(parents=True)
    out.write_bytes(b"x")
    out.with_name(W.SIDECAR_NAME).write_text("[1]")
    with pytest.warns(UserWarning, match=W.SIDECAR_NAME):
        assert W.cached_i3d(tmp_path) is None
    with pytest.raises(W.WeightsError, match="not a JSON object"):
        W.verify_cached(tmp_path)
