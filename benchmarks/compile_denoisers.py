"""``torch.compile`` (inductor) of the denoisers against eager NCHW and eager channels-last, in one interleaved run.

A measured question, not a feature: does compiling VideoFusion's two U-Nets remove the per-operator cost that
keeps Table 4's batch-1 latency ratio above its FLOP ratio (README, Performance), and does it beat what
``vfbench sample`` already runs (channels-last eager)? For VDM and VideoFusion built on one preset
(``vfbench.bench.build_models``), ``predict_noise`` is timed eager NCHW, eager channels-last and compiled
(``torch.compile(model.predict_noise, dynamic=False)``, NCHW) in the order A B C A B C ... and the medians
compared. The compile's own wall time (first two calls) and the compiled output's max absolute difference
from eager are reported. Needs a C++ compiler (inductor's CPU backend).

    python benchmarks/compile_denoisers.py --preset small --frames 16 --size 32 --batch 1 --repeats 7
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Dict

import torch

VARIANTS = ("eager_nchw", "eager_channels_last", "compiled")


def run(preset: str = "small", frames: int = 16, size: int = 32, batch: int = 1, repeats: int = 7,
        threads: int = 1, seed: int = 0) -> Dict:
    from vfbench.bench import build_models, interleaved_times, machine_info
    from vfbench.nets.memory_format import to_channels_last

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    models = build_models(preset, frames, size)
    z = torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))
    t = torch.full((batch,), 500, dtype=torch.long)
    res = {"config": dict(preset=preset, frames=frames, size=size, batch=batch, repeats=repeats, threads=threads,
                          seed=seed), "machine": machine_info(), "torch": torch.__version__, "generators": {}}
    fns = {}
    for name, model in models.items():
        model.eval()
        channels_last = to_channels_last(copy.deepcopy(model)).eval()
        compiled = torch.compile(model.predict_noise, dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(2):
                out = compiled(z, t)
        compile_s = time.perf_counter() - t0
        diff = float((out - _denoise(model.predict_noise, z, t)).abs().max())
        res["generators"][name] = {"compile_s": compile_s, "compiled_max_abs_diff": diff}
        for variant, fn in zip(VARIANTS, (model.predict_noise, channels_last.predict_noise, compiled)):
            fns[f"{name}/{variant}"] = (lambda fn=fn: _denoise(fn, z, t))
    times = interleaved_times(fns, repeats, 1)
    for name in models:
        med = {v: statistics.median(times[f"{name}/{v}"]) for v in VARIANTS}
        res["generators"][name]["denoise_s"] = med
    res["vf_over_vdm"] = {v: res["generators"]["videofusion"]["denoise_s"][v] / res["generators"]["vdm"]["denoise_s"][v]
                          for v in VARIANTS}
    return res


def _denoise(fn, z, t):
    with torch.inference_mode():
        return fn(z, t)


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    a = ap.parse_args(argv)
    res = run(a.preset, a.frames, a.size, a.batch, a.repeats, a.threads)
    text = json.dumps(res, indent=2, default=str)
    if a.out:
        from vfbench.atomic import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    for name, g in res["generators"].items():
        d = g["denoise_s"]
        print(f"{name:12s} denoise eager NCHW {d['eager_nchw']:.4f} s, eager channels-last {d['eager_channels_last']:.4f} s, "
              f"compiled {d['compiled']:.4f} s (compile {g['compile_s']:.0f} s, max|diff| {g['compiled_max_abs_diff']:.2e})")
    r = res["vf_over_vdm"]
    print(f"VF/VDM denoise: eager NCHW {r['eager_nchw']:.3f}, eager channels-last {r['eager_channels_last']:.3f}, "
          f"compiled {r['compiled']:.3f}")
    return res


if __name__ == "__main__":
    main()
