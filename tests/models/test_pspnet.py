"""PSPNet: the pyramid pooling module's bins, the sizes it refuses, the training-only auxiliary head, and an
exported graph whose bin pooling follows H and W (no AveragePool kernel baked in at the export size)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from segedge.core.errors import InputSizeError
from segedge.models.pspnet import PSPNet, bin_average
from segedge.models.registry import get_spec

SIZE = (48, 96)


@pytest.fixture
def model() -> PSPNet:
    torch.manual_seed(0)
    return get_spec("pspnet").build(num_classes=10, width=0.25)


@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_bin_average_is_adaptive_average_pooling_where_bins_divide(bins: int) -> None:
    x = torch.randn(2, 4, 12, 18)
    assert torch.allclose(bin_average(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-6)


def test_sizes_must_be_multiples_of_48_so_every_bin_tiles_the_stride_8_map() -> None:
    spec = get_spec("pspnet")
    assert spec.size_multiple == 48 and spec.output_stride == 8
    spec.check_input_size(*spec.default_input_size)
    with pytest.raises(InputSizeError, match="nearest valid: 480 or 528"):
        spec.check_input_size(512, 1024)


def test_pyramid_has_bins_1_2_3_6_each_a_quarter_of_the_channels_wide() -> None:
    with torch.device("meta"):
        net = PSPNet(num_classes=19, width=1.0)
        params = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("aux_head"))
    assert net.ppm.bins == (1, 2, 3, 6)
    assert [b.conv.out_channels for b in net.ppm.branches] == [512] * 4
    assert net.head[0].conv.in_channels == 2048 + 4 * 512
    # ResNet-50 (23.5 M) + PPM (4.2 M) + 3×3 fusion conv (18.9 M): mmseg's pspnet_r50-d8 is ~49 M with its
    # 2.4 M auxiliary head and deeper (3×3 ×3) stem
    assert 46.4e6 < params < 46.8e6


def test_backbone_is_dilated_to_stride_8(model: PSPNet) -> None:
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, *SIZE))
    assert features.high_level.shape[-2:] == features.stage3.shape[-2:] == (SIZE[0] // 8, SIZE[1] // 8)
    assert model.backbone.layer4[-1].conv2.conv.dilation == (4, 4)


def test_auxiliary_head_on_stage3_runs_in_training_only(model: PSPNet) -> None:
    calls: list[str] = []
    model.aux_head.register_forward_hook(lambda *_: calls.append("aux"))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *SIZE))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 10, *SIZE) and calls == []
    logits, aux = model.train()(torch.randn(2, 3, *SIZE))
    assert logits.shape == aux.shape == (2, 10, *SIZE) and calls == ["aux"]
    assert model.aux_head[0].conv.in_channels == model.backbone.stage3_channels


def test_exported_pyramid_pooling_follows_the_input_size(tmp_path: Path) -> None:
    """ResNet-18 keeps the export quick; the pooling graph is the same as with ResNet-50."""
    torch.manual_seed(0)
    net = PSPNet(num_classes=10, width=0.25, depth=18).eval()
    path = tmp_path / "pspnet.onnx"
    dims = {2: torch.export.Dim("height", min=48, max=4096), 3: torch.export.Dim("width", min=48, max=4096)}
    torch.onnx.export(
        net, (torch.randn(1, 3, *SIZE),), path, input_names=["input"], output_names=["logits"],
        opset_version=18, dynamo=True, dynamic_shapes=(dims,), verbose=False,
    )
    graph = onnx.load(path).graph
    ops = Counter(node.op_type for node in graph.node)
    assert not {"AveragePool", "GlobalAveragePool", "Gather"} & set(ops), "bin pooling must not bake in a kernel"
    assert ops["ReduceMean"] == 4  # one mean per bin: over H, W (bin 1) or over each tile's rows and columns
    aux_convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.aux_head.modules())
    assert ops["Conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) - aux_convs
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim[2:]] == ["height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(96, 144), (144, 240)]:  # neither is the export size; the 6-bin tiles are 2×3 and 3×5
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = net(x).numpy()
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert np.abs(got - expected).max() < 1e-4
