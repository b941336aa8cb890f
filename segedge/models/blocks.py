"""Small building blocks shared by the model families.

Every block here exports to plain ONNX (Conv, BatchNormalization, Relu, Sigmoid, Mul, ReduceMean,
Resize) and stays correct when H and W change at run time: pooling is a mean over the spatial axes,
never an ``AdaptiveAvgPool2d`` with a fixed output size (its kernel would be baked in at the export
size), and no block reads a tensor's size as a Python int.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_divisible(channels: float, width: float = 1.0, divisor: int = 8, min_channels: int = 8) -> int:
    """Scale a channel count by ``width`` and round it to a multiple of ``divisor``.

    Multiples of 8 keep tensor cores and INT8 kernels on their fast paths. As in MobileNet, rounding
    never removes more than 10 % of the channels, so a small width does not silently shrink a layer
    twice as much as asked.
    """
    scaled = channels * width
    rounded = max(min_channels, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to ``ref``'s H×W.

    The size comes from the tensor, not from Python ints or a scale factor, so the exported Resize
    follows the input when H and W change at run time.
    """
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias: BN follows) → BatchNorm → ReLU, padded to keep the size at stride 1.

    A named ``nn.Sequential`` (``conv``, ``bn``, ``relu``) so conv+BN folding and quantization fusion
    can find the pattern by name. ReLU is not in-place: memory is cheap next to a wrong export.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        relu: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )
        if relu:
            layers["relu"] = nn.ReLU()
        super().__init__(layers)


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise k×k conv-BN-ReLU then pointwise 1×1 conv-BN-ReLU (MobileNet v1, Xception).

    About k² fewer multiply-adds than a full conv with the same receptive field.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(
            OrderedDict(
                depthwise=ConvBNReLU(
                    in_channels, in_channels, kernel_size, stride, groups=in_channels, dilation=dilation
                ),
                pointwise=ConvBNReLU(in_channels, out_channels, kernel_size=1),
            )
        )


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018): global mean → 1×1 conv → ReLU → 1×1 conv → sigmoid → scale.

    The mean keeps its spatial axes (``keepdim=True``) so the multiply broadcasts at any H×W.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = x.mean(dim=(2, 3), keepdim=True)
        weights = torch.sigmoid(self.expand(self.relu(self.reduce(weights))))
        return x * weights


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018): 1×1 expand → 3×3 depthwise → linear 1×1 project, plus
    identity when the shape is unchanged.

    The projection has no ReLU (the paper's linear bottleneck: ReLU on a narrow map destroys
    information). ``dilation`` replaces a stride where a segmentation backbone keeps its resolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6, dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expansion != 1:
            layers["expand"] = ConvBNReLU(in_channels, hidden, kernel_size=1)
        layers["depthwise"] = ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, dilation=dilation)
        layers["project"] = ConvBNReLU(hidden, out_channels, kernel_size=1, relu=False)
        self.layers = nn.Sequential(layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_residual else out
