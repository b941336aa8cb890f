"""DDRNet-23-slim (Hong et al. 2021): two parallel branches, a high-resolution one kept at 1/8 and a
low-resolution one going down to 1/64, exchanging information by bilateral fusion, with the deep
aggregation pyramid pooling module (DAPPM) for context.

Layout follows the paper (Table 1, 23-slim: base width 32, two blocks per stage) and its reference
code: shared stem to 1/8; after stages 3 and 4 a bilateral fusion (high→low: strided 3×3 conv(s)+BN;
low→high: 1×1 conv+BN then bilinear upsample; both added); a bottleneck on each branch at the end;
DAPPM on the 1/64 features (average pools of kernel 5/9/17 at strides 2/4/8 plus a global mean, each
result added to the previous scale before its 3×3 conv: hierarchical residual fusion), upsampled and
added to the high branch; seg head at 1/8. As in the reference code, residual blocks that end a stage
leave out their final ReLU; the consumer applies it, so the fusion sums see pre-activation features.

The auxiliary head (on the high branch after the first fusion) runs only in training. The global
pool is a mean (BatchNorm then sees a 1×1 map: training batches need ≥ 2 images); the fixed-kernel
average pools are size-agnostic, so the graph stays correct at any H/W multiple of 64.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model


class ResidualBlock(nn.Module):
    """ResNet basic block (two 3×3) or bottleneck (1×1, 3×3, 1×1 ×2 channels); ``final_relu=False``
    ends the stage on the pre-activation sum, as DDRNet's fusions expect."""

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, bottleneck: bool = False, final_relu: bool = True
    ) -> None:
        super().__init__()
        if bottleneck:
            out_channels = 2 * channels
            self.body = nn.Sequential(
                ConvBNReLU(in_channels, channels, kernel_size=1),
                ConvBNReLU(channels, channels, stride=stride),
                ConvBNReLU(channels, out_channels, kernel_size=1, relu=False),
            )
        else:
            out_channels = channels
            self.body = nn.Sequential(
                ConvBNReLU(in_channels, channels, stride=stride), ConvBNReLU(channels, channels, relu=False)
            )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNReLU(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)
        self.relu: nn.Module = nn.ReLU() if final_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def stage(in_channels: int, channels: int, blocks: int, stride: int = 1, bottleneck: bool = False) -> nn.Sequential:
    """``blocks`` residual blocks, the first one strided; the last leaves out its ReLU."""
    out_channels = 2 * channels if bottleneck else channels
    return nn.Sequential(
        *(
            ResidualBlock(in_channels if i == 0 else out_channels, channels, stride if i == 0 else 1, bottleneck,
                          final_relu=i < blocks - 1)
            for i in range(blocks)
        )
    )


class PreActConv(nn.Sequential):
    """BN → ReLU → conv, the order DAPPM and the seg head use (their inputs are pre-activation sums)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        )


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: the 1/64 map, its average pools (k 5/9/17, s 2/4/8) and its
    global mean, each projected by a 1×1 conv; every pooled scale is upsampled, added to the previous
    scale's output and refined by a 3×3 conv; all five concatenated, compressed, plus a 1×1 shortcut."""

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.AvgPool2d(k, stride=s, padding=s) for k, s in ((5, 2), (9, 4), (17, 8)))
        self.projections = nn.ModuleList(PreActConv(in_channels, branch_channels) for _ in range(5))
        self.refines = nn.ModuleList(PreActConv(branch_channels, branch_channels, kernel_size=3) for _ in range(4))
        self.compression = PreActConv(5 * branch_channels, out_channels)
        self.shortcut = PreActConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [pool(x) for pool in self.pools] + [x.mean(dim=(2, 3), keepdim=True)]
        scales = [self.projections[0](x)]
        for projection, refine, feature in zip(self.projections[1:], self.refines, pooled):
            scales.append(refine(resize_to(projection(feature), x) + scales[-1]))
        return self.compression(torch.cat(scales, dim=1)) + self.shortcut(x)


