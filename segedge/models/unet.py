"""U-Net (Ronneberger et al. 2015): a symmetric encoder-decoder with a skip connection at every scale.

Same-padded 3×3 convs (unlike the paper's valid convs) and BatchNorm after each, so the output is the
input size and no cropping is needed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible
from segedge.models.registry import ModelSpec, register_model


class DoubleConv(nn.Sequential):
    """Two 3×3 conv-BN-ReLU: U-Net's unit at every scale."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class Down(nn.Sequential):
    """2×2 max pool, then DoubleConv: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """2×2 transposed conv (doubles H and W), concat the encoder skip, then DoubleConv.

    No padding or cropping to align the two: :class:`ModelSpec` only admits H and W that are
    multiples of 16, so every pool divides exactly and the upsampled map is the skip's size. (The
    reference code's ``F.pad`` by a size difference would put shape arithmetic into the exported graph
    for a case that cannot occur.)
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Four downs and four ups; channels 64·width doubling to 1024·width at 1/16 resolution."""

    def __init__(self, num_classes: int, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (make_divisible(64 * 2**i, width) for i in range(5))
        self.inc = DoubleConv(in_channels, c1)
        self.down1 = Down(c1, c2)
        self.down2 = Down(c2, c3)
        self.down3 = Down(c3, c4)
        self.down4 = Down(c4, c5)
        self.up1 = Up(c5, c4, c4)
        self.up2 = Up(c4, c3, c3)
        self.up3 = Up(c3, c2, c2)
        self.up4 = Up(c2, c1, c1)
        self.classifier = nn.Conv2d(c1, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)  # 1/1
        x2 = self.down1(x1)  # 1/2
        x3 = self.down2(x2)  # 1/4
        x4 = self.down3(x3)  # 1/8
        x5 = self.down4(x4)  # 1/16
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.classifier(x)


def build_unet(num_classes: int, width: float = 1.0) -> UNet:
    return UNet(num_classes=num_classes, width=width)


register_model(
    ModelSpec(
        name="unet",
        builder=build_unet,
        description="U-Net (Ronneberger 2015) with BatchNorm and transposed-conv upsampling; 31M params at width 1",
        default_input_size=(256, 512),
        num_classes=19,
        output_stride=16,
    )
)
