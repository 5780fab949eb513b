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

import copy
import statistics
import time
from typing import Dict

import torch

VARIANTS = ("eager_nchw", "eager_channels_last", "compiled")


def run(preset: str = "small", frames: int = 16, size: int = 32, batch: int = 1, repeats: int = 7,
        threads: int = 1, seed: int = 0) -> Dict:
    from vfbench.bench import denoiser_timing_setup, interleaved_times
    from vfbench.nets.memory_format import to_channels_last

    models, z, t, res = denoiser_timing_setup(preset, frames, size, batch, threads, seed, repeats=repeats)
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
    from vfbench.bench import denoiser_timing_parser, write_result

    a = denoiser_timing_parser(__doc__.splitlines()[0]).parse_args(argv)
    res = run(a.preset, a.frames, a.size, a.batch, a.repeats, a.threads)
    if a.out:
        write_result(a.out, res)
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
