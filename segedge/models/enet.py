"""ENet (Paszke et al. 2016): a tiny encoder-decoder for real-time segmentation, 0.36 M parameters.

Layout as the paper's Table 1 and its Torch reference (e-lab ENet-training): an initial block (13-channel
3×3 stride-2 conv concatenated with a 2×2 max pool of the image), residual bottlenecks with a 4× channel
reduction (projection → 3×3 / dilated / asymmetric 5×1+1×5 conv → expansion), downsampling bottlenecks
whose shortcut is a max pool zero-padded in channels, and an upsampling decoder that unpools with the
encoder's max-pool switches. PReLU in the encoder, ReLU in the decoder, spatial dropout 0.01 in stage 1 and
0.1 after (training only). Output stride 8, brought back by two unpooling bottlenecks and a 2×2
transposed conv ("fullconv").

The channel zero-padding is an ONNX Pad on the channel axis (sizes from the constructor, never from
shapes). The initial conv pads right and bottom only, so that torch.export can prove its output the max
pool's size at every H (with symmetric padding, nested divisibility guards make the export fail with named
dynamic Dims). All unpooling forms share one state_dict layout (see ``unpooling.py``) and give the same
outputs. ``enet`` (alias ``enet-trt``) unpools with the index-free first-maximum mask (``index_free``):
``ENet(unpool_mode="indexed")``, the paper's MaxPool indices + max_unpool2d, stays available, but its ONNX
(MaxPool's indices output + ScatterND) is rejected by TensorRT's parser and run by OpenVINO's CPU plugin as a
reference kernel, which made ``enet`` ~4× slower there than the whole rest of the network; onnxruntime runs
both forms at the same speed (``benchmarks/bench_enet_openvino.py``). ``depth_to_space`` is as fast in f32 and
keeps OpenVINO bf16's numbers identical to the indexed graph's, but was never faster than ``index_free`` in
bf16 here (bf16/f32 speed-up 1.13–1.54× against 1.29–1.65× over four loaded runs; equal on the quietest).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segedge.models.blocks import make_divisible
from segedge.models.unpooling import SwitchPool2d, SwitchUnpool2d, UnpoolMode
from segedge.models.registry import ModelSpec, register_model


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, **conv_kwargs) -> nn.Sequential:
    """Conv without bias, then BatchNorm (the activation differs between encoder and decoder)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **conv_kwargs)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


def activation(channels: int, decoder: bool) -> nn.Module:
    """PReLU in the encoder, ReLU in the decoder, as in the reference implementation."""
    return nn.ReLU() if decoder else nn.PReLU(channels)


def reduced(channels: int) -> int:
    """The bottleneck's internal width: a quarter of its output, kept a multiple of 4 (4 at width 1 in stage 5)."""
    return make_divisible(channels / 4, divisor=4, min_channels=4)


