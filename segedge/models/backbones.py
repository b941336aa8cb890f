"""Backbones shared by PSPNet and DeepLab: a dilated ResNet, MobileNetV2 and an Xception-lite.

Each trades stride for dilation in its last stages (Yu & Koltun 2016, DeepLab): once the feature map
reaches the requested ``output_stride`` (8 or 16), later stages keep their resolution and widen their
receptive field with dilated 3×3 convs instead, so the weights and receptive field match the
classification network while the map stays dense. Every backbone returns :class:`BackboneFeatures`:
the 1/4 map (DeepLab v3+'s low-level feature), the stage-3 map (PSPNet's auxiliary head) and the
high-level map at ``output_stride``.

Written here (no torchvision, no download); every model trains from scratch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, DepthwiseSeparableConv, InvertedResidual, make_divisible


class BackboneFeatures(NamedTuple):
    low_level: torch.Tensor  # 1/4 resolution
    stage3: torch.Tensor  # the second-to-last stage (ResNet layer3): auxiliary supervision
    high_level: torch.Tensor  # 1/output_stride


def _stage_strides(output_stride: int, count: int) -> list[tuple[int, int]]:
    """(stride, dilation) for ``count`` stages that would each halve the map: stride until the map is at
    ``output_stride`` of the input, then dilation doubling in place of each stride left."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    current, dilation, plan = 32 // 2**count, 1, []
    for _ in range(count):
        if current < output_stride:
            current *= 2
            plan.append((2, dilation))
        else:
            dilation *= 2
            plan.append((1, dilation))
    return plan


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3×3 convs plus identity (a strided 1×1 projection when shapes change).

    Not :class:`segedge.models.bisenet.BasicBlock`: that one has no dilation, which the dilated stages need.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, channels, stride=stride, dilation=dilation)
        self.conv2 = ConvBNReLU(channels, channels, dilation=dilation, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = ConvBNReLU(in_channels, channels, kernel_size=1, stride=stride, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-50/101 block: 1×1 reduce, 3×3 (strided or dilated: ResNet v1.5), 1×1 expand ×4, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = ConvBNReLU(in_channels, channels, kernel_size=1)
        self.conv2 = ConvBNReLU(channels, channels, stride=stride, dilation=dilation)
        self.conv3 = ConvBNReLU(channels, out_channels, kernel_size=1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNReLU(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50/101 (He et al. 2016) without its classifier, dilated to ``output_stride`` 8 or 16.

    A stage that trades its stride for dilation keeps the previous dilation in its first block (as the
    dilated ResNets of DRN and PSPNet do), so the first dilated kernel does not skip over fresh pixels.
    """

    def __init__(self, depth: int = 50, width: float = 1.0, output_stride: int = 8) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        block, counts = RESNET_DEPTHS[depth]
        stem = make_divisible(64, width)
        self.stem = nn.Sequential(ConvBNReLU(3, stem, kernel_size=7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
        plan = [(1, 1)] + _stage_strides(output_stride, 3)  # layer1 stays at 1/4 after the stem
        in_channels, previous_dilation, stages = stem, 1, []
        for base, count, (stride, dilation) in zip((64, 128, 256, 512), counts, plan):
            channels = make_divisible(base, width)
            blocks = [block(in_channels, channels, stride, previous_dilation)]
            in_channels = channels * block.expansion
            blocks += [block(in_channels, channels, 1, dilation) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            previous_dilation = dilation
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.low_level_channels = make_divisible(64, width) * block.expansion
        self.stage3_channels = make_divisible(256, width) * block.expansion
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        low_level = self.layer1(self.stem(x))
        stage3 = self.layer3(self.layer2(low_level))
        return BackboneFeatures(low_level, stage3, self.layer4(stage3))


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) features up to the 320-channel block (no 1280 conv, as DeepLab).

    ReLU instead of the paper's ReLU6: the Q/DQ INT8 path calibrates ranges itself, and plain ReLU keeps
    the conv-BN-ReLU pattern that fusion looks for.
    """

    # expansion t, output channels c, repeats n, first stride s: the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, width: float = 1.0, output_stride: int = 16) -> None:
        super().__init__()
        in_channels = make_divisible(32, width)
        self.stem = ConvBNReLU(3, in_channels, stride=2)
        current, dilation, stages = 2, 1, []
        for expansion, channels, repeats, stride in self.SETTINGS:
            out_channels = make_divisible(channels, width)
            if stride == 2 and current >= output_stride:
                stride, dilation = 1, dilation * 2
            current *= stride
            blocks = []
            for i in range(repeats):
                blocks.append(InvertedResidual(in_channels, out_channels, stride if i == 0 else 1, expansion, dilation))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        # 1/4 after the 24-channel stage, 1/16 (or dilated) after the 96-channel one
        self.to_low_level = nn.Sequential(*stages[:2])
        self.to_stage3 = nn.Sequential(*stages[2:5])
        self.to_high_level = nn.Sequential(*stages[5:])
        self.low_level_channels = make_divisible(24, width)
        self.stage3_channels = make_divisible(96, width)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        low_level = self.to_low_level(self.stem(x))
        stage3 = self.to_stage3(low_level)
        return BackboneFeatures(low_level, stage3, self.to_high_level(stage3))


class XceptionBlock(nn.Module):
    """Three depthwise separable convs (the last one strided or not) plus a residual (Chollet 2017).

    As in DeepLab v3+'s aligned Xception, the max pool is replaced by the strided separable conv and
    every depthwise conv has its own BN and ReLU.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int], stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            DepthwiseSeparableConv(in_channels, c1, dilation=dilation),
            DepthwiseSeparableConv(c1, c2, dilation=dilation),
            DepthwiseSeparableConv(c2, c3, stride=stride, dilation=dilation),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != c3:
            self.shortcut = ConvBNReLU(in_channels, c3, kernel_size=1, stride=stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.shortcut(x)


class XceptionLite(nn.Module):
    """Aligned Xception (DeepLab v3+) with ``middle_blocks`` middle-flow blocks instead of Xception-65's 16.

    Entry flow 32 → 64 → 128 (1/4, the low-level feature) → 256 (1/8) → 728 (1/16); middle flow of
    728-channel residual blocks; exit flow 728 → 1024 then separable convs to 1536, 1536, 2048. Each
    728×728 middle block is 1.6 M parameters and ~3.3 GMACs at 512×1024, so 8 blocks instead of 16 save
    13 M parameters and ~27 GMACs.
    """

    def __init__(self, width: float = 1.0, output_stride: int = 16, middle_blocks: int = 8) -> None:
        super().__init__()
        c32, c64, c128, c256, c728, c1024, c1536, c2048 = (
            make_divisible(c, width) for c in (32, 64, 128, 256, 728, 1024, 1536, 2048)
        )
        (s8, _), (s16, d16), (s32, d32) = _stage_strides(output_stride, 3)
        self.stem = nn.Sequential(ConvBNReLU(3, c32, stride=2), ConvBNReLU(c32, c64))  # 1/2
        self.block1 = XceptionBlock(c64, (c128, c128, c128), stride=2)  # 1/4
        self.entry = nn.Sequential(
            XceptionBlock(c128, (c256, c256, c256), stride=s8),  # 1/8
            XceptionBlock(c256, (c728, c728, c728), stride=s16, dilation=1),  # 1/16 (or dilated)
        )
        self.middle = nn.Sequential(*(XceptionBlock(c728, (c728, c728, c728), dilation=d16) for _ in range(middle_blocks)))
        self.exit = nn.Sequential(
            XceptionBlock(c728, (c728, c1024, c1024), stride=s32, dilation=d16),
            DepthwiseSeparableConv(c1024, c1536, dilation=d32),
            DepthwiseSeparableConv(c1536, c1536, dilation=d32),
            DepthwiseSeparableConv(c1536, c2048, dilation=d32),
        )
        self.low_level_channels = c128
        self.stage3_channels = c728
        self.out_channels = c2048

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        low_level = self.block1(self.stem(x))
        stage3 = self.middle(self.entry(low_level))
        return BackboneFeatures(low_level, stage3, self.exit(stage3))
