"""FCN-32s/16s/8s: skip fusion from the paper's pools, exact-size bilinear-initialised upsampling, and a
graph of only Conv, ConvTranspose, MaxPool, ReLU and Add."""

from __future__ import annotations


import onnx
import pytest
import torch
import torch.nn.functional as F

from segedge.models.fcn import FCN, BilinearUpsample
from segedge.models.registry import get_spec

SIZE = (64, 96)


@pytest.mark.parametrize("stride", [2, 8, 16, 32])
def test_upsampling_is_exactly_stride_times_and_starts_as_bilinear_interpolation(stride: int) -> None:
    scores = torch.randn(1, 3, 6, 7)
    up = BilinearUpsample(3, stride)
    with torch.no_grad():
        out = up(scores)
    assert out.shape == (1, 3, 6 * stride, 7 * stride)
    expected = F.interpolate(scores, scale_factor=stride, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(stride, -stride), slice(stride, -stride))  # borders see zero padding
    torch.testing.assert_close(out[inner], expected[inner])
    assert up.weight.requires_grad


@pytest.mark.parametrize(
    ("name", "skips"),
    [("fcn32s", set()), ("fcn16s", {"score_pool4"}), ("fcn8s", {"score_pool4", "score_pool3"}),
     ("fcn8s-lite", {"score_pool4", "score_pool3"})],
)
def test_skip_fusion_reads_pool4_and_pool3_as_in_the_paper(name: str, skips: set[str]) -> None:
    model = get_spec(name).build(num_classes=5, width=0.25)
    seen: dict[str, tuple[int, int]] = {}
    for layer in ("score_pool4", "score_pool3"):
        module = getattr(model, layer)
        assert (module is not None) == (layer in skips)
        if module is not None:
            module.register_forward_hook(lambda _m, inputs, _o, layer=layer: seen.update({layer: inputs[0].shape[-2:]}))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *SIZE))
    assert logits.shape == (1, 5, *SIZE)
    h, w = SIZE
    expected = {"score_pool4": (h // 16, w // 16), "score_pool3": (h // 8, w // 8)}
    assert seen == {k: expected[k] for k in skips}
    if "score_pool3" in skips:  # the pool3 branch reaches the output
        with torch.no_grad():
            model.score_pool3.bias.add_(1.0)
            assert not torch.allclose(model(torch.randn(1, 3, *SIZE)), logits)


def test_parameter_counts_at_width_one_match_the_paper_and_lite_is_small() -> None:
    def count(**kwargs) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in FCN(num_classes=21, **kwargs).parameters())

    assert 134e6 < count(output_stride=8) < 135e6  # paper: 134 M (FCN-VGG16, PASCAL's 21 classes)
    assert count(output_stride=32) > count(output_stride=16) > count(output_stride=8)  # bigger final kernels
    assert count(output_stride=8, fc_channels=1024, fc6_kernel=3) < 21e6


def test_fc6_is_a_same_padded_7x7_conv_keeping_one_thirty_second() -> None:
    model = FCN(num_classes=5, width=0.25, output_stride=32).eval()
    fc6 = model.fc[0].conv
    assert fc6.kernel_size == (7, 7) and fc6.padding == (3, 3) and fc6.out_channels == 1024  # 4096 at width 1
    with torch.no_grad():
        assert model.fc(model.backbone(torch.randn(1, 3, 96, 160))[2]).shape[-2:] == (3, 5)


def test_exported_graph_is_plain_convolutions_without_any_crop(zoo_export) -> None:
    path = zoo_export("fcn8s").path  # dynamic H/W, shared with the contract tests
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert set(ops) == {"Conv", "ConvTranspose", "MaxPool", "Relu", "Add"}  # no Slice/Shape: nothing cropped
    assert ops.count("ConvTranspose") == 3 and ops.count("Add") == 2
