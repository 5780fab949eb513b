"""bf16 sampling against fp32: the speed ratio of ``generator.sample`` under bf16 autocast, in one run.

What ``vfbench sample --precision bf16`` runs: the generator's own ``sample`` inside
``torch.autocast(device_type, dtype=torch.bfloat16)`` (``vfbench.sampling.precision_context``); the
diffusion updates stay float32. The two variants are timed interleaved (fp32 bf16 fp32 bf16 ...) and the
medians compared; the max uint8 difference of the clips (same seed) is reported. The CPU's bf16 support is
stated (``cpu_bf16_native``: AMX-BF16 / AVX512-BF16); without it oneDNN emulates bf16 and it is slower.

    python benchmarks/bf16_sampling.py --preset small --frames 16 --size 32 --batch 1 --steps 2 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
from typing import Dict, Optional, Sequence

import torch


def run(generators: Sequence[str] = ("vdm", "videofusion"), preset: str = "small", frames: int = 16, size: int = 32,
        batch: int = 1, steps: int = 2, repeats: int = 2, threads: int = 1, seed: int = 0,
        channels_last: bool = False) -> Dict:
    from vfbench.bench import build_models, interleaved_times, machine_info
    from vfbench.sampling import precision_context
    from vfbench.training import cpu_bf16_native

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    models = build_models(preset, frames, size)
    if channels_last:  # what `vfbench sample` runs on a CPU (vfbench.nets.memory_format)
        from vfbench.nets.memory_format import to_channels_last

        for m in models.values():
            to_channels_last(m)
    res = {"config": dict(preset=preset, frames=frames, size=size, batch=batch, steps=steps, repeats=repeats,
                          threads=threads, seed=seed, channels_last=channels_last),
           "machine": machine_info(), "cpu_bf16_native": cpu_bf16_native(), "generators": {}}
    cpu = torch.device("cpu")
    for name in generators:
        model = models[name].eval()

        def draw(precision):
            def fn():
                with torch.inference_mode(), precision_context(precision, cpu):
                    return model.sample(batch, torch.Generator().manual_seed(seed), steps=steps, sampler="ddim")
            return fn

        times = interleaved_times({"fp32": draw("fp32"), "bf16": draw("bf16")}, repeats=repeats, warmup=1)
        a, b = draw("fp32")(), draw("bf16")()
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        res["generators"][name] = {"fp32_s": fp32, "bf16_s": bf16, "bf16_over_fp32": bf16 / fp32,
                                   "times": times, "max_uint8_diff": int((a.int() - b.int()).abs().max())}
    return res


def table(res: Dict) -> str:
    c = res["config"]
    lines = [f"bf16 autocast vs fp32 sampling, preset {c['preset']}, {c['frames']}x{c['size']}x{c['size']}, batch "
             f"{c['batch']}, {c['steps']} DDIM steps, {c['threads']} thread(s); CPU native bf16: {res['cpu_bf16_native']}",
             "| generator | fp32 (s) | bf16 (s) | bf16 / fp32 | max uint8 diff |", "|---|---|---|---|---|"]
    for name, g in res["generators"].items():
        lines.append(f"| {name} | {g['fp32_s']:.3f} | {g['bf16_s']:.3f} | **{g['bf16_over_fp32']:.2f}** | "
                     f"{g['max_uint8_diff']} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generators", default="vdm,videofusion")
    p.add_argument("--preset", default="small")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels-last", action="store_true", help="both precisions channels-last, as `vfbench sample` on a CPU")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run(tuple(a.generators.split(",")), a.preset, a.frames, a.size, a.batch, a.steps, a.repeats, a.threads,
              channels_last=a.channels_last)
    print(table(res))
    from vfbench.bench import default_out, write_result

    out = a.out or default_out("bf16_sampling")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
