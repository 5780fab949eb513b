"""``data info`` and ``data prepare`` check what training will decode, count each source once, and never
write into the user's data folder.

A dataset of 7 frame folders: 4 good, 1 too short for the clip, 1 mixing frame sizes, 1 holding a text
file named ``.png``, (and for ``prepare``) one whose PNG is cut short after a valid header.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers_reliability import tree_digest, cli_in_process as cli

FRAMES = 4


def _frames(folder, n, size=(8, 8), colour=0):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (colour, i * 30, 0)).save(folder / f"{i:03d}.png")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    r = tmp_path / "data"
    for k in range(4):
        _frames(r / f"good{k}", 6, colour=40 * k)
    _frames(r / "short", 2)
    _frames(r / "mixed", 6)
    Image.new("RGB", (8, 10), (1, 2, 3)).save(r / "mixed" / "003.png")
    _frames(r / "fake", 6)
    (r / "fake" / "002.png").write_text("not an image, just named like one")
    return r


def test_data_info_skips_what_training_could_not_decode(capsys, root):
    code, out, err = cli(capsys, "data", "info", "folder", "--data-root", root, "--frames", FRAMES, "--size", 8)
    assert code == 0, err
    assert "folder (train): 4 clips" in out
    skipped = {ln.split()[1].rstrip(":"): ln for ln in out.splitlines() if ln.strip().startswith("skipped ")}
    assert set(skipped) == {"short", "mixed", "fake"}
    assert "mixes frame sizes" in skipped["mixed"] and "too short" in skipped["short"]
    assert "002.png cannot be read" in skipped["fake"]


def test_training_dataset_agrees_with_data_info(root):
    from vfbench.data import build_dataset

    with pytest.warns(UserWarning, match="skipped 3 of 7 sources"):
        ds = build_dataset("folder", data_root=str(root), frames=FRAMES, size=8)
    assert sorted(it.path for it in ds.items) == ["good0", "good1", "good2", "good3"]
    assert all(tuple(ds[i]["video"].shape) == (FRAMES, 3, 8, 8) for i in range(len(ds)))  # every clip decodes
    assert ds.decode_failures == 0


def test_prepare_counts_each_source_once_and_decodes_every_frame(capsys, root):
    _frames(root / "cut", 6)
    png = (root / "cut" / "004.png").read_bytes()
    (root / "cut" / "004.png").write_bytes(png[: len(png) // 2])  # a valid header, then nothing
    before = tree_digest(root)
    code, out, err = cli(capsys, "data", "prepare", "folder", "--source", root, "--split", "all", "--frames", FRAMES)
    assert code == 0, err
    assert "4 of 8 sources usable, 4 skipped (1 too short, 3 unreadable)" in out
    index_file = out.rsplit("index: ", 1)[1].split()[0]
    index = json.loads(open(index_file).read())
    reasons = {s["path"]: s["reason"] for s in index["skipped"]}
    assert sorted(reasons) == ["cut", "fake", "mixed", "short"]  # each once
    assert reasons["cut"].startswith("unreadable") and "004.png" in reasons["cut"]
    assert tree_digest(root) == before and not (root / "vfbench-prepared").exists()  # the data folder untouched


def test_prepare_writes_under_the_cache_dir_unless_told_otherwise(capsys, root, tmp_path, monkeypatch):
    from vfbench.data import build_dataset
    from vfbench.data.prepare import default_prepared_dir

    code, out, err = cli(capsys, "data", "prepare", "folder", "--source", root, "--split", "all", "--frames", FRAMES)
    assert code == 0, err
    where = default_prepared_dir("folder", root)
    assert where.is_relative_to(tmp_path / "cache") and (where / "folder-all.index.json").is_file()

    import vfbench.data.folders as F

    monkeypatch.setattr(F, "count_frames", lambda p: pytest.fail(f"{p} was counted again: the index was not found"))
    with pytest.warns(UserWarning):
        assert len(build_dataset("folder", data_root=str(root), frames=FRAMES, size=8)) == 4
    monkeypatch.undo()
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    code, out, err = cli(capsys, "data", "prepare", "folder", "--source", root, "--frames", FRAMES,
                         "--out", tmp_path / "elsewhere")
    assert code == 0 and (tmp_path / "elsewhere" / "folder-all.index.json").is_file(), err
    assert "prepared=" in out