class SegmentationHead(nn.Sequential):
    """BN → ReLU → 3×3 conv → BN → ReLU → 1×1 classifier (upsampling happens in the model's forward)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__(
            PreActConv(in_channels, mid_channels, kernel_size=3), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, num_classes, kernel_size=1),
        )


class DDRNet(nn.Module):
    """DDRNet-23-slim; ``forward`` returns logits in eval mode, ``(logits, aux)`` in training."""

    def __init__(self, num_classes: int, width: float = 1.0, base: int = 32, blocks: int = 2) -> None:
        super().__init__()
        c1, c2, c4, c8 = (make_divisible(base * m, width) for m in (1, 2, 4, 8))  # 32, 64, 128, 256 at 23-slim
        head_channels, dappm_channels = make_divisible(64, width), make_divisible(128, width)
        self.relu = nn.ReLU()
        self.stem = nn.Sequential(ConvBNReLU(3, c1, stride=2), ConvBNReLU(c1, c1, stride=2))  # 1/4
        self.layer1 = stage(c1, c1, blocks)  # 1/4
        self.layer2 = stage(c1, c2, blocks, stride=2)  # 1/8, shared by both branches
        self.low3, self.high3 = stage(c2, c4, blocks, stride=2), stage(c2, c2, blocks)  # 1/16 | 1/8
        self.low4, self.high4 = stage(c4, c8, blocks, stride=2), stage(c2, c2, blocks)  # 1/32 | 1/8
        self.high_to_low3 = ConvBNReLU(c2, c4, stride=2, relu=False)
        self.low_to_high3 = ConvBNReLU(c4, c2, kernel_size=1, relu=False)
        self.high_to_low4 = nn.Sequential(ConvBNReLU(c2, c4, stride=2), ConvBNReLU(c4, c8, stride=2, relu=False))
        self.low_to_high4 = ConvBNReLU(c8, c2, kernel_size=1, relu=False)
        self.low5 = stage(c8, c8, 1, stride=2, bottleneck=True)  # 1/64, 2·c8 channels
        self.high5 = stage(c2, c2, 1, bottleneck=True)  # 1/8, 2·c2 channels
        self.dappm = DAPPM(2 * c8, dappm_channels, 2 * c2)
        self.head = SegmentationHead(2 * c2, head_channels, num_classes)
        self.aux_head = SegmentationHead(c2, head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        shared = self.layer2(self.relu(self.layer1(self.stem(x))))  # 1/8
        # stage 3 and its bilateral fusion (both directions read the pre-fusion features)
        low, high = self.low3(self.relu(shared)), self.high3(self.relu(shared))
        low, high = (low + self.high_to_low3(self.relu(high)),
                     high + resize_to(self.low_to_high3(self.relu(low)), high))
        high_after_fusion3 = high
        # stage 4 and its bilateral fusion
        low, high = self.low4(self.relu(low)), self.high4(self.relu(high))
        low, high = (low + self.high_to_low4(self.relu(high)),
                     high + resize_to(self.low_to_high4(self.relu(low)), high))
        # stage 5: bottlenecks, DAPPM context from 1/64 added to the 1/8 branch
        context = resize_to(self.dappm(self.low5(self.relu(low))), high)
        logits = resize_to(self.head(self.high5(self.relu(high)) + context), x)
        if not self.training:
            return logits
        return logits, resize_to(self.aux_head(high_after_fusion3), x)


def build_ddrnet23slim(num_classes: int, width: float = 1.0) -> DDRNet:
    return DDRNet(num_classes=num_classes, width=width)


register_model(
    ModelSpec(
        name="ddrnet23slim",
        builder=build_ddrnet23slim,
        description=(
            "DDRNet-23-slim (Hong 2021): dual-resolution branches (1/8 and down to 1/64) with bilateral "
            "fusion, DAPPM context; aux head in training only; real-time"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=64,  # the low branch reaches 1/64 (the head itself predicts at 1/8)
        min_input_size=(64, 64),
        aliases=("ddrnet",),
    )
)
