"""BiSeNet v1 (Yu et al. 2018): a shallow wide spatial path for detail, a deep context path for
receptive field, fused at 1/8 resolution.

Layout follows the paper and its reference implementations: spatial path of three stride-2 convs;
ResNet-18 context path with attention refinement (ARM) on the 1/16 and 1/32 features plus a global
average pooling tail; feature fusion module (FFM); logits upsampled bilinearly to the input size.
The two auxiliary heads supervise the context path during training only; in eval mode ``forward``
returns logits alone, so the exported graph carries no auxiliary weights.

Training note: ARM and the pooling tail apply BatchNorm to a 1×1 map, as in the paper, so a training
batch needs at least 2 images.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, SqueezeExcitation, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs plus identity, or a strided 1×1 projection when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels, stride=stride)
        self.conv2 = ConvBNReLU(out_channels, out_channels, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNReLU(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet18Features(nn.Module):
    """ResNet-18 without its classifier, returning the 1/16 and 1/32 feature maps.

    Written here (no torchvision, no download); the model trains from scratch.
    """

    def __init__(self, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.stem = nn.Sequential(ConvBNReLU(3, c1, kernel_size=7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = nn.Sequential(BasicBlock(c1, c1), BasicBlock(c1, c1))  # 1/4
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, stride=2), BasicBlock(c2, c2))  # 1/8
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, stride=2), BasicBlock(c3, c3))  # 1/16
        self.layer4 = nn.Sequential(BasicBlock(c3, c4, stride=2), BasicBlock(c4, c4))  # 1/32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat16 = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    """ARM: a 3×3 conv to the context width, then reweight its channels by global context
    (mean → 1×1 conv → BN → sigmoid → multiply)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.attention = ConvBNReLU(out_channels, out_channels, kernel_size=1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.attention(feat.mean(dim=(2, 3), keepdim=True)))


class ContextPath(nn.Module):
    """Backbone + ARMs + global pooling tail; returns refined context at 1/8 (the size of ``eighth``,
    the spatial path's output) and at 1/16.

    The 1/32 features get the global context (broadcast add of their pooled projection), are
    upsampled to 1/16 and added to the refined 1/16 features; that sum is upsampled to 1/8.
    """

    def __init__(self, backbone_channels: tuple[int, int, int, int], out_channels: int) -> None:
        super().__init__()
        self.backbone = ResNet18Features(backbone_channels)
        self.arm16 = AttentionRefinementModule(backbone_channels[2], out_channels)
        self.arm32 = AttentionRefinementModule(backbone_channels[3], out_channels)
        self.global_context = ConvBNReLU(backbone_channels[3], out_channels, kernel_size=1)
        self.refine32 = ConvBNReLU(out_channels, out_channels)
        self.refine16 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, eighth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat16, feat32 = self.backbone(x)
        context = self.global_context(feat32.mean(dim=(2, 3), keepdim=True))
        up32 = self.refine32(resize_to(self.arm32(feat32) + context, feat16))  # 1/16
        up16 = self.refine16(resize_to(self.arm16(feat16) + up32, eighth))  # 1/8
        return up16, up32


class FeatureFusionModule(nn.Module):
    """FFM: concat spatial and context features, conv-BN-ReLU, then SE attention with a residual add
    (paper Fig. 2c: ``feat + feat * attention``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = ConvBNReLU(in_channels, out_channels, kernel_size=1)
        self.attention = SqueezeExcitation(out_channels, reduction=4)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.fuse(torch.cat([spatial, context], dim=1))
        return feat + self.attention(feat)


class SegmentationHead(nn.Sequential):
    """3×3 conv-BN-ReLU then a 1×1 classifier; upsampling happens in the model's forward."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__(ConvBNReLU(in_channels, mid_channels), nn.Conv2d(mid_channels, num_classes, kernel_size=1))


class BiSeNetV1(nn.Module):
    """BiSeNet v1; ``forward`` returns ``logits`` in eval mode, ``(logits, aux16, aux32)`` in training."""

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c64, c128, c256, c512 = (make_divisible(c, width) for c in (64, 128, 256, 512))
        self.spatial_path = nn.Sequential(  # 1/8, wide and shallow: keeps spatial detail
            ConvBNReLU(3, c64, kernel_size=7, stride=2),
            ConvBNReLU(c64, c64, stride=2),
            ConvBNReLU(c64, c128, stride=2),
        )
        self.context_path = ContextPath((c64, c128, c256, c512), out_channels=c128)
        self.ffm = FeatureFusionModule(c128 + c128, c256)
        self.head = SegmentationHead(c256, c256, num_classes)
        self.aux16_head = SegmentationHead(c128, c64, num_classes)
        self.aux32_head = SegmentationHead(c128, c64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spatial = self.spatial_path(x)
        context8, context16 = self.context_path(x, spatial)
        logits = resize_to(self.head(self.ffm(spatial, context8)), x)
        if not self.training:
            return logits
        # the 1/8 context output carries the 1/16 ARM branch, the 1/16 output the 1/32 branch
        return logits, resize_to(self.aux16_head(context8), x), resize_to(self.aux32_head(context16), x)


def build_bisenet(num_classes: int, width: float = 1.0) -> BiSeNetV1:
    return BiSeNetV1(num_classes=num_classes, width=width)


register_model(
    ModelSpec(
        name="bisenet",
        builder=build_bisenet,
        description="BiSeNet v1 (Yu 2018): spatial path + ResNet-18 context path, ARM and FFM; real-time",
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=32,
        aliases=("bisenetv1",),
    )
)
