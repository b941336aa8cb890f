"""DeepLab v1, v2, v3 and v3+ (Chen et al. 2015, 2017, 2017, 2018): dilated ("atrous") backbones that
keep a dense 1/8 or 1/16 map, and, from v2 on, parallel dilated branches for multi-scale context.

- v1 (DeepLab-LargeFOV): VGG-16 whose pool4/pool5 keep the resolution (stride 1) and conv5 is dilated
  by 2; fc6 becomes a 3×3 conv dilated by 12 with 1024 channels; output stride 8. BatchNorm is added
  after every conv (the paper has none: it fine-tuned ImageNet weights, we train from scratch; BN folds
  away at export). The paper's dense-CRF refinement is a CPU post-processing step, not part of the
  network, and is not implemented.
- v2: ResNet at stride 8 and ASPP-L: four 3×3 classifiers dilated by 6, 12, 18 and 24 whose logits
  are *summed*.
- v3: ResNet at stride 16 and ASPP: a 1×1 branch, three 3×3 branches dilated by 6/12/18 and an
  image-pooling branch (global mean → 1×1 conv-BN-ReLU → broadcast), concatenated and projected by
  a 1×1 conv to 256 channels, then the classifier.
- v3+: v3's ASPP as the encoder plus a decoder: the 1/4 low-level feature reduced to 48 channels by a
  1×1 conv, concatenated with the 4× upsampled encoder output, two 3×3 convs (256), classifier.
  With Xception (as in the paper) and MobileNetV2 the ASPP and decoder 3×3 convs are depthwise
  separable; with ResNet they are plain convs, as in the paper's ResNet-101 model. ``deeplabv3plus``
  means the MobileNetV2 one: the zoo targets edge devices, where it costs ~11 GMACs at 512×1024
  against ~138 for ResNet-50 and ~76 for Xception-lite, with depthwise convs that INT8 handles per channel.

ResNet-50 stands in for the papers' ResNet-101 throughout (v3's ablations use ResNet-50): at stride 8,
ResNet-101's 23-block stage 3 alone costs ~200 GMACs at 512×1024. Logits are upsampled bilinearly
to the input size; the image-pooling branch is a mean over H and W, so every model exports with
dynamic H/W. That branch's BatchNorm sees one value per image, so v3/v3+ train with batches of ≥ 2.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn

from segedge.models.backbones import MobileNetV2, ResNet, XceptionLite
from segedge.models.blocks import ConvBNReLU, DepthwiseSeparableConv, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model

ConvFactory = Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, dilation) → 3×3 conv block


def plain_conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Module:
    return ConvBNReLU(in_channels, out_channels, dilation=dilation)


def separable_conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Module:
    return DepthwiseSeparableConv(in_channels, out_channels, dilation=dilation)


class VGG16LargeFOV(nn.Module):
    """DeepLab v1's network: VGG-16 convs at output stride 8, then fc6 (3×3, dilation 12), fc7, fc8."""

    STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, stage in enumerate(self.STAGES):
            dilation = 2 if index == 4 else 1  # conv5 follows pool4, which no longer downsamples
            for channels in stage:
                out_channels = make_divisible(channels, width)
                layers.append(ConvBNReLU(in_channels, out_channels, dilation=dilation))
                in_channels = out_channels
            layers.append(nn.MaxPool2d(3, stride=2 if index < 3 else 1, padding=1))  # pool4, pool5: stride 1
        self.features = nn.Sequential(*layers)
        fc = make_divisible(1024, width)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=ConvBNReLU(in_channels, fc, dilation=12),
                drop6=nn.Dropout2d(0.5),
                fc7=ConvBNReLU(fc, fc, kernel_size=1),
                drop7=nn.Dropout2d(0.5),
                fc8=nn.Conv2d(fc, num_classes, kernel_size=1),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.features(x)), x)


class SummedAtrousClassifiers(nn.Module):
    """DeepLab v2's ASPP-L: one dilated 3×3 classifier per rate, logits summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate) for rate in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.branches[0](x)
        for branch in self.branches[1:]:
            logits = logits + branch(x)
        return logits


class DeepLabV2(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, depth: int = 50) -> None:
        super().__init__()
        self.backbone = ResNet(depth, width, output_stride=8)
        self.aspp = SummedAtrousClassifiers(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.aspp(self.backbone(x).high_level), x)


class ASPP(nn.Module):
    """DeepLab v3's atrous spatial pyramid pooling: 1×1, three dilated 3×3 and an image-pooling branch,
    concatenated and projected by a 1×1 conv-BN-ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, rates: tuple[int, ...] = (6, 12, 18), conv3x3: ConvFactory = plain_conv3x3
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, kernel_size=1)] + [conv3x3(in_channels, out_channels, r) for r in rates]
        )
        self.image_pooling = ConvBNReLU(in_channels, out_channels, kernel_size=1)
        self.project = ConvBNReLU(out_channels * (len(rates) + 2), out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = resize_to(self.image_pooling(x.mean(dim=(2, 3), keepdim=True)), x)
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, depth: int = 50) -> None:
        super().__init__()
        self.backbone = ResNet(depth, width, output_stride=16)
        channels = make_divisible(256, width)
        self.aspp = ASPP(self.backbone.out_channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.aspp(self.backbone(x).high_level)), x)


