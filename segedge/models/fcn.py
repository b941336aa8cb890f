"""FCN-32s / 16s / 8s (Long et al. 2015): VGG-16 made fully convolutional, scored at 1/32 and upsampled by
learnable transposed convolutions, with skip fusion by addition from pool4 (16s) and pool4 + pool3 (8s).

Departures from the paper, each for the deployment chain:

- No 100-pixel input padding and no crop layers. The paper pads so that fc6's 7×7 *valid* conv fits any
  image, then crops the upsampled scores with offsets computed from sizes; the crop is shape arithmetic
  that an exported graph would carry as constants. Here fc6 is a *same*-padded 7×7 conv (padding 3), so
  every map stays at exactly H/2^k, and each transposed conv (kernel 2s, stride s, padding s/2) returns
  exactly s× its input: the logits are N×C×H×W with no crop, for any H, W that are multiples of 32.
- BatchNorm after every conv (VGG-16-BN): the zoo trains from scratch, and plain VGG-16 does not train
  well from scratch; BN folds into the convs at export. fc6/fc7 keep the paper's dropout 0.5 (training only).
- Every upsampling layer is bilinear-initialised and learnable (the paper froze the final one); the score
  layers keep PyTorch's default init rather than the paper's zeros, which only made sense when fine-tuning
  FCN-16s from a trained FCN-32s.

Parameters at width 1 (19 classes): 135.8 M (FCN-32s), 134.7 M (16s), 134.5 M (8s); the paper's 134 M
for FCN-VGG16 leaves out the final upsampling kernel (19×19×64×64 = 1.5 M in FCN-32s, frozen there).
~119 M of them sit in fc6/fc7.
``fcn8s-lite`` is the edge variant: fc6/fc7 become a 3×3 and a 1×1 conv with 1024 channels (the reduced
fc6/fc7 of DeepLab-LargeFOV and SSD), 20.6 M parameters and about a quarter fewer multiply-adds at
512×1024, with the same VGG-16 encoder and FCN-8s fusion.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible
from segedge.models.registry import ModelSpec, register_model


def bilinear_kernel(size: int) -> torch.Tensor:
    """The size×size bilinear interpolation kernel that FCN initialises its transposed convs with."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return ramp[:, None] * ramp[None, :]


class BilinearUpsample(nn.ConvTranspose2d):
    """Learnable ``stride``× upsampling of class scores: kernel 2·stride, padding stride/2, so the output
    is exactly ``stride`` times the input; initialised to per-class bilinear interpolation."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__(channels, channels, kernel_size=2 * stride, stride=stride, padding=stride // 2, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            kernel = bilinear_kernel(2 * stride)
            for c in range(channels):
                self.weight[c, c] = kernel


class VGG16Features(nn.Module):
    """VGG-16's 13 convs (with BN) in five blocks, each ending in a 2×2 max pool; returns pool3, pool4, pool5."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4 = (make_divisible(c, width) for c in (64, 128, 256, 512))
        plan = [(c1, 2), (c2, 2), (c3, 3), (c4, 3), (c4, 3)]
        blocks, in_channels = [], 3
        for out_channels, convs in plan:
            layers = [ConvBNReLU(in_channels if i == 0 else out_channels, out_channels) for i in range(convs)]
            blocks.append(nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=2)))
            in_channels = out_channels
        self.block1, self.block2, self.block3, self.block4, self.block5 = blocks
        self.out_channels = (c3, c4, c4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool3 = self.block3(self.block2(self.block1(x)))  # 1/8
        pool4 = self.block4(pool3)  # 1/16
        return pool3, pool4, self.block5(pool4)  # pool5: 1/32


class FCN(nn.Module):
    """FCN with ``output_stride`` 32 (no skips), 16 (+ pool4) or 8 (+ pool4 + pool3).

    ``fc_channels``/``fc6_kernel`` set the convolutionalised classifier: 4096 and 7 in the paper.
    """

    def __init__(
        self, num_classes: int, width: float = 1.0, output_stride: int = 8, fc_channels: int = 4096, fc6_kernel: int = 7
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"FCN output_stride must be 8, 16 or 32, got {output_stride}")
        self.backbone = VGG16Features(width)
        c_pool3, c_pool4, c_pool5 = self.backbone.out_channels
        c_fc = make_divisible(fc_channels, width)
        self.fc = nn.Sequential(  # fc6, fc7 as convolutions, at 1/32
            ConvBNReLU(c_pool5, c_fc, kernel_size=fc6_kernel), nn.Dropout(0.5),
            ConvBNReLU(c_fc, c_fc, kernel_size=1), nn.Dropout(0.5),
        )
        self.score_fr = nn.Conv2d(c_fc, num_classes, kernel_size=1)
        self.score_pool4 = nn.Conv2d(c_pool4, num_classes, kernel_size=1) if output_stride <= 16 else None
        self.score_pool3 = nn.Conv2d(c_pool3, num_classes, kernel_size=1) if output_stride == 8 else None
        self.upscore2 = BilinearUpsample(num_classes, 2) if output_stride <= 16 else None  # 1/32 → 1/16
        self.upscore_pool4 = BilinearUpsample(num_classes, 2) if output_stride == 8 else None  # 1/16 → 1/8
        self.upscore_final = BilinearUpsample(num_classes, output_stride)  # → 1/1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3, pool4, pool5 = self.backbone(x)
        score = self.score_fr(self.fc(pool5))  # 1/32
        if self.score_pool4 is not None:
            score = self.upscore2(score) + self.score_pool4(pool4)  # 1/16
        if self.score_pool3 is not None:
            score = self.upscore_pool4(score) + self.score_pool3(pool3)  # 1/8
        return self.upscore_final(score)


def build_fcn32s(num_classes: int, width: float = 1.0) -> FCN:
    return FCN(num_classes, width, output_stride=32)


def build_fcn16s(num_classes: int, width: float = 1.0) -> FCN:
    return FCN(num_classes, width, output_stride=16)


def build_fcn8s(num_classes: int, width: float = 1.0) -> FCN:
    return FCN(num_classes, width, output_stride=8)


def build_fcn8s_lite(num_classes: int, width: float = 1.0) -> FCN:
    return FCN(num_classes, width, output_stride=8, fc_channels=1024, fc6_kernel=3)


for _name, _builder, _what in (
    ("fcn32s", build_fcn32s, "scores at 1/32, one 32× learnable upsampling; 136M params"),
    ("fcn16s", build_fcn16s, "1/32 scores fused with pool4's, 16× upsampling; 135M params"),
    ("fcn8s", build_fcn8s, "1/32 scores fused with pool4's and pool3's, 8× upsampling; 134M params"),
    ("fcn8s-lite", build_fcn8s_lite, "FCN-8s with fc6/fc7 reduced to 3×3/1×1 convs of 1024 channels; 20.6M params"),
):
    register_model(
        ModelSpec(
            name=_name,
            builder=_builder,
            description=f"FCN (Long 2015), VGG-16-BN backbone: {_what}",
            default_input_size=(512, 1024),
            num_classes=19,
            output_stride=32,
            min_input_size=(64, 64),
        )
    )
