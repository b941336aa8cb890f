"""BiSeNet v1: the paper's structure, training-only auxiliary heads, and an export-friendly graph."""

from __future__ import annotations


import onnx
import pytest
import torch

from segedge.models.bisenet import BiSeNetV1, ResNet18Features
from segedge.models.registry import get_spec

SIZE = (64, 128)


@pytest.fixture
def model() -> BiSeNetV1:
    torch.manual_seed(0)
    return get_spec("bisenet").build(num_classes=10, width=0.25)


def test_alias_finds_bisenet() -> None:
    assert get_spec("BiSeNetV1") is get_spec("bisenet")


def test_eval_returns_logits_without_running_auxiliary_heads(model: BiSeNetV1) -> None:
    calls: list[str] = []
    for name in ("aux16_head", "aux32_head"):
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *SIZE))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 10, *SIZE)
    assert calls == [], "auxiliary heads must not run in eval mode (they would end up in the exported graph)"


def test_training_returns_main_and_two_auxiliary_logits_at_input_size(model: BiSeNetV1) -> None:
    logits, aux16, aux32 = model.train()(torch.randn(2, 3, *SIZE))
    assert logits.shape == aux16.shape == aux32.shape == (2, 10, *SIZE)
    assert not torch.allclose(aux16, logits) and not torch.allclose(aux32, aux16)


def test_context_path_is_resnet18_at_width_one() -> None:
    backbone = ResNet18Features((64, 128, 256, 512))
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the ImageNet classifier
    assert sum(p.numel() for p in backbone.parameters()) == 11_176_512
    feat16, feat32 = backbone(torch.randn(1, 3, *SIZE))
    assert feat16.shape == (1, 256, SIZE[0] // 16, SIZE[1] // 16)
    assert feat32.shape == (1, 512, SIZE[0] // 32, SIZE[1] // 32)


def test_spatial_path_keeps_one_eighth_resolution_with_128_channels() -> None:
    spatial = BiSeNetV1(num_classes=19).spatial_path(torch.randn(1, 3, *SIZE))
    assert spatial.shape == (1, 128, SIZE[0] // 8, SIZE[1] // 8)


def test_width_scales_every_channel_count() -> None:
    assert BiSeNetV1(num_classes=19, width=0.5).spatial_path(torch.randn(1, 3, *SIZE)).shape[1] == 64
    convs = [m for m in BiSeNetV1(num_classes=19, width=0.25).modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 128  # 512 at width 1


def test_exported_graph_has_only_int8_and_tensorrt_friendly_ops(zoo_export) -> None:
    """Conv (BN folded in), ReLU, sigmoid attention, resize and global means, plus the integer shape
    arithmetic that sizes each Resize from the input (Shape → Div → Reshape/Concat)."""
    exported = zoo_export("bisenet")  # dynamic H/W, shared with the contract tests
    path, model = exported.path, exported.model
    ops = [node.op_type for node in onnx.load(path).graph.node]
    compute = {
        "Conv", "BatchNormalization", "Relu", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "ReduceMean"
    }
    shape_arithmetic = {"Shape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Div", "Reshape", "Cast"}
    assert set(ops) <= compute | shape_arithmetic, f"unexpected ops: {set(ops) - compute - shape_arithmetic}"
    aux_convs = sum(isinstance(m, torch.nn.Conv2d) for h in (model.aux16_head, model.aux32_head) for m in h.modules())
    assert ops.count("Conv") == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - aux_convs
    assert ops.count("Resize") == 3  # 1/32 → 1/16 → 1/8 in the context path, logits → input size
