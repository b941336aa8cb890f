"""Backbones shared by PSPNet and DeepLab: the reference parameter counts, the output strides that dilation
buys, and the features each hands to the heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from segedge.models.backbones import BasicBlock, Bottleneck, MobileNetV2, ResNet, XceptionBlock, XceptionLite
from segedge.models.blocks import InvertedResidual

SIZE = (64, 128)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dilations(stage: nn.Sequential) -> list[int]:
    return [block.conv1.conv.dilation[0] if isinstance(block, BasicBlock) else block.conv2.conv.dilation[0] for block in stage]


@pytest.mark.parametrize(
    ("depth", "expected"),
    # torchvision's resnetNN parameter counts minus the ImageNet classifier (512·1000+1000 or 2048·1000+1000)
    [(18, 11_689_512 - 513_000), (34, 21_797_672 - 513_000), (50, 25_557_032 - 2_049_000), (101, 44_549_160 - 2_049_000)],
)
def test_resnet_matches_torchvision_parameter_counts(depth: int, expected: int) -> None:
    with torch.device("meta"):  # no memory, no init time: only the shapes matter
        assert count(ResNet(depth, width=1.0)) == expected


@pytest.mark.parametrize(("output_stride", "layer3", "layer4"), [(8, [1, 2, 2, 2, 2, 2], [2, 4, 4]), (16, [1] * 6, [1, 2, 2])])
def test_resnet_trades_stride_for_dilation_at_its_output_stride(output_stride: int, layer3: list[int], layer4: list[int]) -> None:
    backbone = ResNet(50, width=0.25, output_stride=output_stride).eval()
    with torch.no_grad():
        low_level, stage3, high_level = backbone(torch.randn(1, 3, *SIZE))
    assert low_level.shape[-2:] == (SIZE[0] // 4, SIZE[1] // 4)
    stage3_stride = min(output_stride, 16)
    assert stage3.shape[-2:] == (SIZE[0] // stage3_stride, SIZE[1] // stage3_stride)
    assert high_level.shape[-2:] == (SIZE[0] // output_stride, SIZE[1] // output_stride)
    assert (low_level.shape[1], stage3.shape[1], high_level.shape[1]) == (
        backbone.low_level_channels, backbone.stage3_channels, backbone.out_channels
    ) == (64, 256, 512)
    # a dilated stage's first block keeps the previous dilation (no gridding on the first dilated kernel)
    assert dilations(backbone.layer3) == layer3 and dilations(backbone.layer4) == layer4


def test_resnet18_uses_basic_blocks_and_resnet50_bottlenecks() -> None:
    assert all(isinstance(b, BasicBlock) for b in ResNet(18, width=0.25).layer4)
    assert all(isinstance(b, Bottleneck) for b in ResNet(50, width=0.25).layer4)
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNet(26)
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        ResNet(18, output_stride=4)


def test_mobilenetv2_matches_torchvision_features_and_dilates_its_last_stages() -> None:
    with torch.device("meta"):
        # torchvision mobilenet_v2: 3,504,872 − classifier 1,281,000 − final 1×1 conv to 1280 (409,600 + BN 2,560)
        assert count(MobileNetV2(width=1.0)) == 3_504_872 - 1_281_000 - 412_160
    backbone = MobileNetV2(width=1.0, output_stride=16).eval()
    with torch.no_grad():
        low_level, _, high_level = backbone(torch.randn(1, 3, *SIZE))
    assert low_level.shape == (1, 24, SIZE[0] // 4, SIZE[1] // 4)
    assert high_level.shape == (1, 320, SIZE[0] // 16, SIZE[1] // 16)
    depthwise = [m.layers.depthwise.conv for m in backbone.to_high_level.modules() if isinstance(m, InvertedResidual)]
    assert [c.stride[0] for c in depthwise] == [1] * 4 and [c.dilation[0] for c in depthwise] == [2] * 4


def test_inverted_residual_is_linear_bottleneck_with_identity_only_when_shapes_match() -> None:
    block = InvertedResidual(16, 16, stride=1, expansion=6)
    assert block.use_residual and block.layers.expand.conv.out_channels == 96
    assert not hasattr(block.layers.project, "relu"), "the projection is linear (the paper's linear bottleneck)"
    assert not InvertedResidual(16, 24).use_residual and not InvertedResidual(16, 16, stride=2).use_residual
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(block.eval()(x), x + block.layers(x))


def test_xception_lite_is_separable_with_eight_middle_blocks() -> None:
    backbone = XceptionLite(width=0.25, output_stride=16).eval()
    assert len(backbone.middle) == 8  # Xception-65 has 16
    depthwise = [m for m in backbone.middle.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert depthwise and all(c.groups == c.in_channels for c in depthwise), "every 3×3 conv is depthwise"
    with torch.no_grad():
        low_level, _, high_level = backbone(torch.randn(1, 3, *SIZE))
    assert low_level.shape == (1, backbone.low_level_channels, SIZE[0] // 4, SIZE[1] // 4)
    assert high_level.shape == (1, 512, SIZE[0] // 16, SIZE[1] // 16)  # 2048 at width 1
    with torch.device("meta"):
        full, lite = count(XceptionLite(middle_blocks=16)), count(XceptionLite())
        middle_block = count(XceptionBlock(728, (728, 728, 728)))
    assert full - lite == 8 * middle_block and 1.6e6 < middle_block < 1.65e6
