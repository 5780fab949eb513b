"""Crash safety: real training / sampling / evaluation processes killed with SIGKILL.

Kill points (see tests/helpers_reliability.py for the hooks):

* training: in the middle of writing checkpoint 3 (a half-written temp file, no rename), right
  after checkpoint 4 is renamed into place but before ``latest.json`` points at it, from outside
  at the first sight of checkpoint 5's temp file (a real kill during ``torch.save``), and a
  checkpoint torn *in place* (as a non-atomic copy would leave it). The run always resumes from
  the newest complete checkpoint and ends with exactly the weights, EMA, optimizer state and
  logged losses of an uninterrupted run (CPU, one thread).
* sampling: in the middle of writing shard 2: the rerun draws only the missing shards (finished
  shard files are not rewritten) and the result equals an uninterrupted sampling byte for byte.
* evaluation: right after the second of three records: both stay intact and the rerun
  (``evaluate --all``) computes only the missing metric.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_reliability import (TINY, assert_same_state, exit_codes, finish, make_samples_run, run, spawn,
                                 tree_digest)

SIGKILLED = -signal.SIGKILL


def _latest(ck: Path) -> int:
    return json.loads((ck / "latest.json").read_text())["step"]


def _log_losses(run_dir: Path):
    import csv

    with open(run_dir / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [(int(r["step"]), r["loss"]) for r in rows]


def _train_lane(res: Path, base, obs) -> None:
    """Run ``a``: killed mid-write by a hook, killed from outside, torn in place; resumed each time."""
    ck = res / "runs" / "a" / "checkpoints"
    # 1. killed while checkpoint 3 is being written: only a torn temp file of it exists
    r = run([*base, "--name", "a"], VFB_FAULT="tear:step-0000003.pt:1")
    assert r.returncode == SIGKILLED, r.stderr
    obs["torn_tmp"] = sorted(p.name for p in ck.glob(".step-0000003.pt.*.tmp"))
    obs["after1"] = (sorted(p.name for p in ck.glob("step-*.pt")), _latest(ck))

    # 2. resumed; SIGKILLed from outside as soon as checkpoint 5 starts to be written
    p = spawn([*base, "--name", "a", "--resume"])
    how = "finished"
    deadline = time.time() + 200
    while p.poll() is None and time.time() < deadline:
        if list(ck.glob(".step-0000005.pt.*.tmp")):
            how = "during the write of checkpoint 5"
        elif (ck / "step-0000005.pt").exists():
            how = "after checkpoint 5 was renamed"
        if how != "finished":
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    r = finish(p)
    obs["external_kill"] = (how, r.returncode)

    # 3. the newest checkpoint is torn in place: resume must skip it (with a warning)
    newest = max(ck.glob("step-*.pt"))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    obs["torn_in_place"] = (newest.name, data[: len(data) // 3])

    # 4. resume to the end
    r = run([*base, "--name", "a", "--resume"])
    assert r.returncode == 0, r.stderr
    obs["final_stderr"] = r.stderr


def _sample_lane(res: Path, base, obs) -> None:
    """Run ``ref``: trained without interruption, then sampled with a kill in the middle of shard 2."""
    r = run([*base, "--name", "ref"])
    assert r.returncode == 0, r.stderr
    cmd = ["sample", "ref", "--num", "6", "--batch-size", "2", "--seed", "3", "--control", "steps=2",
           "--no-preview", "--no-progress", "--device", "cpu", "--results", str(res)]
    k = res / "runs" / "ref" / "samples" / "k"
    r = run([*cmd, "--tag", "k"], VFB_FAULT="tear:shard-00002.npy:1")
    assert r.returncode == SIGKILLED, r.stderr
    obs["killed_shards"] = {n: ((k / n).stat().st_ino, (k / n).stat().st_mtime_ns)
                            for n in ("shard-00000.npy", "shard-00001.npy")}
    obs["killed_state"] = ((k / "shard-00002.npy").exists(), bool(list(k.glob(".shard-00002.npy.*.tmp"))),
                           json.loads((k / "manifest.json").read_text())["complete"])
    r = run([*cmd, "--tag", "k", "::", *cmd, "--tag", "full"])
    assert exit_codes(r.stdout) == [0, 0], r.stderr


def _other_lane(res: Path, base, obs) -> None:
    """Run ``b``: killed after checkpoint 4 is in place but before ``latest.json`` points at it,
    resumed; then an evaluation killed after its second record, rerun."""
    ck = res / "runs" / "b" / "checkpoints"
    r = run([*base, "--name", "b"], VFB_FAULT="kill-after:step-0000004.pt:1")
    assert r.returncode == SIGKILLED, r.stderr
    obs["after2"] = (sorted(p.name for p in ck.glob("step-*.pt")), _latest(ck))
    r = run([*base, "--name", "b", "--resume"])
    assert r.returncode == 0, r.stderr
    _eval_lane(res.parent / "eval", obs)


def _eval_lane(tmp: Path, obs) -> None:
    """Evaluation of three metrics killed right after its second record, then ``evaluate --all``."""
    res, cache, log = tmp / "res", tmp / "cache", tmp / "calls.log"
    make_samples_run(res, "r")
    env = dict(VFB_TEST_METRICS="1", VFBENCH_CACHE=str(cache), VFB_CALL_LOG=str(log))
    metrics = ["--metrics", "fvd_rel,kvd_rel,is_rel", "--results", str(res), "--batch-size", "4"]
    r = run(["evaluate", "r", *metrics], VFB_FAULT="kill-after:/records/:2", **env)
    assert r.returncode == SIGKILLED, r.stderr
    obs["eval_before"] = tree_digest(res / "records")
    log.unlink()
    r = run(["evaluate", "--all", *metrics], **env)
    assert exit_codes(r.stdout) == [0], r.stderr
    obs["eval_after"] = tree_digest(res / "records")
    obs["eval_calls"] = log.read_text().split()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Lane 1 trains run ``a`` to step 6 through two SIGKILLs and a torn file; lane 2 trains ``ref``
    to step 6 uninterrupted and samples it through a kill; lane 3 trains ``b`` through a third kind
    of kill, then kills an evaluation. The lanes run side by side (wall time)."""
    from concurrent.futures import ThreadPoolExecutor

    res = tmp_path_factory.mktemp("crash") / "res"
    base = ["train", "vdm", "--dataset", "shapes", *TINY, "--ckpt-every", "1", "--log-every", "1",
            "--seed", "1", "--results", str(res), "--steps", "6"]
    obs = {"res": res, "ck": res / "runs" / "a" / "checkpoints"}
    with ThreadPoolExecutor(3) as pool:
        lanes = [pool.submit(_train_lane, res, base, obs), pool.submit(_sample_lane, res, base, obs),
                 pool.submit(_other_lane, res, base, obs)]
        for f in lanes:
            f.result()
    return obs


