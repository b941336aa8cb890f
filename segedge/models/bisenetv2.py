"""BiSeNet V2 (Yu et al. 2021): a wide, shallow detail branch at 1/8 and a narrow, deep semantic branch
at 1/32, merged by the bilateral guided aggregation (BGA) layer.

Layout follows the paper (Table 1, Fig. 4–6): detail branch of three stages (64, 64, 128 channels);
semantic branch with the stem block (conv and max-pool halves, concatenated), gather-and-expansion
(GE) layers with depthwise convs and expansion ratio 6, and the context embedding (CE) block; BGA
fuses the two with mutual sigmoid gating; the seg head is a 3×3 conv (1024 channels, as in the
reference training code) and a 1×1 classifier.

The four booster heads (on the stem, S3, S4 and S5 outputs) are the paper's training-time
enhancement: they run only when ``self.training`` and are returned as auxiliary logits, so the
exported (eval) graph carries none of their weights and inference costs nothing extra.

Export notes: every upsampling is a resize to a reference tensor's size; the CE block's pooling is a
mean over H and W, followed by BatchNorm on a 1×1 map, so a training batch needs at least 2 images.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model

EXPANSION = 6  # GE layer expansion ratio (paper §4.1)


def depthwise_bn(channels: int, out_channels: int | None = None, stride: int = 1) -> ConvBNReLU:
    """3×3 depthwise conv (channel multiplier ``out_channels / channels``) + BN, no activation."""
    return ConvBNReLU(channels, out_channels or channels, stride=stride, groups=channels, relu=False)


class DetailBranch(nn.Sequential):
    """Three stages of plain 3×3 convs, each opening with stride 2: 1/8 resolution, wide channels."""

    def __init__(self, c64: int, c128: int) -> None:
        super().__init__(
            OrderedDict(
                s1=nn.Sequential(ConvBNReLU(3, c64, stride=2), ConvBNReLU(c64, c64)),
                s2=nn.Sequential(ConvBNReLU(c64, c64, stride=2), ConvBNReLU(c64, c64), ConvBNReLU(c64, c64)),
                s3=nn.Sequential(ConvBNReLU(c64, c128, stride=2), ConvBNReLU(c128, c128), ConvBNReLU(c128, c128)),
            )
        )


class StemBlock(nn.Module):
    """Stem (Fig. 4a): 3×3/s2 conv, then a conv half (1×1 squeeze, 3×3/s2) and a max-pool half,
    concatenated and fused by a 3×3 conv: 1/4 resolution cheaply."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        half = make_divisible(out_channels / 2)
        self.conv = ConvBNReLU(3, out_channels, stride=2)
        self.conv_half = nn.Sequential(
            ConvBNReLU(out_channels, half, kernel_size=1), ConvBNReLU(half, out_channels, stride=2)
        )
        self.pool_half = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.conv_half(x), self.pool_half(x)], dim=1))


