"""The U-Net family: shapes, conditioning, temporal inflation and its masks."""

import pytest
import torch

from vfbench.errors import UsageError
from vfbench.nets import UNet, count_parameters, unet_preset
from vfbench.nets.attention import relative_position_bucket




def _randomize(module, seed=0):
    """Give every parameter (including the zero-initialised output layers) random values so that tests of
    information flow cannot pass merely because a branch outputs zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def _net(**overrides):
    torch.manual_seed(0)
    return UNet(unet_preset("tiny", **overrides)).eval()


def test_image_and_video_shapes():
    g = torch.Generator().manual_seed(0)
    img = _net()
    x = torch.randn(2, 3, 8, 8, generator=g)
    assert img(x, torch.tensor([3, 500])).shape == x.shape
    vid = _net(video=True)
    v = torch.randn(2, 3, 4, 8, 8, generator=g)
    assert vid(v, torch.tensor([3, 500])).shape == v.shape
    with pytest.raises(UsageError, match=r"\[B, C, T, H, W\]"):
        vid(x, torch.tensor([1, 2]))
    with pytest.raises(UsageError, match="divisible"):
        img(torch.randn(1, 3, 7, 7), torch.tensor([1]))


def test_out_channels_and_extra_input_channels():
    net = _net(in_channels=3, out_channels=6, extra_input_channels=2)
    x = torch.randn(2, 3, 8, 8)
    cond = torch.randn(2, 2, 8, 8)
    assert net(x, torch.tensor([1, 2]), cond=cond).shape == (2, 6, 8, 8)
    with pytest.raises(UsageError, match="extra_input_channels"):
        net(x, torch.tensor([1, 2]))


def test_zero_initialised_output_then_time_dependence():
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    assert net(x, torch.tensor([1, 2])).abs().max().item() == 0.0  # ADM-style zero output conv
    _randomize(net)
    a = net(x, torch.tensor([1, 1]))
    b = net(x, torch.tensor([900, 900]))
    assert not torch.allclose(a, b)


def test_class_embedding_and_null_label():
    net = _randomize(_net(num_classes=5))
    x = torch.randn(2, 3, 8, 8).expand(2, -1, -1, -1)
    t = torch.tensor([10, 10])
    out = net(x, t, class_labels=torch.tensor([0, 4]))
    assert not torch.allclose(out[0], out[1])
    null = net(x, t, class_labels=torch.tensor([5, 5]))  # row num_classes = the guidance null label
    torch.testing.assert_close(net(x, t), null)  # no labels -> null label
    assert not torch.allclose(null[0], out[0])
    with pytest.raises(UsageError, match=r"\[0, 5\]"):
        net(x, t, class_labels=torch.tensor([0, 6]))
    with pytest.raises(UsageError, match="num_classes"):
        _net()(x, t, class_labels=torch.tensor([0, 1]))


def test_frame_index_embedding_changes_output():
    net = _randomize(_net(num_frame_indices=16))
    x = torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([10, 10]), frame_index=torch.tensor([0, 15]))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(UsageError, match="frame_index"):
        net(x, torch.tensor([10, 10]))
    with pytest.raises(UsageError, match="num_frame_indices"):
        net(x, torch.tensor([10, 10]), frame_index=torch.tensor([0, 16]))


def test_gradient_flows_to_every_parameter():
    net = _net(num_classes=3, video=True).train()
    _randomize(net)
    x = torch.randn(2, 3, 4, 8, 8)
    net(x, torch.tensor([5, 700]), class_labels=torch.tensor([0, 3])).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # the class embedding rows not used in this batch get no gradient; everything else must
    assert all(n.startswith("class_embed") for n in dead), dead


def test_temporal_disabled_equals_per_frame_2d_unet():
    video = _randomize(_net(video=True), seed=1)
    image = _net(video=False)
    image.load_state_dict({k: v for k, v in video.state_dict().items() if k not in video.temporal_parameter_names()})
    x = torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([10, 600])
    per_frame = torch.stack([image(x[:, :, i], t) for i in range(4)], dim=2)
    torch.testing.assert_close(video(x, t, temporal=False), per_frame, atol=1e-5, rtol=1e-5)
    # with the (randomised) temporal layers on, frames interact and the output differs
    assert not torch.allclose(video(x, t), per_frame, atol=1e-3)


def test_fresh_inflation_equals_2d_unet_and_loads_2d_weights():
    image = _randomize(_net(video=False), seed=2)
    video = _net(video=True)
    video.load_spatial_state(image.state_dict())
    x = torch.randn(1, 3, 4, 8, 8)
    t = torch.tensor([123])
    per_frame = torch.stack([image(x[:, :, i], t) for i in range(4)], dim=2)
    # temporal blocks are residual with zero-initialised output projections
    torch.testing.assert_close(video(x, t), per_frame, atol=1e-5, rtol=1e-5)


def test_temporal_mask_blocks_information_flow():
    net = _randomize(_net(video=True), seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 8, 8, generator=g)
    t = torch.tensor([300])
    # frames 0-1 form a clip; frames 2 and 3 are independent images
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    base = net(x, t, temporal_mask=mask)
    x2 = x.clone()
    x2[:, :, 2] += torch.randn(x2[:, :, 2].shape, generator=g)
    out = net(x2, t, temporal_mask=mask)
    torch.testing.assert_close(out[:, :, [0, 1, 3]], base[:, :, [0, 1, 3]], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, :, 2], base[:, :, 2])
    # without the mask the perturbation reaches the other frames
    assert not torch.allclose(net(x2, t)[:, :, 0], net(x, t)[:, :, 0], atol=1e-4)


def test_relative_position_buckets():
    rel = torch.arange(-40, 41)
    b = relative_position_bucket(rel, num_buckets=32, max_distance=32)
    assert b.min() >= 0 and b.max() <= 31
    # small offsets get distinct buckets, the two directions never share one, far offsets saturate
    assert len(set(b[(rel.abs() < 8)].tolist())) == 15
    assert set(b[rel > 0].tolist()).isdisjoint(set(b[rel <= 0].tolist()))
    assert b[rel == 40].item() == b[rel == 32].item() == 31


def test_relative_bias_makes_frame_order_matter():
    net = _randomize(_net(video=True, use_initial_temporal_attention=True), seed=4)
    x = torch.randn(1, 3, 4, 8, 8)
    t = torch.tensor([50])
    out = net(x, t)
    rev = net(x.flip(2), t).flip(2)
    assert not torch.allclose(out, rev, atol=1e-4)


def test_presets_and_bad_options():
    assert count_parameters(UNet(unet_preset("tiny"))) < 100_000
    small = unet_preset("small", "base")
    assert small.base_width == 32 and small.channel_mults == (1, 2, 2)
    paper = unet_preset("paper", "base")
    assert (paper.base_width, paper.channel_mults, paper.blocks_per_scale, paper.attention_scales, paper.head_dim) == \
        (192, (1, 2, 3, 5), 2, (2, 4, 8), 64)
    assert unet_preset("paper", "residual").base_width == 128
    with pytest.raises(UsageError, match="tiny"):
        unet_preset("tinny")
    with pytest.raises(UsageError, match="attention_scales"):
        unet_preset("tiny", attention_scales=(16,))
    with pytest.raises(UsageError, match="head_dim"):
        UNet(unet_preset("tiny", head_dim=3))


def test_gradient_checkpointing_gives_the_same_output_and_gradients():
    plain = _randomize(_net(video=True), seed=5).train()
    ckpt = _net(video=True, gradient_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 4, 8, 8)
    t = torch.tensor([77])
    out_a, out_b = plain(x, t), ckpt(x, t)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().mean().backward()
    out_b.square().mean().backward()
    for (name, pa), pb in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
