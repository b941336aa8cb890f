"""ENet: the paper's size and layout, and the index-free variant equal to the indexed one."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from segedge.models.enet import ENet, RegularBottleneck
from segedge.models.registry import get_spec

SIZE = (32, 64)


def test_parameter_count_matches_the_paper() -> None:
    params = sum(p.numel() for p in ENet(num_classes=19).parameters())
    assert 0.34e6 < params < 0.38e6, params  # paper: 0.37 M


def test_encoder_reaches_one_eighth_with_128_channels_and_decoder_comes_back() -> None:
    model = ENet(num_classes=7).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("initial", "stage1", "stage3", "stage4", "stage5"):
        getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: shapes.update({name: out.shape[1:]}))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *SIZE))
    h, w = SIZE
    assert shapes == {
        "initial": (16, h // 2, w // 2), "stage1": (64, h // 4, w // 4), "stage3": (128, h // 8, w // 8),
        "stage4": (64, h // 4, w // 4), "stage5": (16, h // 2, w // 2),
    }
    assert logits.shape == (1, 7, h, w)


def test_stages_two_and_three_use_dilations_2_4_8_16_and_asymmetric_5x1_1x5_convs() -> None:
    model = ENet(num_classes=19)
    for stage in (model.stage2, model.stage3):
        dilations = [m.dilation[0] for block in stage for m in block.branch[2].modules()
                     if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1]
        assert dilations == [2, 4, 8, 16]
        kernels = [m.kernel_size for m in stage.modules() if isinstance(m, torch.nn.Conv2d) and 5 in m.kernel_size]
        assert kernels == [(5, 1), (1, 5)] * 2
    assert all(isinstance(block, RegularBottleneck) for block in model.stage2)


def test_encoder_uses_prelu_and_decoder_relu() -> None:
    model = ENet(num_classes=19)
    assert not any(isinstance(m, torch.nn.ReLU) for m in [*model.stage1.modules(), *model.stage3.modules()])
    assert not any(isinstance(m, torch.nn.PReLU) for m in [*model.stage4.modules(), *model.up5.modules()])


def test_enet_trt_is_numerically_equal_to_enet_with_the_same_weights() -> None:
    torch.manual_seed(0)
    indexed = get_spec("enet").build(num_classes=5, width=0.5)
    index_free = get_spec("enet-trt").build(num_classes=5, width=0.5)
    index_free.load_state_dict(indexed.state_dict())
    images = torch.randn(2, 3, *SIZE)
    blocky = torch.nn.functional.interpolate(images[:, :, ::4, ::4].round(), size=SIZE, mode="nearest")  # ties
    with torch.no_grad():
        for x in (images, blocky):
            assert torch.equal(indexed(x), index_free(x))


def test_enet_trt_exports_without_scatter_or_pooling_indices(tmp_path: Path) -> None:
    model = get_spec("enet-trt").build(num_classes=5, width=0.25)
    path = tmp_path / "enet-trt.onnx"
    dims = {2: torch.export.Dim("height", min=32, max=4096), 3: torch.export.Dim("width", min=32, max=4096)}
    torch.onnx.export(
        model, (torch.randn(1, 3, *SIZE),), path, input_names=["input"], output_names=["logits"],
        opset_version=18, dynamo=True, dynamic_shapes=(dims,),
    )
    nodes = onnx.load(path).graph.node
    ops = {n.op_type for n in nodes}
    assert ops.isdisjoint({"ScatterND", "ScatterElements", "MaxUnpool"})
    assert all(len(n.output) == 1 for n in nodes if n.op_type == "MaxPool")
    assert {"PRelu", "ConvTranspose", "Pad"} <= ops  # PReLU kept, fullconv, zero-padded channel shortcut
