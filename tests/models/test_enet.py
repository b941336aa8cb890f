"""ENet: the paper's size and layout, and the index-free variants equal to the indexed one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from segedge.models.enet import ENet, RegularBottleneck
from segedge.models.registry import get_spec
from segedge.models.unpooling import SwitchPool2d, SwitchUnpool2d
from zoo_exports import NUM_CLASSES, WIDTH

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


def _tied_inputs(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Random values, then inputs full of equal values in one window: small integers, constant blocks, zeros
    of both signs, one window position raised in every window (each of the four in turn)."""
    torch.manual_seed(0)
    n, c, h, w = shape
    inputs = [torch.randn(shape), torch.randint(-2, 3, shape).float(), torch.randint(0, 2, shape).float()]
    inputs.append(F.interpolate(torch.randn(n, c, h // 2, w // 2).round(), size=(h, w), mode="nearest"))
    signed_zeros = torch.zeros(shape)
    signed_zeros[..., 0::2, 0::2] = -0.0
    inputs.append(signed_zeros)
    for dy in (0, 1):
        for dx in (0, 1):
            x = torch.randint(0, 2, shape).float()
            x[..., dy::2, dx::2] += 1.0  # a unique max at (dy, dx) in some windows, ties with it elsewhere
            inputs.append(x)
    return inputs


@pytest.mark.parametrize("mode", ["index_free", "depth_to_space"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 16, 32, 64)])
def test_index_free_pool_and_unpool_equal_max_unpool2d_ties_included(mode, shape) -> None:
    pool, unpool = SwitchPool2d(mode), SwitchUnpool2d(mode)
    for x in _tied_inputs(shape):
        pooled, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
        expected = F.max_unpool2d(pooled, indices, kernel_size=2, stride=2)
        got_pooled, switches = pool(x)
        assert torch.equal(got_pooled, pooled)
        # one winner per window, where torch's index points: unpool a tensor of ones, and the pooled values
        ones = torch.ones_like(pooled)
        assert torch.equal(unpool(ones, switches), F.max_unpool2d(ones, indices, kernel_size=2, stride=2))
        assert torch.equal(unpool(pooled, switches), expected)
        values = torch.randn_like(pooled)  # values unrelated to x, as in the decoder
        assert torch.equal(unpool(values, switches), F.max_unpool2d(values, indices, kernel_size=2, stride=2))


def test_enet_variants_are_numerically_equal_with_the_same_weights() -> None:
    torch.manual_seed(0)
    indexed = ENet(num_classes=5, width=0.5, unpool_mode="indexed").eval()
    images = torch.randn(2, 3, *SIZE)
    blocky = torch.nn.functional.interpolate(images[:, :, ::4, ::4].round(), size=SIZE, mode="nearest")  # ties
    assert get_spec("enet-trt") is get_spec("enet")  # the old index-free variant's name, now the same model
    variant = get_spec("enet").build(num_classes=5, width=0.5).eval()
    variant.load_state_dict(indexed.state_dict())  # same parameter and buffer names
    with torch.no_grad():
        for x in (images, blocky, torch.zeros(1, 3, *SIZE)):
            assert torch.equal(indexed(x), variant(x))


def test_indexed_checkpoint_loads_into_enet_and_back() -> None:
    indexed = ENet(num_classes=5, width=0.25, unpool_mode="indexed")
    enet = get_spec("enet").build(num_classes=5, width=0.25)
    assert list(indexed.state_dict()) == list(enet.state_dict())
    assert [n for n, _ in indexed.named_modules()] == [n for n, _ in enet.named_modules()]
    enet.load_state_dict(indexed.state_dict(), strict=True)
    indexed.load_state_dict(enet.state_dict(), strict=True)


def test_enet_exports_without_pooling_indices_and_runs_on_onnxruntime_and_openvino(zoo_export) -> None:
    """The enet graph: no MaxPool indices output (OpenVINO's CPU plugin runs it as a reference kernel, TensorRT's
    parser rejects it), no scatter; the same outputs on onnxruntime and OpenVINO as the indexed model in torch.
    (The unused ``depth_to_space`` form is checked against max_unpool2d in torch above; its export runs in
    benchmarks/bench_enet_openvino.py.)"""
    import onnxruntime as ort

    exported = zoo_export("enet")
    path, model = exported.path, exported.model
    nodes = onnx.load(path).graph.node
    ops = {n.op_type for n in nodes}
    assert ops.isdisjoint({"ScatterND", "ScatterElements", "MaxUnpool"})
    assert all(len(n.output) == 1 for n in nodes if n.op_type == "MaxPool")
    assert {"PRelu", "ConvTranspose", "Pad"} <= ops  # PReLU kept, fullconv, zero-padded channel shortcut
    assert get_spec("enet").tensorrt_parser_safe

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except ImportError:
        compiled = None
    indexed = ENet(num_classes=NUM_CLASSES, width=WIDTH, unpool_mode="indexed").eval()
    indexed.load_state_dict(model.state_dict())
    images = torch.randn(1, 3, 64, 96)  # another size: the graph is dynamic
    blocky = F.interpolate(images[:, :, ::4, ::4].round(), size=(64, 96), mode="nearest")
    for x in (torch.randn(1, 3, *SIZE), images, blocky):
        with torch.no_grad():
            expected = indexed(x).numpy()
        outputs = {"onnxruntime": session.run(None, {"input": x.numpy()})[0]}
        if compiled is not None:
            outputs["openvino"] = compiled.create_infer_request().infer({0: x.numpy()})[0]
        for backend, got in outputs.items():
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(), err_msg=backend)
