"""FVD (shapes-net) against the number of network evaluations (NFE), for each sampler, on trained runs.

For every ``(sampler, steps, seed)`` point of ``--points`` the run's generator draws ``--num`` clips with
``sample(num, generator=torch.Generator().manual_seed(seed), sampler=..., steps=...)`` (one network
evaluation per step for DDIM and DPM-Solver++(2M), so NFE = steps; classifier-free guidance would double
both alike), and the clips are scored with FVD on shapes-net features against the run's real reference
of ``--num-real`` clips (the ``fvd_shapes256`` protocol's reference; fewer generated clips than 256 make
the metric ``fvd_shapes<num>of<num_real>``, a quick-run metric, not the protocol's number). The same seed
gives every sampler the same initial noise (common random numbers), so the differences between samplers
at one seed are less noisy than the seed-to-seed spread, which the table states where two seeds of one
point were drawn.

Each finished point is appended to the JSON ``--out`` at once (atomically), so a run cut short keeps the
points it finished; a point already in ``--out`` is skipped (resume).

    python benchmarks/sampler_nfe.py --run vfbench-results/runs/ref-vf-temporal --num 64 \\
        --points ddim:10:0,ddim:20:0,ddim:50:0,ddim:100:0,dpmpp_2m:10:0 --real-sets 4 --out nfe-vf.json \\
        --work /tmp/nfe
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch


def parse_points(text: str) -> List[Tuple[str, int, int]]:
    """``sampler:steps:seed,...`` -> ``[(sampler, steps, seed), ...]``."""
    points = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        sampler, steps, seed = item.strip().split(":")
        points.append((sampler, int(steps), int(seed)))
    return points


def fvd_of(clips: np.ndarray, folder: Path, dataset_ref: Dict[str, Any], num_real: int, store) -> float:
    from vfbench.metrics.protocols import get_spec
    from vfbench.quality import _fvd, _write_shard

    n = clips.shape[0]
    spec = get_spec("fvd_shapes256")
    spec = replace(spec, name=f"fvd_shapes{n}of{num_real}", num_fake=n, num_real=num_real,
                   description=f"{spec.description} ({n} generated vs {num_real} real clips)")
    return _fvd(store, metric_specs=[spec], folder=_write_shard(folder, clips), dataset=dataset_ref)


def main(argv=None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (read only)")
    ap.add_argument("--points", required=True, help="sampler:steps:seed,... e.g. ddim:10:0,dpmpp_2m:10:0")
    ap.add_argument("--num", type=int, default=64, help="generated clips per point")
    ap.add_argument("--num-real", type=int, default=256, help="real clips of the reference statistics")
    ap.add_argument("--batch", type=int, default=16, help="clips per sampling call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real-sets", type=int, default=0,
                    help="also score this many disjoint sets of --num real test-split clips: the spread of the "
                         "metric at this clip count with no generator involved (the noise floor of the table)")
    ap.add_argument("--memory-format", default="auto", help="the nets' layout (vfbench.runs.load_run): auto, contiguous,"
                    " channels_last; float rounding only, recorded per point")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="sample under bf16 autocast (vfbench.sampling.precision_context); a point's precision is"
                         " part of its identity in --out")
    ap.add_argument("--work", required=True, help="folder for the sample shards and the results store")
    ap.add_argument("--out", required=True, help="JSON result (points appended as they finish)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vfbench.atomic import atomic_write_json
    from vfbench.results import ResultsStore
    from vfbench.runs import load_run

    work = Path(args.work)
    store = ResultsStore.open(work / "results")
    gen, info = load_run(args.run, memory_format=args.memory_format)
    ds = info["dataset"]
    if ds.get("name") != "shapes":
        raise SystemExit(f"error: {args.run} was trained on {ds.get('name')!r}; this benchmark scores shapes runs "
                         "with shapes-net, pass a run trained on shapes")
    dataset_ref = {"name": "shapes", **{k: ds[k] for k in ("frames", "size", "seed") if ds.get(k) is not None}}
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {
        "run": str(args.run), "generator": info["generator"], "checkpoint_step": info["step"], "num": args.num,
        "num_real": args.num_real, "batch": args.batch, "threads": args.threads, "torch": torch.__version__,
        "points": []}
    if args.real_sets and "real_test_sets" not in result:
        from vfbench.runs import run_dataset

        test = run_dataset(ds, "test")
        if len(test) < args.real_sets * args.num:
            raise SystemExit(f"error: the test split has {len(test)} clips, fewer than --real-sets x --num; lower one")
        values = []
        for k in range(args.real_sets):
            clips = np.stack([np.asarray(test[i]["video"]) for i in range(k * args.num, (k + 1) * args.num)])
            values.append(fvd_of(clips, work / f"real-test-{args.num}-set{k}", dataset_ref, args.num_real, store))
        result["real_test_sets"] = values
        atomic_write_json(out, result)
        print(json.dumps({"real_test_sets": values}), flush=True)
    from vfbench.sampling import precision_context

    done = {(p["sampler"], p["steps"], p["seed"], p.get("precision", "fp32")) for p in result["points"]}
    for sampler, steps, seed in parse_points(args.points):
        if (sampler, steps, seed, args.precision) in done:
            continue
        t0 = time.perf_counter()
        with torch.inference_mode(), precision_context(args.precision, torch.device("cpu")):
            clips = gen.sample(args.num, torch.Generator().manual_seed(seed), sampler=sampler, steps=steps,
                               batch_size=args.batch).numpy()
        seconds = time.perf_counter() - t0
        suffix = "" if args.precision == "fp32" else f"-{args.precision}"
        fvd = fvd_of(clips, work / f"{Path(args.run).name}-{sampler}-{steps}-seed{seed}{suffix}", dataset_ref,
                     args.num_real, store)
        point = {"sampler": sampler, "steps": steps, "nfe": steps, "seed": seed, "fvd": fvd,
                 "sample_seconds": round(seconds, 1), "load": os.getloadavg()[0],
                 "memory_format": info["memory_format"], "precision": args.precision}
        result["points"].append(point)
        atomic_write_json(out, result)
        print(json.dumps(point), flush=True)
    return result


if __name__ == "__main__":
    main()
