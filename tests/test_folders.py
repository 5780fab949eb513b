"""Real-dataset layouts on tiny folders written here: TaiChi, UCF-101, Sky, Weizmann, any folder."""

import warnings

import numpy as np
import pytest
import torch

from test_video_io import coded_frames, write_png_frames, write_video
from vfbench.data import build_dataset
from vfbench.data.folders import DataWarning
from vfbench.errors import DataError, UsageError


@pytest.fixture(scope="module")
def taichi_root(tmp_path_factory):
    """train/: two 64-frame PNG folders, a lossless 64-frame mp4, a corrupt mp4, a 10-frame mp4; test/: one."""
    root = tmp_path_factory.mktemp("taichi")
    write_png_frames(root / "train" / "a_video", coded_frames(64, video=1))
    write_png_frames(root / "train" / "b_video", coded_frames(64, video=2))
    write_video(root / "train" / "c_video.mp4", coded_frames(64, video=3))
    (root / "train" / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    write_video(root / "train" / "short.mp4", coded_frames(10, video=5))
    write_png_frames(root / "test" / "t_video", coded_frames(61, video=4))
    return root


def _taichi(root, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("taichi", data_root=str(root), frames=16, size=16, **kw)
    return ds, [w for w in caught if issubclass(w.category, DataWarning)]


def test_taichi_clips_are_16_frames_at_stride_4_with_the_right_frames(taichi_root):
    ds, caught = _taichi(taichi_root, split="train", sampling="first")
    assert len(ds) == 3 and ds.sampling.stride == 4
    for i, video_id in enumerate([1, 2, 3]):
        item = ds[i]
        clip = item["video"]
        assert clip.dtype == torch.uint8 and tuple(clip.shape) == (16, 3, 16, 16)
        assert clip[:, 0, 0, 0].tolist() == list(range(0, 61, 4))  # red encodes the frame number
        assert torch.all(clip[:, 1] == 10 * video_id)
        assert clip[0, 2, 0].tolist() == list(range(2, 18))  # centre crop of the 20 columns
        assert item["label"] == item["content"] == item["motion"] == -1 and item["index"] == i


def test_corrupt_and_short_files_are_skipped_with_one_counted_warning(taichi_root):
    ds, caught = _taichi(taichi_root, split="train")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 of 5 sources" in message and "corrupt.mp4" in message and "short.mp4" in message
    assert {p for p, _, _ in ds.skipped} == {"train/corrupt.mp4", "train/short.mp4"}
    assert ds.describe()["count"] == 3 and ds.describe()["skipped"] == 2


def test_random_windows_are_deterministic_and_change_per_epoch(taichi_root):
    ds, _ = _taichi(taichi_root, split="train", seed=3)
    starts = [ds[0]["video"][0, 0, 0, 0].item()]
    again, _ = _taichi(taichi_root, split="train", seed=3)
    assert torch.equal(ds[0]["video"], again[0]["video"])
    for epoch in range(1, 8):
        ds.set_epoch(epoch)
        clip = ds[0]["video"][:, 0, 0, 0]
        assert (clip - clip[0]).tolist() == list(range(0, 61, 4))
        starts.append(clip[0].item())
    assert set(starts) <= {0, 1, 2, 3} and len(set(starts)) > 1


def test_taichi_splits(taichi_root):
    test, caught = _taichi(taichi_root, split="test")
    assert len(test) == 1 and not caught
    both, _ = _taichi(taichi_root, split="all")
    assert len(both) == 4
    with pytest.raises(UsageError, match="splits"):
        _taichi(taichi_root, split="val")


def test_missing_folder_and_missing_root_explain_the_layout(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"no such folder .*train/ and <root>/test/.*download it yourself"):
        build_dataset("taichi", data_root=str(tmp_path / "absent"))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="found no .mp4 videos or frame folders in"):
        build_dataset("taichi", data_root=str(tmp_path))
    monkeypatch.delenv("VFBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="pass --data-root DIR .* VFBENCH_DATA"):
        build_dataset("taichi")


def test_data_root_from_environment(taichi_root, monkeypatch):
    monkeypatch.setenv("VFBENCH_DATA", str(taichi_root.parent))
    target = taichi_root.parent / "taichi"
    if not target.exists():
        target.symlink_to(taichi_root)
    ds = build_dataset("taichi", split="test", frames=16, size=16)
    assert len(ds) == 1


def test_every_source_too_short_is_a_clear_error(tmp_path):
    write_video(tmp_path / "train" / "tiny.mp4", coded_frames(12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"tiny.mp4: too short, 12 frames, the clip needs 61"):
            build_dataset("taichi", data_root=str(tmp_path), frames=16, size=16)


def test_decode_failure_mid_epoch_falls_back_to_the_next_item(tmp_path):
    for v in range(3):
        write_png_frames(tmp_path / "train" / f"v{v}", coded_frames(20, video=v))
    ds = build_dataset("folder", data_root=str(tmp_path), frames=4, size=16, sampling="first")
    (tmp_path / "train" / "v1" / "frame_2.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="v1 failed to decode"):
        item = ds[1]
    assert item["index"] == 2 and torch.all(item["video"][:, 1] == 20)
    assert ds.decode_failures == 1
    assert ds[1]["index"] == 2 and ds.decode_failures == 1  # a known-bad item is not retried


@pytest.fixture()
def ucf_root(tmp_path):
    classes = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for c in classes:
        disk_name = "HandStandPushups" if c == "HandstandPushups" else c  # the official case mismatch
        for g in (1, 8):
            rel = f"{c}/v_{disk_name}_g{g:02d}_c01.avi"
            write_video(tmp_path / "UCF-101" / c / f"v_{disk_name}_g{g:02d}_c01.avi", coded_frames(4, h=8, w=20))
            (test if g == 1 else train).append(rel)
    (lists / "trainlist01.txt").write_text("".join(f"{r} {classes.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return tmp_path


def test_ucf101_labels_and_official_splits(ucf_root):
    kw = dict(data_root=str(ucf_root), frames=4, size=8)
    train = build_dataset("ucf101", split="train", **kw)
    test = build_dataset("ucf101", split="test", **kw)
    both = build_dataset("ucf101", split="all", **kw)
    assert (len(train), len(test), len(both)) == (3, 3, 6)
    assert train.num_classes == 3 and train.classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert [train[i]["label"] for i in range(3)] == [0, 1, 2]
    assert all("_g01_" in it.path for it in test.items) and all("_g08_" in it.path for it in train.items)
    assert tuple(train[0]["video"].shape) == (4, 3, 8, 8)
    with pytest.raises(UsageError, match="fold"):
        build_dataset("ucf101", fold=4, **kw)


def test_ucf101_missing_lists_say_what_is_expected(ucf_root):
    (ucf_root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(DataError, match="no split list .*testlist01.txt.*UCF101"):
        build_dataset("ucf101", split="test", data_root=str(ucf_root), frames=4, size=8)


def test_sky_two_level_frame_folders(tmp_path):
    for split, videos in (("train", 2), ("test", 1)):
        for v in range(videos):
            for c in range(2):
                write_png_frames(tmp_path / f"sky_{split}" / f"vid{v}" / f"vid{v}_{c}", coded_frames(5, h=8, w=8))
    train = build_dataset("sky", split="train", data_root=str(tmp_path), frames=5, size=8)
    assert len(train) == 4 and train.items[1].path == "sky_train/vid0/vid0_1"
    assert len(build_dataset("sky", split="test", data_root=str(tmp_path), frames=5, size=8)) == 2
    with pytest.raises(DataError, match="sky_train/<video>/<clip>"):
        build_dataset("sky", split="train", data_root=str(tmp_path / "sky_train"), frames=5, size=8)


def test_weizmann_person_and_action_labels(tmp_path):
    for name in ["daria_bend", "daria_wave1", "daria_wave2", "denis_run", "lena_run1", "lena_run2"]:
        write_video(tmp_path / "videos" / f"{name}.avi", coded_frames(4, h=8, w=20))
    ds = build_dataset("weizmann", data_root=str(tmp_path), frames=4, size=8)
    assert ds.classes == ["bend", "run", "wave1", "wave2"] and ds.persons == ["daria", "denis", "lena"]
    labels = {it.path.split("/")[-1]: (it.content, it.motion) for it in ds.items}
    assert labels["lena_run2.avi"] == (2, 1) and labels["denis_run.avi"] == (1, 1)
    assert labels["daria_wave2.avi"] == (0, 3)
    assert ds[0]["label"] == ds[0]["motion"] and ds.num_classes == 4
    with pytest.raises(UsageError, match="splits"):
        build_dataset("weizmann", split="test", data_root=str(tmp_path), frames=4, size=8)


def test_any_folder_recursively(tmp_path):
    write_video(tmp_path / "x" / "y" / "one.mp4", coded_frames(6, h=8, w=20))
    write_png_frames(tmp_path / "x" / "frames_two", coded_frames(6, h=8, w=8))
    write_video(tmp_path / "three.avi", coded_frames(6, h=8, w=20))
    ds = build_dataset("folder", split="all", data_root=str(tmp_path), frames=6, size=8)
    assert sorted(it.path for it in ds.items) == ["three.avi", "x/frames_two", "x/y/one.mp4"]
    assert ds.num_classes == 0 and ds.describe()["root"] == str(tmp_path)
