"""Sharded evaluation under torchrun: 2 gloo processes on CPU must give exactly the single-process
numbers, with one set of records (rank 0's) and errors raised on every rank instead of a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from vfbench.errors import UsageError
from vfbench.metrics.protocols import MetricSpec

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch built without gloo")

FRAMES, SIZE, BATCH = 8, 32, 2
NUM_REAL, NUM_FAKE, TRIALS = 7, 5, 2     # 4 real / 3 fake batches of 2: uneven blocks on 2 ranks
TESTS_DIR = str(Path(__file__).resolve().parent)


def specs():
    kw = dict(frames=FRAMES, resolution=SIZE)
    return [MetricSpec("fvd_ddp_t", "fvd", "shapes-net", num_real=NUM_REAL, num_fake=NUM_FAKE, **kw),
            MetricSpec("kvd_ddp_t", "kvd", "shapes-net", num_real=NUM_REAL, num_fake=NUM_FAKE, **kw),
            MetricSpec("is_ddp_t", "is", "shapes-net", num_real=0, num_fake=NUM_FAKE, splits=2,
                       higher_is_better=True, **kw)]


def make_samples(folder: Path, n: int) -> Path:
    """n generated-looking shapes clips (another dataset seed) in shards of 3 (blocks cross shards)."""
    import torch

    from vfbench.data import build_dataset

    folder.mkdir(parents=True)
    ds = build_dataset("shapes", frames=FRAMES, size=SIZE, seed=5)
    clips = torch.stack([ds[i]["video"] for i in range(n)]).numpy()
    for i in range(0, n, 3):
        np.save(folder / f"shard-{i // 3:05d}.npy", clips[i:i + 3])
    return folder


def _count_clips(ShapesNetExtractor, calls):
    orig = ShapesNetExtractor.extract

    def extract(self, clips):
        calls.append(int(clips.shape[0]))
        return orig(self, clips)

    ShapesNetExtractor.extract = extract


def _worker(cfg_file: str) -> None:
    """One rank (RANK/WORLD_SIZE/... in the environment, as torchrun sets them)."""
    import torch

    torch.set_num_threads(1)
    cfg = json.loads(Path(cfg_file).read_text())
    rank = int(os.environ["RANK"])
    from vfbench.metrics.shapes_net import ShapesNetExtractor

    calls = []
    _count_clips(ShapesNetExtractor, calls)
    if cfg.get("fail_rank") == rank:  # a clip only this rank reads is broken
        from vfbench.errors import DataError

        def broken(self, clips):
            raise DataError(f"injected: a clip of rank {rank} is unreadable")

        ShapesNetExtractor.extract = broken
    if cfg["mode"] == "cli":  # the command line as torchrun runs it: exit code and output are the test
        from vfbench.registry import METRICS, Entry

        for s in specs():
            METRICS._entries[s.name] = Entry(s.name, obj=s, meta={"higher_is_better": s.higher_is_better})
        from vfbench.cli import main

        main(cfg["argv"])
        return
    from vfbench.evaluation import evaluate
    from vfbench.results import ResultsStore

    out = {"rank": rank}
    t0 = time.time()
    try:
        out["records"] = evaluate(cfg["samples"], specs(), cfg.get("dataset", "shapes"),
                                  ResultsStore(cfg["results"]), trials=TRIALS, bootstrap=5, batch_size=BATCH,
                                  cache_dir=cfg["cache"], progress=False)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out["error"] = [type(exc).__name__, str(exc)]
    out["seconds"], out["clips"] = time.time() - t0, calls
    if dist.is_initialized():
        dist.destroy_process_group()
    Path(cfg["out"], f"rank{rank}.json").write_text(json.dumps(out, default=str))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, cfg: dict, world: int = 2, timeout: float = 120):
    """Start ``world`` ranks like torchrun; returns [(returncode, stdout, stderr)] in rank order."""
    cfg_file = tmp_path / f"cfg-{time.time_ns()}.json"
    cfg_file.write_text(json.dumps(cfg))
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(world), LOCAL_RANK=str(rank), VFBENCH_CACHE=str(tmp_path / "cli-cache"))
        code = f"import sys; sys.path.insert(0, {TESTS_DIR!r}); import test_evaluation_ddp as t; t._worker(sys.argv[1])"
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(cfg_file)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results, deadline = [], time.time() + timeout
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def values(rec):
    return {k: rec[k] for k in ("metric", "value", "std", "ci_low", "ci_high", "values", "cache_key", "trials",
                                "num_real", "num_fake", "seeds")}


def test_two_ranks_give_single_process_numbers_records_and_cache(tmp_path):
    from vfbench.evaluation import evaluate
    from vfbench.metrics.shapes_net import ShapesNetExtractor
    from vfbench.results import ResultsStore

    samples = make_samples(tmp_path / "samples", NUM_FAKE * TRIALS + 1)
    # (a) one process
    t0 = time.time()
    one = evaluate(samples, specs(), "shapes", ResultsStore(tmp_path / "res1"), trials=TRIALS, bootstrap=5,
                   batch_size=BATCH, cache_dir=tmp_path / "cache1", progress=False)
    t_one = time.time() - t0
    # (b) two ranks (fresh cache and results)
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.time()
    runs = launch(tmp_path, {"mode": "api", "samples": str(samples), "results": str(tmp_path / "res2"),
                             "cache": str(tmp_path / "cache2"), "out": str(out)})
    t_two = time.time() - t0
    for rc, _, err in runs:
        assert rc == 0, err
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert "error" not in r0 and "error" not in r1, (r0.get("error"), r1.get("error"))
    print(f"\nevaluate: 1 process {t_one:.2f}s; 2 ranks {r0['seconds']:.2f}s / {r1['seconds']:.2f}s inside"
          f" evaluate, {t_two:.2f}s with process start")

    # identical numbers (==, not approx), the world size recorded; rank 1 returns nothing
    assert [values(r) for r in r0["records"]] == [json.loads(json.dumps(values(r), default=str)) for r in one]
    assert [r["metric"] for r in r0["records"]] == ["fvd_ddp_t", "kvd_ddp_t", "is_ddp_t"]
    assert all(r["world_size"] == 2 for r in r0["records"]) and all(r["world_size"] == 1 for r in one)
    assert r1["records"] == []
    # one set of records, rank 0's
    files = sorted((tmp_path / "res2" / "records").glob("*.json"))
    assert len(files) == 3
    assert {json.loads(f.read_text())["world_size"] for f in files} == {2}
    # the uneven split: real 7 -> 4 + 3 clips (batches 2+2 | 2+1); each fake slice 5 -> 2 | 3 (2 | 2+1)
    assert r0["clips"] == [2, 2] + [2] + [2] and r1["clips"] == [2, 1] + [2, 1] + [2, 1]
    # the caches equal the single-process ones byte for byte
    for sub in ("features", "stats"):
        a = {p.name: p.read_bytes() for p in (tmp_path / "cache1" / sub).glob("*.npz")}
        b = {p.name: p.read_bytes() for p in (tmp_path / "cache2" / sub).glob("*.npz")}
        assert a and a == b, sub

    # the real-feature cache written by the two ranks serves a later single process: no real extraction
    calls = []
    orig = ShapesNetExtractor.extract
    try:
        _count_clips(ShapesNetExtractor, calls)
        again = evaluate(samples, specs(), "shapes", ResultsStore(tmp_path / "res3"), trials=TRIALS, bootstrap=5,
                         batch_size=BATCH, cache_dir=tmp_path / "cache2", progress=False)
    finally:
        ShapesNetExtractor.extract = orig
    assert sum(calls) == NUM_FAKE * TRIALS  # the generated clips only
    assert [values(r) for r in again] == [values(r) for r in one]


@pytest.mark.parametrize("case", ["rank0", "rank1-extraction"])
def test_an_error_on_one_rank_is_raised_on_every_rank(tmp_path, case):
    """rank0: an error rank 0 meets alone (a reference dataset too small, found in the metric loop);
    rank1-extraction: rank 1's block fails. Both ranks raise it (none waits for the other forever)."""
    samples = make_samples(tmp_path / "samples", NUM_FAKE * TRIALS)
    out = tmp_path / "out"
    out.mkdir()
    cfg = {"mode": "api", "samples": str(samples), "results": str(tmp_path / "res"), "cache": str(tmp_path / "cache"),
           "out": str(out)}
    if case == "rank0":
        cfg["dataset"], expected = {"name": "shapes", "length": NUM_REAL - 1}, "needs 7 real clips"
    else:
        cfg["fail_rank"], expected = 1, "injected: a clip of rank 1 is unreadable"
    runs = launch(tmp_path, cfg, timeout=90)
    assert [rc for rc, _, _ in runs] == [0, 0], runs
    errs = [json.loads((out / f"rank{r}.json").read_text())["error"] for r in (0, 1)]
    assert errs[0] == errs[1] == ["DataError", errs[0][1]] and expected in errs[0][1]
    assert not list((tmp_path / "res").glob("records/*.json"))


