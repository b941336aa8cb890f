"""PSPNet (Zhao et al. 2017): a dilated ResNet at output stride 8 and a pyramid pooling module (PPM)
that adds context pooled over 1×1, 2×2, 3×3 and 6×6 bins of the whole feature map.

Layout follows the paper: ResNet-50 (the paper's ablation backbone; its best results use ResNet-101)
dilated in stages 3 and 4; each bin → 1×1 conv-BN-ReLU to a quarter of the channels → bilinear
upsample → concat with the features → 3×3 conv-BN-ReLU (512) → dropout → 1×1 classifier. The
auxiliary head (weight 0.4) supervises ResNet stage 3 in training only.

Export-safety: ``AdaptiveAvgPool2d`` to 2, 3 or 6 bins exports either as an AveragePool whose kernel
is the export size's, or as ~100 Gathers, silently wrong at any other size. Here a bin is pooled by
reshaping the map into b×b tiles and averaging each tile, with tile sizes derived from the tensor's
shape, so the exported graph is Shape → Div → Reshape → ReduceMean and follows H and W. The tiles
are exact only when 6 divides the 1/8 map, so H and W must be multiples of 48 (8 × lcm(1, 2, 3, 6)),
and the default size is 528×1056 rather than the zoo's usual 512×1024.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.backbones import ResNet
from segedge.models.blocks import ConvBNReLU, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model

PYRAMID_BINS = (1, 2, 3, 6)


def bin_average(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Average ``x`` over a ``bins``×``bins`` grid of equal tiles (``AdaptiveAvgPool2d(bins)`` where
    ``bins`` divides H and W), written so the tile size stays symbolic under export."""
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    n, c, h, w = x.shape
    return x.reshape(n, c, bins, h // bins, bins, w // bins).mean(dim=(3, 5))


class PyramidPooling(nn.Module):
    """PPM: for each bin count, pool → 1×1 conv-BN-ReLU → upsample; concat with the input."""

    def __init__(self, in_channels: int, branch_channels: int, bins: tuple[int, ...] = PYRAMID_BINS) -> None:
        super().__init__()
        self.bins = bins
        self.branches = nn.ModuleList(ConvBNReLU(in_channels, branch_channels, kernel_size=1) for _ in bins)
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_to(branch(bin_average(x, b)), x) for b, branch in zip(self.bins, self.branches)]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Sequential):
    """3×3 conv-BN-ReLU → dropout 0.1 → 1×1 classifier (main and auxiliary heads alike)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__(ConvBNReLU(in_channels, mid_channels), nn.Dropout2d(0.1), nn.Conv2d(mid_channels, num_classes, 1))


class PSPNet(nn.Module):
    """PSPNet; ``forward`` returns ``logits`` in eval mode, ``(logits, aux)`` in training."""

    def __init__(self, num_classes: int, width: float = 1.0, depth: int = 50) -> None:
        super().__init__()
        self.backbone = ResNet(depth, width, output_stride=8)
        channels = self.backbone.out_channels
        self.ppm = PyramidPooling(channels, channels // len(PYRAMID_BINS))
        self.head = PSPHead(self.ppm.out_channels, make_divisible(512, width), num_classes)
        self.aux_head = PSPHead(self.backbone.stage3_channels, make_divisible(256, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        logits = resize_to(self.head(self.ppm(features.high_level)), x)
        if not self.training:
            return logits
        return logits, resize_to(self.aux_head(features.stage3), x)


def build_pspnet(num_classes: int, width: float = 1.0) -> PSPNet:
    return PSPNet(num_classes=num_classes, width=width, depth=50)


register_model(
    ModelSpec(
        name="pspnet",
        builder=build_pspnet,
        description="PSPNet (Zhao 2017): dilated ResNet-50 at stride 8 + pyramid pooling (bins 1/2/3/6); "
        "H/W multiples of 48 so every bin tiles the map exactly; heavy: 46.6 M params, ~377 GMACs at 528x1056",
        default_input_size=(528, 1056),  # 512x1024 is not a multiple of 48; this is the nearest above
        num_classes=19,
        output_stride=8,
        input_multiple=48,
        min_input_size=(48, 48),
        aliases=("pspnet-resnet50",),
    )
)
