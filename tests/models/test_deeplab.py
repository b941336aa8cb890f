"""DeepLab v1–v3+: each version's defining structure (LargeFOV's dilated fc6, v2's summed atrous classifiers,
v3's five-branch ASPP, v3+'s low-level decoder), the size at width 1.0, and an export-friendly v3+ graph."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
import torch.nn as nn

from segedge.models.backbones import MobileNetV2, ResNet, XceptionLite
from segedge.models.blocks import DepthwiseSeparableConv
from segedge.models.deeplab import ASPP, DeepLabV2, DeepLabV3Plus, VGG16LargeFOV
from segedge.models.registry import get_spec

SIZE = (64, 128)


def params_at_width_one(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in get_spec(name).build(width=1.0).parameters())


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("deeplabv1", 20.4e6, 20.6e6),  # the paper's DeepLab-LargeFOV: 20.5 M
        ("deeplabv2", 24.8e6, 25.0e6),  # ResNet-50 (23.5 M) + four 2048→19 3×3 classifiers (1.4 M)
        ("deeplabv3", 38.9e6, 39.2e6),  # torchvision deeplabv3_resnet50 less its aux head and extra 3×3 conv
        ("deeplabv3plus", 2.6e6, 2.9e6),  # MobileNetV2 features (1.8 M) + separable ASPP and decoder
        ("deeplabv3plus-resnet", 40.2e6, 40.5e6),
        ("deeplabv3plus-xception", 27.9e6, 28.3e6),
    ],
)
def test_parameter_count_at_width_one(name: str, low: float, high: float) -> None:
    assert low < params_at_width_one(name) < high


def test_v1_is_vgg16_largefov_at_stride_8() -> None:
    net = VGG16LargeFOV(num_classes=19, width=1.0)
    fc6 = net.classifier.fc6.conv
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    convs = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and [c.dilation[0] for c in convs[-3:]] == [2, 2, 2]
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]  # pool4 and pool5 keep the 1/8 resolution


def test_v2_sums_four_atrous_classifiers() -> None:
    net = DeepLabV2(num_classes=10, width=0.25).eval()
    assert [b.dilation[0] for b in net.aspp.branches] == [6, 12, 18, 24]
    features = torch.randn(1, net.backbone.out_channels, 8, 16)
    with torch.no_grad():
        assert torch.allclose(net.aspp(features), sum(branch(features) for branch in net.aspp.branches), atol=1e-5)
    assert get_spec("deeplabv2").output_stride == 8 and get_spec("deeplabv2").min_train_batch == 1


def test_v3_aspp_concatenates_five_branches_including_image_pooling() -> None:
    aspp = ASPP(in_channels=64, out_channels=32).eval()
    assert [b.conv.dilation[0] for b in aspp.branches] == [1, 6, 12, 18]
    assert aspp.project.conv.in_channels == 5 * 32
    x = torch.randn(1, 64, 8, 16)
    with torch.no_grad():
        pooled = aspp.image_pooling(x.mean(dim=(2, 3), keepdim=True))
    assert pooled.shape == (1, 32, 1, 1)
    spec = get_spec("deeplabv3")
    assert spec.output_stride == 16 and spec.min_train_batch >= 2, "BN after global pooling needs two samples"


@pytest.mark.parametrize(
    ("name", "backbone", "separable"),
    [("deeplabv3plus", MobileNetV2, True), ("deeplabv3plus-resnet", ResNet, False), ("deeplabv3plus-xception", XceptionLite, True)],
)
def test_v3plus_decoder_fuses_the_quarter_resolution_feature(name: str, backbone: type, separable: bool) -> None:
    net = get_spec(name).build(num_classes=10, width=1.0)
    assert isinstance(net, DeepLabV3Plus) and isinstance(net.backbone, backbone)
    assert net.reduce_low_level.conv.out_channels == 48
    first_decoder_conv = next(m for m in net.decoder.modules() if isinstance(m, nn.Conv2d))
    assert first_decoder_conv.in_channels == 256 + 48  # the upsampled ASPP output and the reduced 1/4 feature
    assert all(isinstance(m, DepthwiseSeparableConv) == separable for m in [*net.decoder, *net.aspp.branches[1:]])
    seen: dict[str, tuple[int, ...]] = {}
    net.reduce_low_level.register_forward_hook(lambda _m, inputs, _o: seen.update(low=tuple(inputs[0].shape[-2:])))
    with torch.no_grad():
        logits = net(torch.randn(1, 3, *SIZE))
    assert seen["low"] == (SIZE[0] // 4, SIZE[1] // 4) and logits.shape == (1, 10, *SIZE)


def test_default_v3plus_is_the_mobilenetv2_one_under_its_aliases() -> None:
    assert get_spec("deeplabv3plus-mobilenetv2") is get_spec("deeplabv3plus") is get_spec("DeepLabV3+")


def test_exported_v3plus_graph_has_only_int8_and_tensorrt_friendly_ops(zoo_export) -> None:
    exported = zoo_export("deeplabv3plus")
    net = exported.model
    ops = Counter(node.op_type for node in onnx.load(exported.path).graph.node)
    compute = {"Conv", "BatchNormalization", "Relu", "Add", "Concat", "Resize", "ReduceMean"}
    shape_arithmetic = {"Shape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Div", "Reshape", "Cast"}
    assert set(ops) <= compute | shape_arithmetic, f"unexpected ops: {set(ops) - compute - shape_arithmetic}"
    assert ops["ReduceMean"] == 1  # the image-pooling branch, as a mean: no AveragePool with a baked kernel
    assert ops["Resize"] == 3  # image pooling → 1/16, encoder → 1/4, logits → input
    assert ops["Conv"] == sum(isinstance(m, nn.Conv2d) for m in net.modules())