def test_cli_under_torchrun_rank0_reports_and_bad_request_fails_everywhere(tmp_path):
    samples = make_samples(tmp_path / "samples", NUM_FAKE)
    argv = ["evaluate", "--samples", str(samples), "--dataset", "shapes", "--metrics", "fvd_ddp_t,is_ddp_t",
            "--batch-size", str(BATCH), "--results", str(tmp_path / "res")]
    (rc0, out0, err0), (rc1, out1, err1) = launch(tmp_path, {"mode": "cli", "argv": argv})
    assert rc0 == 0 and rc1 == 0, (err0, err1)
    assert "fvd_ddp_t" in out0 and "2 record(s) written" in out0
    assert out1 == "" and err1 == ""
    assert len(list((tmp_path / "res" / "records").glob("*.json"))) == 2

    # too few samples (2 trials need 10): the same one-line error on both ranks, no hang
    (rc0, out0, err0), (rc1, out1, err1) = launch(tmp_path, {"mode": "cli", "argv": argv + ["--trials", "2"]},
                                                  timeout=60)
    assert rc0 == rc1 == 1 and out0 == out1 == ""
    # rank 0 alone also says which thread count it chose
    err0 = "".join(line for line in err0.splitlines(keepends=True) if not line.startswith("threads: "))
    assert err0 == err1 and "needs 10 generated clips (2 x 5)" in err0 and len(err0.strip().splitlines()) == 1
    assert len(list((tmp_path / "res" / "records").glob("*.json"))) == 2


