"""BiSeNet V2: the paper's two branches and GE layers, booster heads that exist only in training."""

from __future__ import annotations

import onnx
import pytest
import torch

from segedge.models.bisenetv2 import EXPANSION, BiSeNetV2, GatherExpansion
from segedge.models.registry import get_spec

SIZE = (64, 128)


@pytest.fixture
def model() -> BiSeNetV2:
    torch.manual_seed(0)
    return get_spec("bisenetv2").build(num_classes=10, width=0.25)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameters_at_width_one_match_the_reference_size() -> None:
    model = BiSeNetV2(num_classes=19)
    inference = count(model) - count(model.boosters)
    # ~3.4 M for the inference network (reference training code, 19 classes); boosters add ~0.29 M
    assert 3.3e6 < inference < 3.45e6
    assert 0.25e6 < count(model.boosters) < 0.32e6


def test_detail_branch_is_wide_at_one_eighth_and_semantic_branch_narrow_at_one_thirty_second() -> None:
    model = BiSeNetV2(num_classes=19).eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        detail = model.detail(x)
        semantic, (stem, s3, s4, s5) = model.semantic(x)
    assert detail.shape == (1, 128, SIZE[0] // 8, SIZE[1] // 8)
    assert [t.shape[1] for t in (stem, s3, s4, s5)] == [16, 32, 64, 128]
    assert [t.shape[-1] for t in (stem, s3, s4, s5)] == [SIZE[1] // s for s in (4, 8, 16, 32)]
    assert semantic.shape == s5.shape


def test_gather_expansion_expands_six_times_with_depthwise_convs() -> None:
    for stride, out_channels in ((1, 32), (2, 64)):  # stride-1 layers keep the width (identity shortcut)
        layer = GatherExpansion(32, out_channels, stride=stride)
        depthwise = [m for m in layer.body.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
        assert depthwise[0].in_channels == 32 and depthwise[0].out_channels == 32 * EXPANSION
        assert len(depthwise) == stride  # a second depthwise conv in the stride-2 layer
        assert layer(torch.randn(1, 32, 16, 16)).shape == (1, out_channels, 16 // stride, 16 // stride)


def test_boosters_run_only_in_training(model: BiSeNetV2) -> None:
    calls: list[int] = []
    for i, booster in enumerate(model.boosters):
        booster.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.no_grad():
        assert model(torch.randn(1, 3, *SIZE)).shape == (1, 10, *SIZE)
    assert calls == [], "booster heads must not run in eval mode"
    outputs = model.train()(torch.randn(2, 3, *SIZE))
    assert len(outputs) == 5 and all(o.shape == (2, 10, *SIZE) for o in outputs)
    assert calls == [0, 1, 2, 3]


def test_exported_graph_has_no_booster_weights_and_friendly_ops(zoo_export) -> None:
    exported = zoo_export("bisenetv2")
    model = exported.model
    graph = onnx.load(exported.path).graph
    ops = [node.op_type for node in graph.node]
    compute = {"Conv", "BatchNormalization", "Relu", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "AveragePool",
               "Resize", "ReduceMean"}
    shape_arithmetic = {"Shape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Div", "Reshape", "Cast"}
    assert set(ops) <= compute | shape_arithmetic, f"unexpected ops: {set(ops) - compute - shape_arithmetic}"
    booster_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.boosters.modules())
    assert ops.count("Conv") == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - booster_convs
    weights = sum(int(torch.tensor(i.dims).prod()) for i in graph.initializer if len(i.dims) == 4)
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    booster_weights = sum(m.weight.numel() for m in model.boosters.modules() if isinstance(m, torch.nn.Conv2d))
    assert weights == conv_weights - booster_weights
    assert ops.count("Sigmoid") == 2  # BGA's two gates
