"""Table 4 of the VideoFusion paper: VideoFusion vs VDM on the same base U-Net (latency, memory, training).

Same as ``vfbench bench efficiency`` (library: ``vfbench.bench``); threads default to 1 (see README).

    python benchmarks/efficiency.py --preset small --frames 16 --size 32 --repeats 5 --rss
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> dict:
    from vfbench.bench import EfficiencyConfig, default_out, efficiency, format_efficiency, write_result

    d = EfficiencyConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=d.preset)
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--size", type=int, default=d.size)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--sample-steps", type=int, default=d.sample_steps)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--rss", action="store_true", help="peak RSS cross-check in a fresh process per variant")
    p.add_argument("--no-analytic", action="store_true")
    p.add_argument("--analytic-preset", default=d.analytic_preset)
    p.add_argument("--analytic-size", type=int, default=d.analytic_size)
    p.add_argument("--residual-width", type=int, default=0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-breakdown", action="store_true")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    cfg = EfficiencyConfig(preset=a.preset, frames=a.frames, size=a.size, batch=a.batch, sample_steps=a.sample_steps,
                           repeats=a.repeats, warmup=a.warmup, train=not a.no_train, memory=not a.no_memory, rss=a.rss,
                           analytic=not a.no_analytic, analytic_preset=a.analytic_preset, analytic_size=a.analytic_size,
                           residual_width=a.residual_width, channels_last=a.channels_last, breakdown=not a.no_breakdown,
                           threads=a.threads, device=a.device, seed=a.seed)
    res = efficiency(cfg, progress=lambda m: print(f"... {m}", file=sys.stderr))
    print(format_efficiency(res))
    out = a.out or default_out("efficiency")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
