"""FusedI3D (metrics/i3d_fused.py) computes I3D's function: layer by layer against the eager port, the
whole network, the NDHWC preprocessing, and the extractor's ``impl`` switch. The known answers with the
real weights run through both implementations in tests/test_i3d.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vfbench.errors import UsageError
from vfbench.metrics.i3d import I3D, InceptionBlock, MaxPool3dSame, Unit3D
from vfbench.metrics.i3d_fused import (FusedConv, FusedI3D, FusedInception, FusedMaxPool, fold_batch_norm,
                                       preprocess_ndhwc)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and non-trivial frozen BatchNorm statistics (so that folding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("moving_variance"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 5:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return module.eval()


def ndhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 4, 1).contiguous()


def ncdhw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 4, 1, 2, 3)


X = torch.randn(2, 8, 5, 9, 7, generator=torch.Generator().manual_seed(1))  # odd sizes: asymmetric SAME pads


@pytest.mark.parametrize("kernel,stride", [((3, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                           ((3, 3, 3), (2, 2, 2))])
def test_max_pool_is_bit_identical(kernel, stride):
    pool = MaxPool3dSame(kernel, stride)
    ref = pool.forward_reference(X)
    assert torch.equal(ncdhw(FusedMaxPool(pool)(ndhwc(X))), ref)  # a max never rounds
    assert torch.equal(pool(X), ref)


@pytest.mark.parametrize("kernel,stride", [((1, 1, 1), (1, 1, 1)), ((3, 3, 3), (1, 1, 1)), ((7, 7, 7), (2, 2, 2)),
                                           ((1, 3, 3), (1, 2, 2))])
@pytest.mark.parametrize("bn_eps,bn_scale", [(1e-3, False), (1e-5, True)])
def test_folded_conv_matches_unit(kernel, stride, bn_eps, bn_scale):
    unit = randomise(Unit3D(8, 6, kernel, stride, bn_eps=bn_eps, bn_scale=bn_scale))
    with torch.no_grad():
        ref = unit(X)
        got = ncdhw(FusedConv([unit])(ndhwc(X)))
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_formula():
    unit = randomise(Unit3D(3, 2, (1, 1, 1), bn_scale=True))
    w, b = fold_batch_norm(unit)
    scale = unit.gamma / torch.sqrt(unit.moving_variance + unit.bn_eps)
    torch.testing.assert_close(w, unit.weight * scale.view(-1, 1, 1, 1, 1))
    torch.testing.assert_close(b, unit.beta - unit.moving_mean * scale)


def test_merged_gemm_splits_and_refuses_mixed_kernels():
    a, b = randomise(Unit3D(8, 3), 1), randomise(Unit3D(8, 5), 2)
    merged = FusedConv([a, b])
    assert merged.splits == [3, 5]
    with torch.no_grad():
        ya, yb = merged(ndhwc(X)).split(merged.splits, dim=-1)
        torch.testing.assert_close(ncdhw(ya), a(X), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ncdhw(yb), b(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same kernel"):
        FusedConv([a, randomise(Unit3D(8, 3, (3, 3, 3)))])


@pytest.mark.parametrize("branch2", ["Conv3d_0b_3x3", "Conv3d_0a_3x3"])  # Mixed_5b's quirky name too
def test_inception_block_matches(branch2):
    block = randomise(InceptionBlock(8, (4, 3, 5, 2, 3, 4), branch2_3x3=branch2))
    with torch.no_grad():
        ref = block(X)
        got = ncdhw(FusedInception(block)(ndhwc(X)))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_whole_network_matches_the_eager_port():
    net = randomise(I3D(), 3)
    x = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.inference_mode():
        ref = net(x)
        got = FusedI3D(net)(ndhwc(x))
    assert got.shape == (1, 400)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert not torch.equal(got, torch.zeros_like(got))


def test_fused_network_refuses_bad_input():
    fused = FusedI3D(I3D())
    with pytest.raises(UsageError, match=r"\[B, T, H, W, 3\]"):
        fused(torch.zeros(1, 3, 16, 224, 224))
    with pytest.raises(UsageError, match="at least 9"):
        fused(torch.zeros(1, 8, 224, 224, 3))
    with pytest.raises(UsageError, match="float"):
        fused(torch.zeros(1, 9, 224, 224, 3, dtype=torch.uint8))
    with pytest.raises(UsageError, match="224x224"):
        fused(torch.zeros(1, 9, 64, 64, 3))


@pytest.mark.parametrize("resize", ["tf1-legacy-bilinear", "torch-bilinear"])
def test_preprocess_ndhwc_equals_the_reference_layout_swap(resize):
    from vfbench.metrics.i3d_extractor import preprocess

    clips = torch.randint(0, 256, (2, 3, 3, 20, 28), dtype=torch.uint8)
    assert torch.equal(preprocess(clips, resize).permute(0, 2, 3, 4, 1), preprocess_ndhwc(clips, resize))
    with pytest.raises(UsageError, match="unknown I3D resize"):
        preprocess_ndhwc(clips, "nearest")


# -- the extractor's implementation switch --------------------------------------------------------
@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("i3d-fused") / "random.safetensors"
    save_file({k: v.contiguous() for k, v in randomise(I3D(), 5).state_dict().items()}, str(path))
    return path


def test_extractor_impls_agree_and_are_recorded(weights_file):
    from vfbench.metrics.i3d_extractor import I3DExtractor

    clips = torch.randint(0, 256, (2, 9, 3, 24, 32), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    fused = I3DExtractor(weights=weights_file, batch_size=2)
    eager = I3DExtractor(weights=weights_file, batch_size=1, impl="eager")
    a, b = fused.extract(clips)["features"], eager.extract(clips)["features"]
    assert a.dtype == np.float64 and a.shape == (2, 400)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    assert isinstance(fused.net, FusedI3D) and isinstance(eager.net, I3D)
    assert fused.describe()["implementation"] == "fused" and eager.describe()["implementation"] == "eager"
    assert fused.describe() != eager.describe()  # different cache keys for the real statistics
    with pytest.raises(UsageError, match="did you mean 'fused'"):
        I3DExtractor(weights=weights_file, impl="fuse")


def test_evaluation_builds_the_requested_implementation(weights_file):
    from vfbench.evaluation import build_extractor

    assert build_extractor("i3d", "reference", i3d_weights=weights_file).impl == "fused"
    assert build_extractor("i3d", "tats", i3d_weights=weights_file, i3d_impl="eager").impl == "eager"
    with pytest.raises(UsageError, match="I3D implementation"):
        build_extractor("i3d", "reference", i3d_weights=weights_file, i3d_impl="fast")


def test_cli_offers_the_implementation_switch():
    from typer.testing import CliRunner

    from vfbench.cli import app

    r = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--i3d-impl" in r.output
