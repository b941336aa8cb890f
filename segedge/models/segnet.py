"""SegNet (Badrinarayanan et al. 2017): a VGG-16 encoder (13 conv-BN-ReLU, five 2×2 max pools) and a
mirrored decoder that upsamples with the encoder's max-pool switches instead of learned upsampling.

Layer plan as the paper's Caffe model (``segnet.prototxt``): decoder stages of 3, 3, 3, 2 and 1 convs
mirroring the encoder, the last conv of each stage narrowing to the next stage's width, and a 3×3
classifier conv; 29.4 M parameters at width 1 (paper: 29.5 M).

Two registered variants share one class and one state_dict layout (see ``unpooling.py``):

- ``segnet``: ``max_pool2d(return_indices=True)`` + ``max_unpool2d``, as in the paper. Exports (dynamo,
  ``Dim.AUTO`` or named Dims) to MaxPool-with-indices + ScatterND: onnxruntime runs it at any valid size;
  TensorRT's ONNX parser does not import MaxPool's indices output, hence ``tensorrt_parser_safe=False``.
- ``segnet-trt``: the same network with unpooling rebuilt from a mask of first-maximum positions; equal to
  ``segnet`` with the same weights, including on ties, and made only of ops TensorRT parses.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible
from segedge.models.unpooling import SwitchPool2d, SwitchUnpool2d, UnpoolMode
from segedge.models.registry import ModelSpec, register_model


def conv_stack(*channels: int) -> nn.Sequential:
    """3×3 conv-BN-ReLU layers through ``channels`` (``conv_stack(3, 64, 64)`` is two convs)."""
    return nn.Sequential(*(ConvBNReLU(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])))


class SegNet(nn.Module):
    """VGG-16 encoder, switch-unpooling decoder; ``unpool_mode`` picks indices or the index-free mask."""

    def __init__(self, num_classes: int, width: float = 1.0, unpool_mode: UnpoolMode = "indexed") -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (make_divisible(c, width) for c in (64, 128, 256, 512, 512))
        self.encoder = nn.ModuleList(
            [
                conv_stack(3, c1, c1),  # pooled to 1/2
                conv_stack(c1, c2, c2),  # 1/4
                conv_stack(c2, c3, c3, c3),  # 1/8
                conv_stack(c3, c4, c4, c4),  # 1/16
                conv_stack(c4, c5, c5, c5),  # 1/32
            ]
        )
        self.decoder = nn.ModuleList(  # deepest first; each starts by unpooling its mirror's switches
            [
                conv_stack(c5, c5, c5, c4),  # 1/16
                conv_stack(c4, c4, c4, c3),  # 1/8
                conv_stack(c3, c3, c3, c2),  # 1/4
                conv_stack(c2, c2, c1),  # 1/2
                conv_stack(c1, c1),  # 1/1
            ]
        )
        self.pool = SwitchPool2d(unpool_mode)
        self.unpool = SwitchUnpool2d(unpool_mode)
        self.classifier = nn.Conv2d(c1, num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        switches = []
        for stage in self.encoder:
            x, where = self.pool(stage(x))
            switches.append(where)
        for stage, where in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, where))
        return self.classifier(x)


def build_segnet(num_classes: int, width: float = 1.0) -> SegNet:
    return SegNet(num_classes=num_classes, width=width, unpool_mode="indexed")


def build_segnet_trt(num_classes: int, width: float = 1.0) -> SegNet:
    return SegNet(num_classes=num_classes, width=width, unpool_mode="index_free")


register_model(
    ModelSpec(
        name="segnet",
        builder=build_segnet,
        description=(
            "SegNet (Badrinarayanan 2017): VGG-16-BN encoder, decoder unpooling with max-pool indices; 29.4M "
            "params. Exports MaxPool with indices + ScatterND: onnxruntime only, TensorRT's parser does not "
            "take MaxPool's indices output (use segnet-trt, same weights)"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=32,
        min_input_size=(64, 64),
        tensorrt_parser_safe=False,
    )
)

register_model(
    ModelSpec(
        name="segnet-trt",
        builder=build_segnet_trt,
        description=(
            "SegNet with index-free unpooling (a first-maximum mask instead of indices): equal to segnet "
            "with the same weights, and TensorRT-parseable"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=32,
        min_input_size=(64, 64),
        aliases=("segnet-indexfree",),
    )
)
