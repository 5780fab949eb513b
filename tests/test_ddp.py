"""Data-parallel training: 2 processes, gloo, CPU; all ranks must end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from test_trainer import ToyClips, cfg, make_toy
    from vfbench.training import train

    # different initialisations on purpose: the trainer must broadcast rank 0's weights
    gen = make_toy(seed=rank)
    summary = train(run_dir, gen, ToyClips(n=10), cfg(steps=4, ckpt_every=2, batch_size=2), progress=False)
    torch.save({"state": gen.state_dict(), "summary": summary}, Path(out_dir) / f"rank{rank}.pt")
    # sharded sampling: each rank draws shards i % 2 == rank, rank 0 writes the manifest
    from vfbench.sampling import sample_run

    sample_run(run_dir, num=5, seed=2, batch_size=2, tag="ddp", progress=False, preview=False, device="cpu")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_ddp_two_processes_gloo_cpu(tmp_path):
    run_dir, out_dir = tmp_path / "res" / "runs" / "run", tmp_path / "out"
    out_dir.mkdir()
    from test_trainer import ToyConfig, cfg as tcfg
    from vfbench.results import ResultsStore
    from vfbench.runs import create_run

    create_run(ResultsStore.open(tmp_path / "res"), "run", "toy-test", ToyConfig(), {"name": "toyclips"},
               tcfg(steps=4, ckpt_every=2, batch_size=2))
    tests_dir = str(Path(__file__).resolve().parent)
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir), str(out_dir), tests_dir), nprocs=2, join=True)

    r0 = torch.load(out_dir / "rank0.pt", weights_only=True)
    r1 = torch.load(out_dir / "rank1.pt", weights_only=True)
    for k, v in r0["state"].items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, r1["state"][k]), k
    assert r0["summary"]["world_size"] == 2 and r0["summary"]["global_batch"] == 4

    # rank 0 wrote the run's files; the weights moved away from rank 0's initialisation
    from test_trainer import make_toy

    ckpt = torch.load(run_dir / "checkpoints/step-0000004.pt", weights_only=True)
    for k, v in r0["state"].items():
        assert torch.equal(ckpt["model"][k], v), k
    init = make_toy(seed=0).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in r0["state"].items())
    assert (run_dir / "log.csv").read_text().count("\n") == 4 + 1

    # the two ranks' shards equal a single-process draw of the same request
    from vfbench.sampling import load_samples, sample_run

    m = json.loads((run_dir / "samples/ddp/manifest.json").read_text())
    assert m["complete"] and m["shards"] == 3
    single = sample_run(run_dir, num=5, seed=2, batch_size=2, tag="one", progress=False, preview=False, device="cpu")
    assert np.array_equal(load_samples(run_dir / "samples/ddp"), load_samples(single))