class GatherExpansion(nn.Module):
    """GE layer (Fig. 5b/c): 3×3 conv gathers, a depthwise conv expands ×6 (two of them at stride 2),
    a 1×1 conv projects back; residual add (a depthwise-separable shortcut at stride 2), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        mid = in_channels * EXPANSION
        layers: list[nn.Module] = [ConvBNReLU(in_channels, in_channels)]
        if stride == 1:
            layers.append(ConvBNReLU(in_channels, mid, groups=in_channels))
            self.shortcut: nn.Module = nn.Identity()
        else:
            layers += [depthwise_bn(in_channels, mid, stride=2), ConvBNReLU(mid, mid, groups=mid)]
            self.shortcut = nn.Sequential(
                depthwise_bn(in_channels, stride=2), ConvBNReLU(in_channels, out_channels, kernel_size=1, relu=False)
            )
        layers.append(ConvBNReLU(mid, out_channels, kernel_size=1, relu=False))
        self.body = nn.Sequential(*layers)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """CE block (Fig. 5a): global mean → BN → 1×1 conv, broadcast-added to the input, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.pooled_conv = ConvBNReLU(channels, channels, kernel_size=1)
        self.conv = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.pooled_conv(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.conv(x + context)


class SemanticBranch(nn.Module):
    """Stem (1/4) → S3 (1/8) → S4 (1/16) → S5 (1/32) of GE layers → CE; also returns the stage outputs
    the booster heads supervise."""

    def __init__(self, c16: int, c32: int, c64: int, c128: int) -> None:
        super().__init__()
        self.stem = StemBlock(c16)
        self.s3 = nn.Sequential(GatherExpansion(c16, c32, stride=2), GatherExpansion(c32, c32))
        self.s4 = nn.Sequential(GatherExpansion(c32, c64, stride=2), GatherExpansion(c64, c64))
        self.s5 = nn.Sequential(GatherExpansion(c64, c128, stride=2), *(GatherExpansion(c128, c128) for _ in range(3)))
        self.context = ContextEmbedding(c128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = self.stem(x)
        s3 = self.s3(stem)
        s4 = self.s4(s3)
        s5 = self.s5(s4)
        return self.context(s5), [stem, s3, s4, s5]


class BilateralGuidedAggregation(nn.Module):
    """BGA (Fig. 6): each branch gates the other at its own resolution, then the two are summed at 1/8.

    Detail at 1/8 is gated by the upsampled sigmoid of semantic; detail downsampled to 1/32 (3×3/s2 conv
    + 3×3/s2 avg-pool) gates the sigmoid of semantic there, and the product is upsampled and added.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(depthwise_bn(channels), nn.Conv2d(channels, channels, 1, bias=False))
        self.detail_down = nn.Sequential(
            ConvBNReLU(channels, channels, stride=2, relu=False), nn.AvgPool2d(3, stride=2, padding=1)
        )
        self.semantic_up = ConvBNReLU(channels, channels, relu=False)
        self.semantic_keep = nn.Sequential(depthwise_bn(channels), nn.Conv2d(channels, channels, 1, bias=False))
        self.fuse = ConvBNReLU(channels, channels)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        high = self.detail_keep(detail) * torch.sigmoid(resize_to(self.semantic_up(semantic), detail))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(high + resize_to(low, detail))


class SegmentationHead(nn.Sequential):
    """3×3 conv-BN-ReLU → dropout → 1×1 classifier (the seg head and every booster share this form)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, mid_channels), nn.Dropout(0.1), nn.Conv2d(mid_channels, num_classes, kernel_size=1)
        )


class BiSeNetV2(nn.Module):
    """BiSeNet V2; ``forward`` returns logits in eval mode, ``(logits, stem, s3, s4, s5 boosters)`` in training."""

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c16, c32, c64, c128 = (make_divisible(c, width) for c in (16, 32, 64, 128))
        self.detail = DetailBranch(c64, c128)
        self.semantic = SemanticBranch(c16, c32, c64, c128)
        self.aggregation = BilateralGuidedAggregation(c128)
        self.head = SegmentationHead(c128, make_divisible(1024, width), num_classes)
        booster_mid = make_divisible(128, width)
        self.boosters = nn.ModuleList(SegmentationHead(c, booster_mid, num_classes) for c in (c16, c32, c64, c128))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        semantic, stages = self.semantic(x)
        logits = resize_to(self.head(self.aggregation(self.detail(x), semantic)), x)
        if not self.training:
            return logits
        return (logits, *(resize_to(booster(stage), x) for booster, stage in zip(self.boosters, stages)))


def build_bisenetv2(num_classes: int, width: float = 1.0) -> BiSeNetV2:
    return BiSeNetV2(num_classes=num_classes, width=width)


register_model(
    ModelSpec(
        name="bisenetv2",
        builder=build_bisenetv2,
        description=(
            "BiSeNet V2 (Yu 2021): detail branch + GE-layer semantic branch, BGA fusion; "
            "booster heads in training only; real-time"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=32,
        min_input_size=(64, 64),
    )
)
