"""I3D throughput: an optimised exact-fp32 inference path vs the straightforward eager one.

Baseline (kept here, as written in ``metrics/i3d.py`` / ``metrics/i3d_extractor.py``): one clip at a time,
``preprocess`` (TF1 legacy bilinear resize to 224, ``2x/255 - 1``) then ``I3D.forward`` in NCDHW under
``torch.no_grad``.

Optimised (what ``I3DExtractor`` runs by default: ``FusedI3D`` of ``metrics/i3d_fused.py``; same weights,
same arithmetic type fp32, no TF32/bf16):

* **batched**: ``--batch`` clips per forward, under ``torch.inference_mode``;
* **channels-last (NDHWC)** activations throughout: 3x3x3 / 7x7x7 convolutions run as oneDNN
  channels-last-3d convolutions (no layout reorders between layers), and every 1x1x1 convolution is a
  single GEMM (``F.linear`` on the NDHWC tensor) instead of the slow NCDHW ``slow_conv3d`` path;
* the **three 1x1x1 convolutions that read the same input** in each Inception block (Branch_0,
  Branch_1's and Branch_2's reductions) are **merged into one GEMM**;
* **BatchNorm folded** into the convolution (frozen statistics: ``w * gamma / sqrt(var + eps)``, bias
  ``beta - mean * scale``), ReLU in place;
* **max-pooling decomposed exactly**: a 3-D max over a box is a max along T, then H, then W (max is
  exact in floating point), on strided views with TF "SAME" ``-inf`` padding: replaces
  ``max_pool3d_with_indices``, which was ~40% of the baseline's CPU time;
* the resize output is written straight into the NDHWC layout (no NCDHW copy).

A third path, ``separable_pools``, is the baseline with only the max-pools replaced by the separable
form: ``metrics/i3d.py``'s ``I3D`` itself (the ``eager`` implementation), bit-identical.

Exactness: logits of both paths on the same clips, max absolute difference reported (re-association of
fp32 sums in the folded/merged convolutions gives differences around 1e-5 on logits of magnitude ~10).
The FLOPs of one clip are counted (``torch.utils.flop_counter``) and compared with this CPU's fp32 matmul
rate measured in the same run. Weights: the cached reference I3D weights when present, else random
weights (stated in the result; speed does not depend on them). Threads: 1 by default.

    python benchmarks/i3d_throughput.py --clips 4 --batch 4 --size 64 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
from typing import Dict, Optional, Sequence

import torch
from torch import nn


# -- the eager baseline: the package's I3D with its max-pools put back to F.max_pool3d ------------

class _ReferencePool(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return self.pool.forward_reference(x)


def with_reference_pools(net):
    """A copy of ``net`` whose max-pools use ``F.max_pool3d`` (the package now uses the separable form)."""
    from vfbench.metrics.i3d import MaxPool3dSame

    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, MaxPool3dSame):
                setattr(module, name, _ReferencePool(child))
    return net


# -- the benchmark ----------------------------------------------------------------------------------

def load_net(random_weights: bool = False):
    """(I3D with the cached reference weights, description), or random weights when none are cached."""
    from vfbench.metrics.i3d import I3D

    if not random_weights:
        try:
            from vfbench.metrics.i3d_weights import fetch_i3d, load_i3d_weights

            w = load_i3d_weights(fetch_i3d(offline=True, progress=None))
            net = I3D(bn_eps=1e-3, bn_scale=w.bn_scale)
            net.load_state_dict(w.state)
            return net.eval(), f"reference weights ({w.path.name}, sha256 {w.sha256[:12]})"
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to random weights, stated
            note = f"random weights (reference weights unavailable: {str(exc)[:80]})"
    else:
        note = "random weights (asked for)"
    g = torch.Generator().manual_seed(0)
    net = I3D()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 5:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in net.named_buffers():
            if name.endswith("moving_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("moving_variance"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return net.eval(), note


def run(clips: int = 4, batch: int = 4, frames: int = 16, size: int = 64, repeats: int = 3, threads: int = 1,
        random_weights: bool = False, matmul_n: int = 1024) -> Dict:
    from vfbench.bench import count_flops, interleaved_times, machine_info, matmul_flops_per_s, summarize
    from vfbench.metrics.i3d_extractor import preprocess
    from vfbench.metrics.i3d_fused import FusedI3D, preprocess_ndhwc

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        net, weights_note = load_net(random_weights)
        fast = FusedI3D(net)
        pooled = net  # metrics/i3d.py already pools separably: the baseline with only the pools changed
        net = with_reference_pools(net)  # the straightforward eager baseline: max_pool3d, as before the change
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, 256, (clips, frames, 3, size, size), dtype=torch.uint8, generator=g)

        def baseline():
            out = []
            with torch.no_grad():
                for i in range(clips):
                    out.append(net(preprocess(data[i:i + 1])))
            return torch.cat(out)

        def separable_pools():  # the baseline with only the max-pools replaced (bit-identical)
            out = []
            with torch.no_grad():
                for i in range(clips):
                    out.append(pooled(preprocess(data[i:i + 1])))
            return torch.cat(out)

        def optimised():
            out = []
            with torch.inference_mode():
                for s in range(0, clips, batch):
                    out.append(fast(preprocess_ndhwc(data[s:s + batch])))
            return torch.cat(out)

        ref, new, pool_only = baseline(), optimised(), separable_pools()
        max_abs = float((ref - new).abs().max())
        rel = max_abs / float(ref.abs().max())
        times = interleaved_times({"baseline": baseline, "separable_pools": separable_pools, "optimised": optimised},
                                  repeats=repeats, warmup=0)
        r = {k: summarize(v) for k, v in times.items()}
        with torch.device("meta"):
            from vfbench.metrics.i3d import I3D

            meta_net = I3D()
        flops = count_flops(lambda: meta_net(torch.empty(1, 3, frames, 224, 224, device="meta")))
        peak = matmul_flops_per_s(matmul_n)
        for k in r:
            r[k]["videos_per_s"] = clips / r[k]["median_s"]
            r[k]["gflops_per_s"] = flops * r[k]["videos_per_s"] / 1e9
            r[k]["fraction_of_matmul_rate"] = r[k]["gflops_per_s"] * 1e9 / peak
        return {"benchmark": "i3d_throughput",
                "config": dict(clips=clips, batch=batch, frames=frames, size=size, repeats=repeats, threads=threads,
                               weights=weights_note, precision="fp32 (no TF32 / reduced precision)"),
                "machine": machine_info(), "flops_per_clip": flops, "matmul_gflops_per_s": peak / 1e9,
                "max_abs_logit_diff": max_abs, "max_rel_logit_diff": rel, "max_abs_logit": float(ref.abs().max()),
                "same_argmax": bool(torch.equal(ref.argmax(1), new.argmax(1))),
                "separable_pools_bit_identical": bool(torch.equal(ref, pool_only)),
                "baseline": r["baseline"], "separable_pools": r["separable_pools"], "optimised": r["optimised"],
                "speedup": r["optimised"]["videos_per_s"] / r["baseline"]["videos_per_s"],
                "separable_pools_speedup": r["separable_pools"]["videos_per_s"] / r["baseline"]["videos_per_s"]}
    finally:
        torch.set_num_threads(old)


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = [[k, res[k]["videos_per_s"], res[k]["gflops_per_s"], res[k]["fraction_of_matmul_rate"]]
            for k in ("baseline", "separable_pools", "optimised") if k in res]
    head = (f"I3D throughput: {c['clips']} clips {c['frames']}x{c['size']}x{c['size']} -> 224, batch {c['batch']}, "
            f"threads {c['threads']}, {c['weights']}; {res['flops_per_clip'] / 1e9:.1f} GFLOP/clip; fp32 matmul "
            f"{res['matmul_gflops_per_s']:.1f} GFLOP/s; speedup {res['speedup']:.2f}x; max |logit diff| "
            f"{res['max_abs_logit_diff']:.2e} (max |logit| {res['max_abs_logit']:.1f})")
    if "separable_pools" in res:
        head += (f"\nseparable_pools = the baseline with only the max-pools replaced: "
                 f"{res['separable_pools_speedup']:.2f}x, bit-identical: {res['separable_pools_bit_identical']}")
    return head + "\n" + format_table(rows, ["path", "videos/s", "GFLOP/s", "fraction of matmul rate"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="input frame size (resized to 224 as the protocol does)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run(a.clips, a.batch, a.frames, a.size, a.repeats, a.threads, a.random_weights)
    print(table(res))
    out = a.out or default_out("i3d_throughput")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
