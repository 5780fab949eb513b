"""How far each deterministic sampler lands from the converged ODE solution, per clip, at a few NFE.

DDIM (eta 0) and DPM-Solver++(2M) both integrate the probability-flow ODE of the same trained model from the
same initial noise (same seed), so their clips at many steps agree; at few steps each lands some uint8
levels away. This measures that distance directly (RMSE in uint8 levels to a ``--ref-steps`` DDIM run,
same clips), far less noisy than FVD, which also mixes in how good the model's ODE solution itself is.

    python benchmarks/sampler_ode_error.py --run RUN_DIR --num 4 --steps 10,20 --ref-steps 100
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="10,20")
    ap.add_argument("--ref-steps", type=int, default=100)
    ap.add_argument("--samplers", default="ddim,dpmpp_2m")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from vfbench.runs import load_run

    gen, info = load_run(args.run)

    def draw(sampler, steps):
        return gen.sample(args.num, torch.Generator().manual_seed(args.seed), sampler=sampler, steps=steps).double()

    ref = draw("ddim", args.ref_steps)
    res = {"run": args.run, "num": args.num, "seed": args.seed, "ref": f"ddim {args.ref_steps}", "rows": []}
    for steps in [int(s) for s in args.steps.split(",")]:
        for sampler in args.samplers.split(","):
            x = draw(sampler, steps)
            rmse = (x - ref).square().flatten(1).mean(1).sqrt()
            row = {"sampler": sampler, "steps": steps, "rmse_uint8_mean": float(rmse.mean()),
                   "rmse_uint8_per_clip": [round(float(v), 2) for v in rmse]}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        from vfbench.bench import write_result

        write_result(args.out, res)
    return res


if __name__ == "__main__":
    main()