class InitialBlock(nn.Module):
    """Concat(3×3 stride-2 conv, 2×2 max pool of the input) → BN → PReLU: halves H and W cheaply."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels - 3, kernel_size=3, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad right and bottom only ("SAME" padding for stride 2): the conv's output size is then H//2 as
        # written, the max pool's exactly, so torch.export can prove the concat's sizes equal for every H
        convolved = self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.act(self.bn(torch.cat([convolved, F.max_pool2d(x, kernel_size=2, stride=2)], dim=1)))


class RegularBottleneck(nn.Module):
    """x + expand(conv(project(x))); ``kind`` picks the middle conv: ``regular`` 3×3, ``dilated`` 3×3 with
    ``dilation``, ``asymmetric`` 5×1 then 1×5."""

    def __init__(
        self, channels: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1, decoder: bool = False
    ) -> None:
        super().__init__()
        internal = reduced(channels)
        if kind == "asymmetric":
            middle: nn.Module = nn.Sequential(
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(internal, internal, (1, 5), padding=(0, 2), bias=False),
                nn.BatchNorm2d(internal),
            )
        else:
            middle = conv_bn(internal, internal, 3, padding=dilation, dilation=dilation)
        self.branch = nn.Sequential(
            conv_bn(channels, internal), activation(internal, decoder),
            middle, activation(internal, decoder),
            conv_bn(internal, channels), nn.Dropout2d(dropout),
        )
        self.act = activation(channels, decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class DownsamplingBottleneck(nn.Module):
    """Shortcut: 2×2 max pool (its switches kept for the decoder), zero-padded to ``out_channels``;
    branch: 2×2 stride-2 projection → 3×3 → 1×1 expansion. Returns ``(features, switches)``."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, unpool_mode: UnpoolMode) -> None:
        super().__init__()
        internal = reduced(out_channels)
        self.pool = SwitchPool2d(unpool_mode)
        self.pad_channels = out_channels - in_channels
        self.branch = nn.Sequential(
            conv_bn(in_channels, internal, 2, stride=2), nn.PReLU(internal),
            conv_bn(internal, internal, 3, padding=1), nn.PReLU(internal),
            conv_bn(internal, out_channels), nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, switches = self.pool(x)
        shortcut = F.pad(pooled, (0, 0, 0, 0, 0, self.pad_channels))  # zeros for the new channels
        return self.act(shortcut + self.branch(x)), switches


class UpsamplingBottleneck(nn.Module):
    """Shortcut: 1×1 conv to ``out_channels`` then max-unpool with the mirrored encoder's switches;
    branch: 1×1 projection → 3×3 stride-2 transposed conv → 1×1 expansion."""

    def __init__(self, in_channels: int, out_channels: int, unpool_mode: UnpoolMode) -> None:
        super().__init__()
        internal = reduced(out_channels)
        self.shortcut = conv_bn(in_channels, out_channels)
        self.unpool = SwitchUnpool2d(unpool_mode)
        self.branch = nn.Sequential(
            conv_bn(in_channels, internal), nn.ReLU(),
            nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(internal), nn.ReLU(),
            conv_bn(internal, out_channels),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, switches: torch.Tensor) -> torch.Tensor:
        return self.act(self.unpool(self.shortcut(x), switches) + self.branch(x))


def stage2_body(channels: int) -> list[nn.Module]:
    """Bottlenecks x.1 – x.8 of stages 2 and 3: dilations 2, 4, 8, 16 between regular and asymmetric ones."""
    return [
        RegularBottleneck(channels),
        RegularBottleneck(channels, "dilated", dilation=2),
        RegularBottleneck(channels, "asymmetric"),
        RegularBottleneck(channels, "dilated", dilation=4),
        RegularBottleneck(channels),
        RegularBottleneck(channels, "dilated", dilation=8),
        RegularBottleneck(channels, "asymmetric"),
        RegularBottleneck(channels, "dilated", dilation=16),
    ]


class ENet(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, unpool_mode: UnpoolMode = "indexed") -> None:
        super().__init__()
        c16, c64, c128 = (make_divisible(c, width) for c in (16, 64, 128))
        self.initial = InitialBlock(c16)  # 1/2
        self.down1 = DownsamplingBottleneck(c16, c64, dropout=0.01, unpool_mode=unpool_mode)  # 1/4
        self.stage1 = nn.Sequential(*(RegularBottleneck(c64, dropout=0.01) for _ in range(4)))
        self.down2 = DownsamplingBottleneck(c64, c128, dropout=0.1, unpool_mode=unpool_mode)  # 1/8
        self.stage2 = nn.Sequential(*stage2_body(c128))
        self.stage3 = nn.Sequential(*stage2_body(c128))
        self.up4 = UpsamplingBottleneck(c128, c64, unpool_mode)  # 1/4
        self.stage4 = nn.Sequential(*(RegularBottleneck(c64, dropout=0.0, decoder=True) for _ in range(2)))
        self.up5 = UpsamplingBottleneck(c64, c16, unpool_mode)  # 1/2
        self.stage5 = RegularBottleneck(c16, dropout=0.0, decoder=True)
        self.fullconv = nn.ConvTranspose2d(c16, num_classes, kernel_size=2, stride=2)  # 1/1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, switches1 = self.down1(self.initial(x))
        x, switches2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, switches2))
        x = self.stage5(self.up5(x, switches1))
        return self.fullconv(x)


def build_enet(num_classes: int, width: float = 1.0) -> ENet:
    return ENet(num_classes=num_classes, width=width, unpool_mode="index_free")


register_model(
    ModelSpec(
        name="enet",
        builder=build_enet,
        description=(
            "ENet (Paszke 2016): 0.36M-param real-time encoder-decoder; max-unpooling exported index-free "
            "(first-maximum mask, equal to max_unpool2d): no MaxPool indices, which OpenVINO's CPU plugin "
            "runs as a slow reference kernel and TensorRT's parser rejects"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=8,
        min_input_size=(32, 32),
        # enet-trt was the index-free variant while enet exported MaxPool indices; now the same graph, so a name
        # (scripts and checkpoints that say enet-trt keep working) rather than a second zoo entry
        aliases=("enet-trt",),
    )
)
