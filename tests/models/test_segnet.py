"""SegNet: VGG-16 encoder, switch unpooling, and the index-free variant that TensorRT can parse."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F

from segedge.models.segnet import SegNet
from segedge.models.unpooling import SwitchPool2d, SwitchUnpool2d
from segedge.models.registry import get_spec

SIZE = (64, 96)


def unpool_both_ways(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.randn(x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2)
    indexed = SwitchUnpool2d("indexed")(values, SwitchPool2d("indexed")(x)[1])
    index_free = SwitchUnpool2d("index_free")(values, SwitchPool2d("index_free")(x)[1])
    return indexed, index_free


def test_index_free_unpooling_keeps_the_first_maximum_in_scan_order_on_ties() -> None:
    # windows (row-major): all equal; top-right = bottom-left; bottom-left = bottom-right; a unique max
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0],
                        [1.0, 1.0, 2.0, 0.0, 3.0, 3.0, 0.0, 5.0]]]])
    indexed, index_free = unpool_both_ways(x)
    assert torch.equal(indexed, index_free)
    keep = (index_free != 0).int()[0, 0]
    assert keep.tolist() == [[1, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 1]]


@pytest.mark.parametrize("kind", ["gaussian", "relu", "few_levels"])
def test_index_free_unpooling_equals_max_unpool(kind: str) -> None:
    x = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(0))
    if kind == "relu":  # half the values are tied zeros
        x = x.relu()
    elif kind == "few_levels":  # ties between nonzero values too
        x = x.round().clamp(-1, 1)
    indexed, index_free = unpool_both_ways(x)
    assert torch.equal(indexed, index_free)


def test_segnet_trt_is_numerically_equal_to_segnet_with_the_same_weights() -> None:
    torch.manual_seed(0)
    indexed = get_spec("segnet").build(num_classes=5, width=0.25)
    index_free = get_spec("segnet-trt").build(num_classes=5, width=0.25)
    index_free.load_state_dict(indexed.state_dict())  # same layout: the variants have no unpooling weights
    images = torch.randn(2, 3, *SIZE)
    flat_patches = F.interpolate(images.round(), scale_factor=0.25, mode="nearest")  # 4×4 equal blocks
    with torch.no_grad():
        for x in (images, F.interpolate(flat_patches, size=SIZE, mode="nearest")):
            assert torch.equal(indexed(x), index_free(x))


def test_encoder_is_vgg16_and_parameter_count_matches_the_paper() -> None:
    with torch.device("meta"):
        model = SegNet(num_classes=11)  # CamVid
    encoder_convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in encoder_convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules()) == 13
    params = sum(p.numel() for p in model.parameters())
    assert 29.0e6 < params < 30.0e6, params  # paper: 29.5 M


def test_decoder_mirrors_the_encoder_back_to_full_resolution() -> None:
    model = SegNet(num_classes=5, width=0.25).eval()
    shapes = []
    for stage in model.decoder:
        stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 3, *SIZE))
    h, w = SIZE
    assert [s[1:] for s in shapes] == [(h // 16, w // 16), (h // 8, w // 8), (h // 4, w // 4), (h // 2, w // 2), (h, w)]
    assert [s[0] for s in shapes] == [128, 64, 32, 16, 16]


def test_indexed_export_uses_pooling_indices_and_index_free_export_does_not(zoo_export) -> None:
    """What the tensorrt_parser_safe flags rest on: TensorRT's parser does not import MaxPool's indices
    output (the indexed graph's ScatterND it would take)."""
    def export_ops(name: str) -> list[tuple[str, int]]:
        return [(node.op_type, len(node.output)) for node in onnx.load(zoo_export(name).path).graph.node]

    indexed = export_ops("segnet")
    assert ("ScatterND", 1) in indexed and ("MaxPool", 2) in indexed
    assert not get_spec("segnet").tensorrt_parser_safe

    index_free = export_ops("segnet-trt")
    assert {op for op, _ in index_free}.isdisjoint({"ScatterND", "MaxUnpool", "ScatterElements"})
    assert ("MaxPool", 2) not in index_free
    assert get_spec("segnet-trt").tensorrt_parser_safe