class DeepLabV3Plus(nn.Module):
    """v3+; ``backbone`` is ``"mobilenetv2"``, ``"resnet"`` (ResNet-50) or ``"xception"`` (Xception-lite)."""

    def __init__(self, num_classes: int, width: float = 1.0, backbone: str = "mobilenetv2") -> None:
        super().__init__()
        builders: dict[str, Callable[[], nn.Module]] = {
            "mobilenetv2": lambda: MobileNetV2(width, output_stride=16),
            "resnet": lambda: ResNet(50, width, output_stride=16),
            "xception": lambda: XceptionLite(width, output_stride=16),
        }
        self.backbone = builders[backbone]()
        conv3x3 = plain_conv3x3 if backbone == "resnet" else separable_conv3x3
        channels, low_level = make_divisible(256, width), make_divisible(48, width)
        self.aspp = ASPP(self.backbone.out_channels, channels, conv3x3=conv3x3)
        self.reduce_low_level = ConvBNReLU(self.backbone.low_level_channels, low_level, kernel_size=1)
        self.decoder = nn.Sequential(conv3x3(channels + low_level, channels, 1), conv3x3(channels, channels, 1))
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        low_level = self.reduce_low_level(features.low_level)
        encoded = resize_to(self.aspp(features.high_level), low_level)
        return resize_to(self.classifier(self.decoder(torch.cat([encoded, low_level], dim=1))), x)


def build_deeplabv1(num_classes: int, width: float = 1.0) -> VGG16LargeFOV:
    return VGG16LargeFOV(num_classes, width)


def build_deeplabv2(num_classes: int, width: float = 1.0) -> DeepLabV2:
    return DeepLabV2(num_classes, width)


def build_deeplabv3(num_classes: int, width: float = 1.0) -> DeepLabV3:
    return DeepLabV3(num_classes, width)


def build_deeplabv3plus_mobilenetv2(num_classes: int, width: float = 1.0) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, width, backbone="mobilenetv2")


def build_deeplabv3plus_resnet(num_classes: int, width: float = 1.0) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, width, backbone="resnet")


def build_deeplabv3plus_xception(num_classes: int, width: float = 1.0) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, width, backbone="xception")


for _spec in (
    ModelSpec(
        name="deeplabv1",
        builder=build_deeplabv1,
        description="DeepLab v1 LargeFOV (Chen 2015): dilated VGG-16 at stride 8, fc6 3x3 dilation 12 "
        "(+BN; no dense CRF); 20.5 M params, ~250 GMACs at 512x1024",
        output_stride=8,
        min_train_batch=1,
        aliases=("deeplabv1-largefov", "deeplab-largefov"),
    ),
    ModelSpec(
        name="deeplabv2",
        builder=build_deeplabv2,
        description="DeepLab v2 (Chen 2017): dilated ResNet-50 at stride 8 + ASPP-L (four dilated "
        "classifiers, rates 6/12/18/24, summed); 24.9 M params, ~210 GMACs at 512x1024",
        output_stride=8,
        min_train_batch=1,
        # full INT8 drop +0.20 points with Q/DQ on layers only, +1.24 with onnxruntime's whole op set (zoo bench)
        int8_op_set="layers",
        aliases=("deeplabv2-resnet50",),
    ),
    ModelSpec(
        name="deeplabv3",
        builder=build_deeplabv3,
        description="DeepLab v3 (Chen 2017): dilated ResNet-50 at stride 16 + ASPP (1x1, 3x3 rates 6/12/18, "
        "image pooling); 39 M params, ~96 GMACs at 512x1024",
        output_stride=16,
        aliases=("deeplabv3-resnet50",),
    ),
    ModelSpec(
        name="deeplabv3plus",
        builder=build_deeplabv3plus_mobilenetv2,
        description="DeepLab v3+ (Chen 2018) on MobileNetV2 at stride 16: separable ASPP + decoder fusing the "
        "1/4 feature; the edge-friendly default: 2.7 M params, ~11 GMACs at 512x1024",
        output_stride=16,
        aliases=("deeplabv3plus-mobilenetv2", "deeplabv3+"),
    ),
    ModelSpec(
        name="deeplabv3plus-resnet",
        builder=build_deeplabv3plus_resnet,
        description="DeepLab v3+ (Chen 2018) on dilated ResNet-50 at stride 16: ASPP + decoder fusing the 1/4 feature; "
        "40 M params, ~138 GMACs at 512x1024",
        output_stride=16,
        aliases=("deeplabv3plus-resnet50",),
    ),
    ModelSpec(
        name="deeplabv3plus-xception",
        builder=build_deeplabv3plus_xception,
        description="DeepLab v3+ (Chen 2018) on Xception-lite (8 middle blocks) at stride 16: separable ASPP + decoder; "
        "28 M params, ~76 GMACs at 512x1024",
        output_stride=16,
        aliases=("deeplabv3plus-xception-lite",),
    ),
):
    register_model(_spec)
