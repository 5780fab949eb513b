"""Training step speed under bf16 autocast vs fp32 on this machine's CPU (or GPU), for every generator.

One training step is ``loss(batch)`` forward + backward + AdamW step, exactly as the shared trainer runs
it (``torch.autocast(device_type, dtype=torch.bfloat16)`` around the loss only; weights, optimiser
state and the loss in float32). fp32 and bf16 steps are **interleaved** (A B A B ...) on the same model
and batch, and the medians compared. Whether bf16 helps depends on the CPU: with AMX-BF16 or
AVX512-BF16 oneDNN runs bf16 convolutions and matmuls natively; on an AVX2-only CPU there are no bf16
kernels and autocast is many times *slower* (measured here on an AMD EPYC with AVX2: 0.08x). The CPU's
flags are recorded with the result, and ``vfbench.training.cpu_bf16_native()`` uses the same test to
choose the demo's precision.

    python benchmarks/bf16_training.py --preset small --frames 16 --size 32 --batch 4
"""

from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

import torch

GENERATORS = ("videofusion", "vdm", "vidm")


def run(generators: Sequence[str] = GENERATORS, preset: str = "small", frames: int = 16, size: int = 32,
        batch: int = 4, repeats: int = 3, threads: int = 1, device: str = "cpu") -> Dict:
    from vfbench.bench import interleaved_times, machine_info, summarize
    from vfbench.data.shapes import ShapesDataset
    from vfbench.learning import build
    from vfbench.training import cpu_bf16_native

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        ds = ShapesDataset("train", frames=frames, size=size)
        clips = torch.stack([ds[i]["video"] for i in range(batch)])
        res = {"benchmark": "bf16_training",
               "config": dict(generators=list(generators), preset=preset, frames=frames, size=size, batch=batch,
                              repeats=repeats, threads=threads, device=device),
               "machine": {**machine_info(), "cpu_bf16_native": cpu_bf16_native()}, "generators": {}}
        dev = torch.device(device)
        for name in generators:
            torch.manual_seed(0)
            model = build(name, clips, preset).to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            batch_ = {"video": clips.to(dev)}

            def step(bf16: bool, model=model, opt=opt, batch_=batch_):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    out = model.loss(batch_, torch.Generator().manual_seed(0))
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                return float(out["loss"].detach())

            losses = {"fp32": step(False), "bf16": step(True)}  # also the warm-up
            times = interleaved_times({"fp32": lambda: step(False), "bf16": lambda: step(True)},
                                      repeats=repeats, warmup=0, device=dev)
            r = {k: summarize(v) for k, v in times.items()}
            r["speedup_bf16"] = r["fp32"]["median_s"] / r["bf16"]["median_s"]
            r["first_loss"] = losses
            res["generators"][name] = r
        return res
    finally:
        torch.set_num_threads(old)


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = [[n, r["fp32"]["median_s"], r["bf16"]["median_s"], r["speedup_bf16"]] for n, r in res["generators"].items()]
    head = (f"Training step, preset {c['preset']}, {c['frames']}x{c['size']}x{c['size']}, batch {c['batch']}, "
            f"threads {c['threads']}, {c['device']} (bf16 native on this CPU: {res['machine']['cpu_bf16_native']}); "
            f"{c['repeats']} interleaved repeats, medians")
    return head + "\n" + format_table(rows, ["generator", "fp32 s/step", "bf16 s/step", "bf16 speed-up"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generators", default=",".join(GENERATORS))
    p.add_argument("--preset", default="small")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run([g for g in a.generators.split(",") if g], a.preset, a.frames, a.size, a.batch, a.repeats, a.threads,
              a.device)
    print(table(res))
    out = a.out or default_out("bf16_training")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
