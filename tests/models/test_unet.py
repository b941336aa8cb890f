"""U-Net: the seed's channel plan, logits in both modes, and a graph with no alignment arithmetic."""

from __future__ import annotations


import onnx
import pytest
import torch

from segedge.core.errors import InputSizeError
from segedge.models.unet import UNet
from segedge.models.registry import get_spec

SIZE = (64, 96)


def test_channels_double_from_64_to_1024_at_width_one() -> None:
    model = UNet(num_classes=19)
    assert model.inc[0].conv.out_channels == 64
    assert model.down4[1][1].conv.out_channels == 1024
    assert model.classifier.out_channels == 19


@pytest.mark.parametrize("width", [0.3, 0.75])
def test_widths_that_round_unevenly_still_line_up_the_skips(width: float) -> None:
    model = UNet(num_classes=3, width=width).eval()
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(c.out_channels % 8 == 0 for c in convs if c is not model.classifier)
    with torch.no_grad():
        assert model(torch.randn(1, 3, *SIZE)).shape == (1, 3, *SIZE)


def test_train_and_eval_both_return_logits() -> None:
    model = get_spec("unet").build(num_classes=4, width=0.25)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        assert model(x).shape == (2, 4, *SIZE)
    assert model.train()(x).shape == (2, 4, *SIZE)


def test_sizes_off_the_stride_are_refused_with_the_nearest_valid_ones() -> None:
    with pytest.raises(InputSizeError, match="250 is not a multiple of 16 .nearest valid: 240 or 256."):
        get_spec("unet").check_input_size(250, 512)


def test_exported_graph_has_no_padding_or_shape_arithmetic(zoo_export) -> None:
    """Sizes are validated to be multiples of 16, so the seed's F.pad alignment is gone: the graph is
    convs, pools, transposed convs and concats, nothing that computes on shapes."""
    path = zoo_export("unet").path  # dynamic H/W, shared with the contract tests
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert ops <= {"Conv", "BatchNormalization", "Relu", "MaxPool", "ConvTranspose", "Concat"}, ops