def test_cli_all_runs_under_torchrun(tmp_path):
    """``--all``: rank 0 decides which runs are left (it writes the records) and every rank follows."""
    from vfbench.results import ResultsStore

    store = ResultsStore(tmp_path / "res")
    for name in ("a", "b"):
        store.save_run_config(name, {"generator": "vdm", "dataset": {"name": "shapes"}, "train": {}})
        make_samples(store.run_dir(name) / "samples" / "t1", NUM_FAKE)
    argv = ["evaluate", "--all", "--metrics", "is_ddp_t", "--batch-size", str(BATCH), "--results", str(store.root)]
    (rc0, out0, err0), (rc1, out1, err1) = launch(tmp_path, {"mode": "cli", "argv": argv})
    assert rc0 == rc1 == 0, (err0, err1)
    assert "2 record(s) written" in out0 and "a: evaluating is_ddp_t" in err0
    assert out1 == err1 == ""
    recs = list(store.iter_records())
    assert sorted(r["run"] for r in recs) == ["a", "b"] and {r["world_size"] for r in recs} == {2}


def test_disentanglement_is_refused_under_torchrun(tmp_path, monkeypatch):
    from vfbench.evaluation import evaluate
    from vfbench.results import ResultsStore

    samples = make_samples(tmp_path / "samples", 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="without torchrun: vfbench evaluate RUN --metrics disentangle_shapes"):
        evaluate(samples, ["disentangle_shapes"], "shapes", ResultsStore(tmp_path / "res"), progress=False)
