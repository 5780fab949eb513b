"""`vfbench data prepare/info` and the pre-decoded frame cache (byte-identical to decoding)."""

import json
import os
import warnings

import pytest
import torch
from typer.testing import CliRunner

from test_video_io import coded_frames, write_png_frames, write_video
from vfbench.cli import app
from vfbench.data import build_dataset
from vfbench.data import prepare as P

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """prepare writes under the cache directory: a fresh one per test."""
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))


def prepared(root):
    return P.default_prepared_dir("taichi", root)


def _taichi_tree(root):
    write_png_frames(root / "train" / "a", coded_frames(40, h=16, w=20, video=1))
    write_video(root / "train" / "b.mp4", coded_frames(33, h=16, w=20, video=2))
    write_video(root / "train" / "c.avi", coded_frames(30, h=32, w=20, video=3))
    (root / "train" / "broken.mp4").write_bytes(b"\x00" * 500)
    write_png_frames(root / "test" / "t", coded_frames(30, h=16, w=20, video=4))
    return root


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_prepare_writes_an_index_with_counts_labels_and_skips(tmp_path):
    root = _taichi_tree(tmp_path)
    result = runner.invoke(app, ["data", "prepare", "taichi", "--source", str(root), "--frames", "8"])
    assert result.exit_code == 0, result.output
    assert "4 of 5 sources usable, 1 skipped (0 too short, 1 unreadable)" in result.output
    index = json.loads((prepared(root) / "taichi-all.index.json").read_text())
    counts = {e["path"]: e["frames"] for e in index["entries"]}
    assert counts == {"train/a": 40, "train/b.mp4": 33, "train/c.avi": 30, "train/broken.mp4": None,
                      "test/t": 30}
    reasons = {s["path"]: s["reason"] for s in index["skipped"]}
    assert list(reasons) == ["train/broken.mp4"] and reasons["train/broken.mp4"].startswith("unreadable")
    assert index["clip"]["stride"] == 4 and index["clip"]["frames"] == 8


def test_index_counts_are_reused_only_while_files_are_unchanged(tmp_path, monkeypatch):
    root = _taichi_tree(tmp_path)
    P.prepare("taichi", root, frames=8)
    import vfbench.data.folders as F

    calls = []
    monkeypatch.setattr(F, "count_frames", lambda path: calls.append(path) or 99)
    ds = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16)
    assert calls == [] and sorted(ds.frame_counts) == [30, 33, 40]  # no decoder opened at all
    os.utime(root / "train" / "b.mp4", ns=(1, 1))
    ds = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16)
    assert [p.name for p in calls] == ["b.mp4"] and 99 in ds.frame_counts


@pytest.mark.parametrize("size", [16, 8])  # 16: crop only (exact); 8: crop + anti-aliased resize
def test_cache_gives_byte_identical_clips(tmp_path, size):
    root = _taichi_tree(tmp_path)
    result = runner.invoke(app, ["data", "prepare", "taichi", "--source", str(root), "--cache",
                                 "--size", str(size), "--frames", "8"])
    assert result.exit_code == 0, result.output
    frames_file, marker = P.cache_paths(prepared(root), "taichi", "all", size)
    meta = json.loads(marker.read_text())
    assert meta["shape"] == [40 + 33 + 30 + 30, 3, size, size] and frames_file.stat().st_size == meta["bytes"]
    for split in ("train", "test"):
        cached = _quiet(build_dataset, "taichi", split=split, data_root=str(root), frames=8, size=size, seed=4)
        direct = _quiet(build_dataset, "taichi", split=split, data_root=str(root), frames=8, size=size, seed=4,
                        use_cache=False)
        assert cached.cache is not None and direct.cache is None
        assert cached.describe()["frame_cache"] == str(frames_file)
        for i in range(len(direct)):
            assert torch.equal(cached[i]["video"], direct[i]["video"]), (split, i)
    if size == 16:
        clip = cached[0]["video"]
        assert (clip[:, 0, 0, 0] - clip[0, 0, 0, 0]).tolist() == list(range(0, 29, 4))


def test_cache_ignores_a_changed_source(tmp_path, monkeypatch):
    root = _taichi_tree(tmp_path)
    P.prepare("taichi", root, frames=8, cache=True, size=16)
    write_png_frames(root / "train" / "a", coded_frames(40, h=16, w=20, video=7))  # new content
    os.utime(root / "train" / "a", ns=(5, 5))
    ds = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16)
    assert torch.all(ds[0]["video"][:, 1] == 70)  # decoded afresh, not the stale cached frames


