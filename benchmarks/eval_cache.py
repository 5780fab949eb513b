"""Evaluation cache: a second evaluation of the same real set reads cached statistics.

Runs ``vfbench.evaluation.evaluate`` twice on the same generated clips against the same real set
(``shapes`` clips, an FVD spec at ``--num-real`` / ``--num-fake`` clips, ``--frames`` x ``--size``): the
first with an empty statistics cache (real clips rendered, features extracted, statistics computed and
written), the second with the cache filled. The real side is timed by wrapping
``vfbench.evaluation._real_statistic`` (the function that computes or loads the real statistics);
totals are reported too. Each round uses a fresh cache directory; rounds repeat ``--repeats`` times and
medians are compared. Both evaluations must give the same FVD (checked).

Extractor: the built-in ``shapes-net``; when its shipped weights are missing (a development checkout
before ``vfbench weights train shapes-net``) a randomly initialised shapes-net is used (stated in the
result). Threads: 1 by default.

    python benchmarks/eval_cache.py --num-real 128 --num-fake 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

BENCH_EXTRACTOR = "bench-shapes-net"


def _extractor_name(tmp: Path) -> tuple:
    """(registered extractor name, description of its weights)."""
    from vfbench.metrics.shapes_net import ShapesNet, ShapesNetExtractor, load_shapes_net, save_weights
    from vfbench.errors import WeightsError
    from vfbench.registry import EXTRACTORS

    try:
        load_shapes_net()
        return "shapes-net", "shipped shapes-net weights"
    except WeightsError:
        pass
    path = tmp / "random-shapes-net.safetensors"
    torch.manual_seed(0)
    save_weights(ShapesNet(), path)

    class RandomShapesNet(ShapesNetExtractor):
        name = BENCH_EXTRACTOR

        def __init__(self, device: str = "cpu", batch_size: int = 64):
            super().__init__(weights=str(path), device=device, batch_size=batch_size)

    if BENCH_EXTRACTOR not in EXTRACTORS:
        EXTRACTORS.add(BENCH_EXTRACTOR, RandomShapesNet, description="benchmark only: random-init shapes-net")
    return BENCH_EXTRACTOR, "randomly initialised shapes-net (shipped weights missing)"


def run(num_real: int = 128, num_fake: int = 32, frames: int = 16, size: int = 32, repeats: int = 3,
        threads: int = 1, batch_size: int = 32) -> Dict:
    import vfbench.evaluation as ev
    from vfbench.bench import machine_info, summarize
    from vfbench.metrics.protocols import MetricSpec
    from vfbench.results import ResultsStore

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory(prefix="vfbench-eval-cache-")
    original = ev._real_statistic
    real_time = []

    def timed_real_statistic(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            real_time.append(time.perf_counter() - t0)

    try:
        root = Path(tmp.name)
        extractor, weights_note = _extractor_name(root)
        spec = MetricSpec("fvd_bench", "fvd", extractor, num_real=num_real, num_fake=num_fake, frames=frames,
                          resolution=size, description="benchmark FVD spec")
        samples = root / "samples"
        samples.mkdir()
        g = np.random.default_rng(0)
        np.save(samples / "shard-00000.npy", g.integers(0, 256, (num_fake, frames, 3, size, size), dtype=np.uint8))
        store = ResultsStore(root / "results")
        ev._real_statistic = timed_real_statistic
        rows = {"first": {"real": [], "total": []}, "second": {"real": [], "total": []}}
        values = []
        for r in range(repeats):
            cache_dir = root / f"cache{r}"
            for which in ("first", "second"):
                real_time.clear()
                t0 = time.perf_counter()
                rec = ev.evaluate(samples, metrics=[spec], dataset="shapes", store=store, cache_dir=cache_dir,
                                  batch_size=batch_size, progress=False, write=False)
                rows[which]["total"].append(time.perf_counter() - t0)
                rows[which]["real"].append(sum(real_time))
                values.append(rec[0]["value"])
        res = {"benchmark": "eval_cache",
               "config": dict(num_real=num_real, num_fake=num_fake, frames=frames, size=size, repeats=repeats,
                              threads=threads, batch_size=batch_size, dataset="shapes", metric="fvd",
                              extractor=extractor, weights=weights_note),
               "machine": machine_info(),
               "first": {k: summarize(v) for k, v in rows["first"].items()},
               "second": {k: summarize(v) for k, v in rows["second"].items()},
               "same_value": len(set(values)) == 1, "fvd": values[0]}
        res["real_side_speedup"] = res["first"]["real"]["median_s"] / res["second"]["real"]["median_s"]
        res["total_speedup"] = res["first"]["total"]["median_s"] / res["second"]["total"]["median_s"]
        return res
    finally:
        ev._real_statistic = original
        tmp.cleanup()
        torch.set_num_threads(old)


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = [["first (empty cache)", res["first"]["real"]["median_s"], res["first"]["total"]["median_s"]],
            ["second (cached real statistics)", res["second"]["real"]["median_s"], res["second"]["total"]["median_s"]],
            ["speedup", res["real_side_speedup"], res["total_speedup"]]]
    head = (f"Evaluation cache: FVD, {c['num_real']} real shapes clips vs {c['num_fake']} generated, "
            f"{c['frames']}x{c['size']}x{c['size']}, {c['weights']}, {c['repeats']} rounds (medians); "
            f"same FVD both times: {res['same_value']}")
    return head + "\n" + format_table(rows, ["evaluation", "real side (s)", "total (s)"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-real", type=int, default=128)
    p.add_argument("--num-fake", type=int, default=32)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run(a.num_real, a.num_fake, a.frames, a.size, a.repeats, a.threads)
    print(table(res))
    out = a.out or default_out("eval_cache")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