def test_kill_mid_checkpoint_write_leaves_previous_checkpoints_usable(chain):
    assert chain["torn_tmp"], "the hook should have left a half-written temp file"
    files, latest = chain["after1"]
    assert "step-0000003.pt" not in files and latest == 2 and "step-0000002.pt" in files
    files, latest = chain["after2"]
    assert "step-0000004.pt" in files and latest == 3  # latest.json lags; discovery scans the files


def test_resume_after_every_kill_matches_uninterrupted_run_bit_for_bit(chain):
    res = chain["res"]
    how, code = chain["external_kill"]
    assert code in (SIGKILLED, 0)
    assert "skipping unusable checkpoint" in chain["final_stderr"] or how == "finished"
    ref = res / "runs" / "ref"
    for name in ("a", "b"):
        run_dir = res / "runs" / name
        assert_same_state(run_dir / "checkpoints" / "step-0000006.pt", ref / "checkpoints" / "step-0000006.pt")
        # log.csv: every step exactly once, with the losses of the uninterrupted run
        assert _log_losses(run_dir) == _log_losses(ref)
        assert [s for s, _ in _log_losses(run_dir)] == [1, 2, 3, 4, 5, 6]
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6


def test_resume_removes_stale_checkpoint_temp_files(chain):
    """A kill during torch.save leaves ``.step-N.pt.*.tmp`` (as large as a checkpoint); a run killed
    many times would fill the disk with them unless rewriting the file clears them (vfbench.atomic)."""
    assert chain["torn_tmp"]
    assert sorted(p.name for p in chain["ck"].glob(".*.tmp")) == []


def test_sampling_killed_mid_shard_resumes_only_missing_shards(chain):
    out = chain["res"] / "runs" / "ref" / "samples"
    k = out / "k"
    assert chain["killed_state"] == (False, True, False)  # no shard 2, its torn temp, manifest incomplete
    m = json.loads((k / "manifest.json").read_text())
    assert m["complete"] is True and m["drawn_now"] == [2]
    for n, ident in chain["killed_shards"].items():  # finished shards were not redrawn nor rewritten
        assert ((k / n).stat().st_ino, (k / n).stat().st_mtime_ns) == ident
    assert not list(k.glob(".*.tmp"))  # the torn temp file was cleared when shard 2 was redrawn
    for i in range(3):
        a = np.load(k / f"shard-{i:05d}.npy", allow_pickle=False)
        b = np.load(out / "full" / f"shard-{i:05d}.npy", allow_pickle=False)
        assert a.dtype == np.uint8 and a.shape == (2, 4, 3, 8, 8) and np.array_equal(a, b)


def test_evaluation_killed_after_a_record_keeps_it_and_resumes(chain):
    before, after = chain["eval_before"], chain["eval_after"]
    assert sorted(json.loads(v)["metric"] for v in before.values()) == ["fvd_rel", "kvd_rel"]
    assert {k: v for k, v in after.items() if k in before} == before  # finished records untouched
    new = [json.loads(v) for k, v in after.items() if k not in before]
    assert [x["metric"] for x in new] == ["is_rel"]
    assert "real" not in chain["eval_calls"]  # nothing recomputed on the real side


def test_unreadable_checkpoint_is_kept_aside_not_deleted(chain):
    name, torn = chain["torn_in_place"]
    kept = [p for p in chain["ck"].rglob("*") if p.is_file() and p.read_bytes() == torn]
    assert kept, f"the unreadable {name} was deleted by the resume"


def test_stale_temp_cleanup_spares_live_writers_and_other_hosts(tmp_path):
    """Only temps of dead writers on this host go; a concurrent writer's temp file is never touched."""
    import subprocess
    import sys

    from vfbench.atomic import _HOST, atomic_write_bytes

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".x.bin.{_HOST}-{dead_pid}-abc12345.tmp", "live": f".x.bin.{_HOST}-{live.pid}-abc12345.tmp",
                 "other-host": f".x.bin.otherhost-{dead_pid}-abc12345.tmp", "old-style": ".x.bin.abc12345.tmp",
                 "other-file": f".y.bin.{_HOST}-{dead_pid}-abc12345.tmp"}
        for n in names.values():
            (tmp_path / n).write_bytes(b"partial")
        atomic_write_bytes(tmp_path / "x.bin", b"new")
        left = {k for k, n in names.items() if (tmp_path / n).exists()}
        assert left == {"live", "other-host", "old-style", "other-file"}
        assert (tmp_path / "x.bin").read_bytes() == b"new"
    finally:
        live.kill()
        live.wait()