def test_interrupted_cache_build_leaves_no_cache(tmp_path, monkeypatch):
    root = _taichi_tree(tmp_path)
    P.prepare("taichi", root, frames=8, cache=True, size=16)
    import vfbench.data.video_io as V

    real, seen = V.read_frames, []

    def dies_on_second_source(path, ids):
        seen.append(path)
        if len({str(p) for p in seen}) > 1:
            raise KeyboardInterrupt
        return real(path, ids)

    monkeypatch.setattr(V, "read_frames", dies_on_second_source)
    with pytest.raises(KeyboardInterrupt):
        P.prepare("taichi", root, frames=8, cache=True, size=16)
    out = prepared(root)
    frames_file, marker = P.cache_paths(out, "taichi", "all", 16)
    assert not marker.exists()  # the old marker was removed before the rebuild began
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    monkeypatch.setattr(V, "read_frames", real)
    ds = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16)
    assert ds.cache is None and tuple(ds[0]["video"].shape) == (8, 3, 16, 16)


def test_source_failing_to_decode_is_marked_unreadable_and_left_out(tmp_path, monkeypatch):
    root = _taichi_tree(tmp_path)
    import vfbench.data.video_io as V

    real = V.read_frames

    def fails_late_in_b(path, ids):
        if path.name == "b.mp4" and ids[0] >= 1:
            raise V.DataError("b.mp4 broke")
        return real(path, ids)

    monkeypatch.setattr(P, "_DECODE_CHUNK", 8)
    monkeypatch.setattr(V, "read_frames", fails_late_in_b)
    summary = P.prepare("taichi", root, frames=8, cache=True, size=16)
    monkeypatch.setattr(V, "read_frames", real)
    assert summary["cached_sources"] == 3 and summary["cached_frames"] == 40 + 30 + 30
    frames_file, marker = P.cache_paths(prepared(root), "taichi", "all", 16)
    assert frames_file.stat().st_size == 100 * 3 * 16 * 16  # the partial frames of b were dropped
    index = json.loads((prepared(root) / "taichi-all.index.json").read_text())
    assert any(s["path"] == "train/b.mp4" and s["reason"].startswith("unreadable") for s in index["skipped"])
    assert summary["usable"] == 3 and summary["unreadable"] == 2  # training would fail on b too: it is skipped
    cached = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16, seed=1)
    direct = _quiet(build_dataset, "taichi", data_root=str(root), frames=8, size=16, seed=1, use_cache=False)
    for i in range(len(direct)):
        assert torch.equal(cached[i]["video"], direct[i]["video"])


def test_torn_cache_file_is_ignored_with_a_warning(tmp_path):
    root = _taichi_tree(tmp_path)
    P.prepare("taichi", root, frames=8, cache=True, size=16)
    frames_file, _ = P.cache_paths(prepared(root), "taichi", "all", 16)
    with open(frames_file, "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(UserWarning, match="does not match"):
        ds = build_dataset("taichi", data_root=str(root), frames=8, size=16)
    assert ds.cache is None


def test_prepare_errors_and_info(tmp_path):
    result = runner.invoke(app, ["data", "prepare", "shapes", "--source", str(tmp_path)])
    assert result.exit_code != 0 and "nothing to prepare" in str(result.exception)
    result = runner.invoke(app, ["data", "prepare", "taichi", "--source", str(tmp_path / "absent")])
    assert "download it yourself" in str(result.exception)
    result = runner.invoke(app, ["data", "prepare", "taichy", "--source", str(tmp_path)])
    assert "did you mean 'taichi'" in str(result.exception)
    root = _taichi_tree(tmp_path / "t")
    result = runner.invoke(app, ["data", "info", "taichi", "--data-root", str(root), "--frames", "8"])
    assert result.exit_code == 0, result.output
    assert "taichi (train): 3 clips" in result.output and "skipped train/broken.mp4: unreadable" in result.output


def test_cli_entry_point_reports_errors_in_one_line(tmp_path, capsys, monkeypatch):
    from vfbench.cli import main

    monkeypatch.delenv("VFBENCH_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "taichi", "--source", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("error: taichi: no such folder") and "Traceback" not in err
