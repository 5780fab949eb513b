"""Concurrency: processes sharing one results directory and one statistics cache.

Two ``vfbench evaluate`` processes (real subprocesses, a test-double extractor registered in the
child, started behind a barrier so that they really overlap, the extractor slowed down to widen
the race windows) write records into the same ``records/`` and statistics into the same cache.
Nothing may be torn or lost, and the real-data statistics must be computed once (the cache's file
lock), not once per process.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers_reliability import exit_codes, make_samples_run, spawn, finish


def test_two_evaluations_share_results_and_cache_without_loss(tmp_path):
    res, cache, log = tmp_path / "res", tmp_path / "cache", tmp_path / "calls.log"
    run_dir = make_samples_run(res, "r")
    samples = run_dir / "samples" / "t"
    env = dict(VFB_TEST_METRICS="1", VFBENCH_CACHE=str(cache), VFB_CALL_LOG=str(log),
               VFB_BARRIER=f"{tmp_path / 'barrier'}:2", VFB_EXTRACT_SLEEP="0.05")
    args = ["evaluate", "--samples", str(samples), "--dataset", "reltiny", "--metrics", "fvd_rel,kvd_rel,is_rel",
            "--results", str(res), "--batch-size", "4"]
    procs = [spawn(args, **env), spawn(args, **env)]
    outs = [finish(p) for p in procs]
    for r in outs:
        assert exit_codes(r.stdout) == [0], r.stderr

    recs = sorted((res / "records").glob("*"))
    assert len(recs) == 6 and all(p.suffix == ".json" for p in recs)  # no temp files, nothing lost
    parsed = [json.loads(p.read_text()) for p in recs]
    assert sorted(r["metric"] for r in parsed) == sorted(["fvd_rel", "kvd_rel", "is_rel"] * 2)
    assert len({r["id"] for r in parsed}) == 6
    by_metric = {}
    for r in parsed:  # both processes computed the same numbers
        by_metric.setdefault(r["metric"], set()).add(r["value"])
    assert all(len(v) == 1 for v in by_metric.values()), by_metric

    stats = sorted((cache / "stats").iterdir())
    npz = [p for p in stats if p.suffix == ".npz"]
    assert len(npz) == 2 and not [p for p in stats if p.suffix == ".tmp"]
    for p in npz:
        with np.load(p, allow_pickle=False) as z:
            assert z.files
    calls = [line.split() for line in log.read_text().splitlines()]
    real = [c for c in calls if c[0] == "real"]
    assert sum(int(c[1]) for c in real) == 16, "the real statistics were computed more than once"
    assert len({c[2] for c in calls}) == 2  # both processes did extract (their fake clips)


def test_three_evaluate_all_write_each_record_once(tmp_path):
    """Three ``evaluate --all`` started together on one results dir: each record is claimed under its lock,
    so every (run, metric) is computed and written by exactly one process, and every process exits 0."""
    res, log = tmp_path / "res", tmp_path / "calls.log"
    make_samples_run(res, "r")
    env = dict(VFB_TEST_METRICS="1", VFBENCH_CACHE=str(tmp_path / "cache"), VFB_CALL_LOG=str(log),
               VFB_BARRIER=f"{tmp_path / 'barrier'}:3", VFB_EXTRACT_SLEEP="0.05")
    args = ["evaluate", "--all", "--metrics", "fvd_rel,kvd_rel,is_rel", "--results", str(res), "--batch-size", "4"]
    outs = [finish(p) for p in [spawn(args, **env) for _ in range(3)]]
    for r in outs:
        assert exit_codes(r.stdout) == [0], r.stderr
    recs = [json.loads(p.read_text()) for p in sorted((res / "records").glob("*.json"))]
    assert sorted(r["metric"] for r in recs) == ["fvd_rel", "is_rel", "kvd_rel"], [r["metric"] for r in recs]
    written = [int(line.split()[0]) for r in outs for line in r.stdout.splitlines() if "record(s) written" in line]
    assert sum(written) == 3  # and the other processes said so: nothing (left) to evaluate
    fake = [c for c in (line.split() for line in log.read_text().splitlines()) if c[0] == "fake"]
    # the fake features of each metric were extracted once: 8 clips per metric computed, not per process
    assert sum(int(c[1]) for c in fake) <= 3 * 8


def test_concurrent_record_writers_in_threads_lose_nothing(tmp_path):
    """ResultsStore.write_record from many threads at once: every record lands, whole."""
    from vfbench.results import ResultsStore

    store = ResultsStore(tmp_path / "res")
    errors = []

    def writer(k):
        try:
            for i in range(10):
                store.write_record({"run": "r", "metric": "m", "value": k * 100 + i, "provenance": {}})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    values = sorted(r["value"] for r in store.iter_records())
    assert values == sorted(k * 100 + i for k in range(8) for i in range(10))
    assert not list(Path(store.records_dir).glob(".*"))


def test_file_lock_serialises_read_modify_write_across_processes(tmp_path):
    """``FileLock`` around a read-modify-write of one JSON counter, from 4 processes x 25 increments."""
    import subprocess
    import sys

    counter = tmp_path / "counter.json"
    counter.write_text('{"n": 0}')
    code = (
        "import json, sys\n"
        "from vfbench.atomic import FileLock, atomic_write_json\n"
        "p = sys.argv[1]\n"
        "for _ in range(25):\n"
        "    with FileLock(p + '.lock'):\n"
        "        n = json.load(open(p))['n']\n"
        "        atomic_write_json(p, {'n': n + 1})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(counter)]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert json.loads(counter.read_text()) == {"n": 100}


def test_second_trainer_of_a_running_run_is_refused(tmp_path, capsys):
    import time

    from helpers_reliability import TINY
    from vfbench.cli import main

    res = tmp_path / "res"
    base = ["train", "vdm", "--dataset", "shapes", *TINY, "--ckpt-every", "1", "--results", str(res), "--name", "x"]
    first = spawn([*base, "--steps", "100000"])
    try:
        ck = res / "runs" / "x" / "checkpoints"
        deadline = time.time() + 120
        while not (ck / "latest.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, finish(first).stderr
        with pytest.raises(SystemExit) as ei:  # in this process: the same run, resumed, while it trains
            main([*base, "--steps", "1", "--resume"])
        err = capsys.readouterr().err
        assert ei.value.code == 1 and "being trained by another process" in err and "pid" in err, err
        cfg = json.loads((res / "runs" / "x" / "config.json").read_text())
        assert cfg["train"]["steps"] == 100000  # the refused command rewrote nothing
    finally:
        first.kill()
        finish(first)


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    """A results directory shared by a team: records must be readable by the group like any file
    created with open(); mkstemp alone would make every atomic write 0600."""
    import os

    from vfbench.atomic import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
