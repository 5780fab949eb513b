"""Benchmarks: correctness only (tiny sizes, well-formed JSON, optimised paths agree with baselines).

Speed is never asserted here (the machine is shared and noisy); the ratios live in benchmarks/.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def roundtrip(res, tmp_path):
    from vfbench.bench import write_result

    path = tmp_path / "r.json"
    write_result(path, res)

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} in a benchmark result")

    return json.loads(path.read_text(), parse_constant=no_constants)


# -- measuring tools ----------------------------------------------------------------------------

def test_live_tensor_bytes_counts_allocations_not_views_or_inputs():
    from vfbench.bench import LiveTensorBytes

    x = torch.randn(100, 100)  # 40 kB, exists before: not counted

    def f():
        a = x @ x            # +40 kB
        v = a.view(-1)       # view: +0
        b = v + 1            # +40 kB  -> peak 80 kB
        del a, v
        c = b.mul_(2)        # in place: +0
        return c.sum()       # +4 B

    with torch.inference_mode(), LiveTensorBytes() as trace:
        out = f()
    assert trace.peak == 80_000 + 4 or trace.peak == 80_000
    del out
    assert trace.current <= 80_000


def test_live_tensor_bytes_on_meta_device():
    from vfbench.bench import LiveTensorBytes

    with LiveTensorBytes() as trace:
        a = torch.empty(1000, device="meta")
        b = a * 2
        del a
        c = b + 1
    assert trace.peak == 8000 and c.device.type == "meta"


def test_interleaved_times_and_summary():
    from vfbench.bench import interleaved_times, summarize

    order = []
    t = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4 and len(t["a"]) == 3
    s = summarize([1.0, 3.0, 2.0])
    assert s["median_s"] == 2.0 and s["spread"] == 1.0


# -- Table 4 ----------------------------------------------------------------------------------------

def test_analytic_costs_same_base_net():
    from vfbench.bench import analytic_costs

    a = analytic_costs("small", 16, 32, 1)
    assert 0.4 < a["flops_per_step_ratio"] < 0.7  # one base frame + 15 narrower residual frames
    assert 0 < a["peak_activation_bytes_ratio"] < 1
    assert a["vdm"]["params"] > 0 and a["videofusion"]["params"] > a["vdm"]["params"] * 0.5


def test_efficiency_tiny_is_well_formed(tmp_path):
    from vfbench.bench import efficiency, format_efficiency

    res = efficiency(preset="tiny", frames=4, size=8, repeats=1, sample_steps=1, warmup=0,
                     analytic_preset="tiny", analytic_size=8)
    back = roundtrip(res, tmp_path)
    for k in ("flops", "step_latency", "sample_latency", "step_memory", "train_step", "train_memory"):
        assert back["ratios"][k] > 0
    assert back["variants"]["vdm"]["step_memory"]["peak_bytes"] > 0
    assert set(back["breakdown"]) and back["analytic"]["preset"] == "tiny"
    text = format_efficiency(res)
    assert "VF / VDM" in text and "0.425" in text


def test_efficiency_rejects_bad_options():
    from vfbench.bench import efficiency
    from vfbench.errors import UsageError

    with pytest.raises(UsageError, match="preset"):
        efficiency(preset="huge")
    with pytest.raises(UsageError, match="frames"):
        efficiency(frames=1)
    with pytest.raises(UsageError, match="unknown efficiency option"):
        efficiency(colour="blue")


def test_cli_bench_efficiency_and_analytic(tmp_path):
    from typer.testing import CliRunner

    from vfbench.cli import app

    out = tmp_path / "eff.json"
    r = CliRunner().invoke(app, ["bench", "efficiency", "--preset", "tiny", "--frames", "4", "--size", "8",
                                 "--repeats", "1", "--sample-steps", "1", "--no-train", "--no-breakdown",
                                 "--no-analytic", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["benchmark"] == "efficiency"
    r = CliRunner().invoke(app, ["bench", "analytic", "--preset", "tiny", "--size", "8", "--frames", "4"])
    assert r.exit_code == 0 and "GFLOPs" in r.output


# I3D: FusedI3D's layers against the eager port's are tested in tests/test_i3d_fused.py


# -- the other benchmark scripts run and agree with their baselines ---------------------------------

def test_sampling_throughput_tiny(tmp_path):
    m = load_script("sampling_throughput")
    res = roundtrip(m.run(preset="tiny", frames=4, size=8, num=2, steps=1, repeats=1,
                          strided_attention_baseline=True), tmp_path)
    assert set(res["generators"]) == {"vdm", "videofusion", "vidm"}
    assert all(r["attention_fix_max_abs_uint8_diff"] <= 1 for r in res["generators"].values())
    for r in res["generators"].values():
        assert r["max_abs_uint8_diff"] <= 1 and r["speedup"] > 0
    assert "speedup" in m.table(res)


def test_data_cache_gives_identical_clips(tmp_path):
    pytest.importorskip("av")
    m = load_script("data_cache")
    res = roundtrip(m.run(videos=2, length=12, height=32, width=40, size=16, frames=4, repeats=1), tmp_path)
    assert res["identical"] is True and res["clips"] == 2 and res["speedup"] > 0
    assert "clips/s" in m.table(res)


def test_eval_cache_same_value(tmp_path, monkeypatch):
    monkeypatch.setenv("VFBENCH_CACHE", str(tmp_path / "cache"))
    m = load_script("eval_cache")
    res = roundtrip(m.run(num_real=6, num_fake=4, frames=16, size=32, repeats=1), tmp_path)
    assert res["same_value"] is True and res["real_side_speedup"] > 0
    assert "real side" in m.table(res)


def test_scaling_tiny(tmp_path):
    m = load_script("scaling")
    res = roundtrip(m.run(preset="tiny", size=8, frames_grid=(2, 4), size_grid=(8,), batch_grid=(1,), n_grid=(8, 16),
                          repeats=1), tmp_path)
    assert res["i3d_flops_per_16f_clip"] > 5e10
    assert len(res["curves"]["vdm: training step vs frames"]["seconds"]) == 2
    assert "log-log slope" in m.table(res)


def test_strided_attention_baseline_is_restored_and_close():
    m = load_script("sampling_throughput")
    from vfbench.nets import attention
    from vfbench.nets.attention import SpatialSelfAttention

    original = SpatialSelfAttention.forward
    layer = SpatialSelfAttention(16, 4, 4).eval()
    torch.nn.init.normal_(layer.proj.weight)
    x = torch.randn(3, 16, 6, 6)
    with torch.no_grad():
        ref = layer(x)
        with m.strided_attention():
            assert attention.SpatialSelfAttention.forward is not original
            got = layer(x)
    assert attention.SpatialSelfAttention.forward is original
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_spatial_attention_takes_the_flash_kernel_on_cpu():
    # Strided q/k/v make the CPU SDPA dispatcher fall back to the math path (8x slower at 32x32, the
    # materialised softmax); the shipped block hands it contiguous tensors.
    from vfbench.nets.attention import SpatialSelfAttention

    layer = SpatialSelfAttention(16, 8, 4).eval()
    with torch.no_grad(), torch.profiler.profile() as prof:
        layer(torch.randn(2, 16, 8, 8))
    names = {e.key for e in prof.key_averages()}
    assert any("flash_attention" in n for n in names) and not any("attention_math" in n for n in names)


def test_bf16_training_tiny(tmp_path):
    m = load_script("bf16_training")
    res = m.main(["--preset", "tiny", "--frames", "4", "--size", "8", "--batch", "2", "--repeats", "1",
                  "--out", str(tmp_path / "bf16.json")])
    assert set(res["generators"]) == {"videofusion", "vdm", "vidm"}
    for r in res["generators"].values():
        assert r["speedup_bf16"] > 0 and all(math.isfinite(v) for v in r["first_loss"].values())
    assert isinstance(res["machine"]["cpu_bf16_native"], bool)
    assert json.loads((tmp_path / "bf16.json").read_text())["benchmark"] == "bf16_training"


def test_protocol_estimate_scales_measured_cost_by_counted_flops(tmp_path):
    from vfbench.bench import ProtocolConfig, format_protocol, protocol_estimate
    from vfbench.errors import UsageError

    cfg = ProtocolConfig(generators=("vdm", "videofusion"), preset="tiny", frames=4, size=16, measure_size=8,
                         num=10, batch=1, repeats=1, i3d_clips=0, gpu_tflops=1.0)
    res = roundtrip(protocol_estimate(cfg), tmp_path)
    # each generator's own default sampler (README "Samplers and the number of steps")
    for name, steps in (("vdm", 20), ("videofusion", 10)):
        g = res["generators"][name]
        # 2x the frame size: convolutions 4x the FLOPs, attention a little more (counted: 4.32x)
        assert 4.0 < g["flops_scale_to_size"] < 5.0, g
        assert g["steps"] == steps and g["sampler"] == "dpmpp_2m"
        assert g["cpu_sampling_hours"] == pytest.approx(g["measured_s_per_clip_step"] * g["flops_scale_to_size"] * 10 * steps / 3600)
        assert g["gpu_sampling_hours_from_flops"] == pytest.approx(g["gflops_per_clip_step_at_size"] * 1e9 * 10 * steps / 1e12 / 3600)
    assert res["fvd_kvd"] is None and "vdm" in format_protocol(res)
    with pytest.raises(UsageError, match="--generators"):
        ProtocolConfig(generators=("sora",)).check()


def test_bf16_sampling_benchmark_runs_both_precisions(tmp_path):
    mod = load_script("bf16_sampling")
    res = roundtrip(mod.run(("videofusion",), preset="tiny", frames=4, size=8, steps=1, repeats=1), tmp_path)
    g = res["generators"]["videofusion"]
    assert len(g["times"]["fp32"]) == len(g["times"]["bf16"]) == 1
    assert g["bf16_over_fp32"] == pytest.approx(g["bf16_s"] / g["fp32_s"])
    assert isinstance(res["cpu_bf16_native"], bool) and "videofusion" in mod.table(res)


def test_channels_last_benchmark_compares_both_formats_on_the_same_weights(tmp_path):
    mod = load_script("channels_last")
    res = roundtrip(mod.run(preset="tiny", frames=4, size=8, batch=2, repeats=1, train=True), tmp_path)
    for name in ("vdm", "videofusion"):
        g = res["generators"][name]
        assert set(g["denoise_s"]) == {"nchw", "channels_last"}
        assert g["denoise_ratio"] == pytest.approx(g["denoise_s"]["channels_last"] / g["denoise_s"]["nchw"])
        assert 0 <= g["max_abs_diff"] < 1e-4  # same model: float rounding only
        assert g["train_ratio"] > 0
    assert res["vf_over_vdm"]["nchw"] == pytest.approx(res["generators"]["videofusion"]["denoise_s"]["nchw"]
                                                      / res["generators"]["vdm"]["denoise_s"]["nchw"])


def test_base_image_quality_samples_the_base_and_scores_it(tmp_path, capsys):
    # the image DPM alone: a base saved as a state dict, sampled in its own parameterisation and scored
    from vfbench.generators.videofusion import VideoFusion

    torch.manual_seed(0)
    model = VideoFusion(VideoFusion.config_for("tiny", 16, 32))
    torch.save(model.base.state_dict(), tmp_path / "base.pt")
    mod = load_script("base_image_quality")
    images = mod.sample_base_images(model.eval(), 3, 2, seed=1)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)
    assert torch.equal(images, mod.sample_base_images(model, 3, 2, seed=1))  # same seed, same images
    row = mod.main(["--base", str(tmp_path / "base.pt"), "--preset", "tiny", "--prediction", "v", "--num", "8",
                    "--real", "8", "--steps", "2", "--png", str(tmp_path / "g.png")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == row
    assert row["prediction"] == "v" and row["num"] == 8 and math.isfinite(row["image_fd_shapes"])
    assert row["image_fd_shapes"] > 0 and 0 <= row["content_confidence"] <= 1
    assert (tmp_path / "g.png").stat().st_size > 0
