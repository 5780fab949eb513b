"""Sampling throughput: many clips per call (batched) vs one clip at a time, for every generator.

Both paths call the generator's own ``sample(n, generator=..., steps=S, batch_size=B)``; the one-at-a-time
baseline uses ``batch_size=1``, the batched path ``batch_size=n``. Clips are drawn with per-clip seeds, so
both paths must give the same clips (the max abs uint8 difference is reported; batched kernels may
round differently in the last float bit, which can move a pixel by one level; VIDM's frame-by-frame
chain has been seen to grow such a difference into a larger change of a few values, so the fraction
of differing values is reported too). The two paths are run
interleaved (A B A B ...) and the medians compared. Threads: 1 by default (``--threads``).

    python benchmarks/sampling_throughput.py --preset tiny --frames 16 --size 32 --num 8 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Dict, Optional, Sequence

import torch

GENERATORS = ("vdm", "videofusion", "vidm")


@contextlib.contextmanager
def strided_attention(enabled: bool = True):
    """The attention path vfbench shipped before its fix, kept as a baseline: ``SpatialSelfAttention`` handed
    SDPA q/k/v whose last dimension was strided (a ``.transpose(-1, -2)`` view), which makes the CPU
    dispatcher fall back from the flash kernel to the math path (bmm, materialised softmax). Patched inside
    the ``with`` block only."""
    if not enabled:
        yield
        return
    import torch.nn.functional as F

    from vfbench.nets import attention

    original = attention.SpatialSelfAttention.forward

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))

    attention.SpatialSelfAttention.forward = forward
    try:
        yield
    finally:
        attention.SpatialSelfAttention.forward = original


def build(name: str, preset: str, frames: int, size: int):
    from vfbench.registry import GENERATORS as REG

    cls = REG.get(name)
    torch.manual_seed(0)
    model = cls(cls.config_for(preset, frames, size))
    # fresh U-Nets have zero-initialised output layers; random values make the comparison meaningful
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not bool(p.any()):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model.eval()


def run(generators: Sequence[str] = GENERATORS, preset: str = "tiny", frames: int = 16, size: int = 32, num: int = 8,
        steps: int = 3, repeats: int = 3, threads: int = 1, strided_attention_baseline: bool = False) -> Dict:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(generators, preset, frames, size, num, steps, repeats, threads, strided_attention_baseline)
    finally:
        torch.set_num_threads(old)


def _run(generators, preset, frames, size, num, steps, repeats, threads, strided_baseline) -> Dict:
    from vfbench.bench import interleaved_times, machine_info, summarize

    res = {"benchmark": "sampling_throughput",
           "config": dict(generators=list(generators), preset=preset, frames=frames, size=size, num=num, steps=steps,
                          repeats=repeats, threads=threads, sampler="ddim (eta 0)",
                          strided_attention_baseline=strided_baseline),
           "machine": machine_info(), "generators": {}}
    for name in generators:
        model = build(name, preset, frames, size)

        def sample(bs, model=model):
            return model.sample(num, generator=torch.Generator().manual_seed(0), steps=steps, batch_size=bs)

        one, batched = sample(1), sample(num)
        delta = (one.int() - batched.int()).abs()
        diff = int(delta.max())
        frac = float((delta > 0).float().mean())
        fns = {"one_at_a_time": lambda: sample(1), "batched": lambda: sample(num)}
        if strided_baseline:
            def patched(bs):
                with strided_attention():
                    return sample(bs)

            fns.update({"one_at_a_time_strided_attention": lambda: patched(1),
                        "batched_strided_attention": lambda: patched(num)})
            strided_diff = int((patched(num).int() - batched.int()).abs().max())
        times = interleaved_times(fns, repeats=repeats, warmup=0)
        r = {k: summarize(v) for k, v in times.items()}
        for k in r:
            r[k]["videos_per_s"] = num / r[k]["median_s"]
        r["speedup"] = r["batched"]["videos_per_s"] / r["one_at_a_time"]["videos_per_s"]
        r["max_abs_uint8_diff"] = diff
        r["fraction_differing"] = frac
        r["identical"] = bool(torch.equal(one, batched))
        if strided_baseline:
            # speedup of the shipped (contiguous, flash-kernel) attention over the old strided path
            r["attention_fix_speedup_one_at_a_time"] = (r["one_at_a_time"]["videos_per_s"]
                                                        / r["one_at_a_time_strided_attention"]["videos_per_s"])
            r["attention_fix_speedup_batched"] = (r["batched"]["videos_per_s"]
                                                  / r["batched_strided_attention"]["videos_per_s"])
            r["attention_fix_max_abs_uint8_diff"] = strided_diff
        res["generators"][name] = r
    return res


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = [[n, r["one_at_a_time"]["videos_per_s"], r["batched"]["videos_per_s"], r["speedup"], r["max_abs_uint8_diff"],
             r.get("fraction_differing", float("nan"))] for n, r in res["generators"].items()]
    head = (f"Sampling throughput: preset {c['preset']}, {c['frames']}x{c['size']}x{c['size']}, {c['num']} clips, "
            f"{c['steps']} DDIM steps, threads {c['threads']}, {c['repeats']} interleaved repeats (medians)")
    out = head + "\n" + format_table(rows, ["generator", "videos/s, one at a time", f"videos/s, batch {c['num']}",
                                             "speedup", "max |diff| (uint8)", "fraction differing"])
    if c.get("strided_attention_baseline"):
        rows = [[n, r["attention_fix_speedup_one_at_a_time"], r["attention_fix_speedup_batched"],
                 r["attention_fix_max_abs_uint8_diff"]] for n, r in res["generators"].items()]
        out += ("\nShipped attention (contiguous q/k/v, flash kernel) vs the old strided path (same run, interleaved)\n"
                + format_table(rows, ["generator", "speedup, one at a time", f"speedup, batch {c['num']}",
                                      "max |diff| vs old (uint8)"]))
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generators", default=",".join(GENERATORS))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--strided-attention-baseline", action="store_true",
                   help="also time the old strided-q/k/v attention path (math SDPA fallback), interleaved")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run([g for g in a.generators.split(",") if g], a.preset, a.frames, a.size, a.num, a.steps, a.repeats, a.threads,
              a.strided_attention_baseline)
    print(table(res))
    out = a.out or default_out("sampling_throughput")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
