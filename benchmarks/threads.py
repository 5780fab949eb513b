"""Training speed by thread count, with and without a busy neighbour process: the measurement behind
vfbench's default thread count (``vfbench.threads``).

Each variant runs in a fresh process (``OMP_NUM_THREADS`` must be set before torch starts its thread
pool) and times ``--steps`` optimisation steps of a tiny VideoFusion (loss, backward, AdamW) after one
warm-up step. The neighbour is another process doing the same kind of work (float32 matrix products
on ``--neighbour-threads`` threads, torch's default when 0), as a second training job on the same
machine would. Variants are interleaved (A B A B ...) and medians compared, so load drift hits
every variant alike.

    python benchmarks/threads.py                    # threads 1 and 2, without and with a neighbour
    python benchmarks/threads.py --threads 1,2,4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

WORKLOAD = r"""
import sys, time, torch
from vfbench.registry import GENERATORS
steps, frames, size, batch = map(int, sys.argv[1:5])
cls = GENERATORS.get("videofusion")
torch.manual_seed(0)
model = cls(cls.config_for("tiny", frames, size))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
clips = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8)
def step():
    out = model.loss({"video": clips})
    opt.zero_grad(); out["loss"].backward(); opt.step()
step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"s_per_step": (time.perf_counter() - t0) / steps, "threads": torch.get_num_threads()}))
""".replace("import sys,", "import json, sys,")

NEIGHBOUR = r"""
import torch
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a.T / 512)
"""


def _env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)  # torch's own default: every core
    return env


def _one(threads: int, steps: int, frames: int, size: int, batch: int) -> Dict:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(steps), str(frames), str(size), str(batch)],
                         env=_env(threads), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(thread_counts: List[int], steps: int = 5, frames: int = 8, size: int = 16, batch: int = 4,
        repeats: int = 3, neighbour_threads: int = 0) -> Dict:
    rows = []
    for with_neighbour in (False, True):
        neighbour = None
        if with_neighbour:
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=_env(neighbour_threads),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2.0)  # let it start its thread pool
        try:
            times: Dict[int, List[float]] = {n: [] for n in thread_counts}
            used: Dict[int, int] = {}
            for _ in range(repeats):
                for n in thread_counts:  # interleaved: drift hits every variant alike
                    res = _one(n, steps, frames, size, batch)
                    times[n].append(res["s_per_step"])
                    used[n] = res["threads"]
            load = os.getloadavg()[0]
        finally:
            if neighbour is not None:
                neighbour.terminate()
                neighbour.wait()
        for n in thread_counts:
            rows.append({"neighbour": with_neighbour, "threads_requested": n or "torch default",
                         "threads": used[n], "median_s_per_step": statistics.median(times[n]),
                         "all_s_per_step": times[n], "load_1min": load})
    return {"benchmark": "threads", "cores": len(os.sched_getaffinity(0)), "rows": rows,
            "config": dict(steps=steps, frames=frames, size=size, batch=batch, repeats=repeats,
                           neighbour_threads=neighbour_threads)}


def markdown(res: Dict) -> str:
    lines = [f"cores available: {res['cores']}", "",
             "| neighbour | threads | s/step (median) | load (1 min) |", "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {'busy' if r['neighbour'] else 'none'} | {r['threads']} ({r['threads_requested']}) |"
                     f" {r['median_s_per_step']:.3f} | {r['load_1min']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (0: torch's default)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--neighbour-threads", type=int, default=0, help="threads of the busy neighbour (0: torch's default)")
    p.add_argument("--out", default=None, help="JSON result (default: none)")
    a = p.parse_args(argv)
    res = run([int(t) for t in a.threads.split(",") if t.strip()], a.steps, a.frames, a.size, a.batch, a.repeats,
              a.neighbour_threads)
    print(markdown(res))
    if a.out:
        from vfbench.atomic import atomic_write_json

        atomic_write_json(a.out, res)


if __name__ == "__main__":
    main()
