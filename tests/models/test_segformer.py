"""SegFormer-B0: MiT-B0's stage plan, spatial-reduction attention, and LayerNorm exported as one op."""

from __future__ import annotations

import onnx
import pytest
import torch

from segedge.models.segformer import EfficientSelfAttention, SegFormer
from segedge.models.registry import get_spec

SIZE = (64, 128)


def test_alias_and_parameters_at_width_one_match_the_paper() -> None:
    assert get_spec("SegFormer") is get_spec("segformer-b0")
    model = SegFormer(num_classes=19)
    assert 3.6e6 < sum(p.numel() for p in model.parameters()) < 3.8e6  # paper, Table 1: 3.8 M (MiT-B0 3.4 M)
    assert 3.2e6 < sum(p.numel() for p in model.stages.parameters()) < 3.45e6


def test_stages_run_at_quarter_to_one_thirty_second_with_mit_b0_widths_heads_and_reductions() -> None:
    model = SegFormer(num_classes=19).eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        plan = zip(model.stages, (32, 64, 160, 256), (1, 2, 5, 8), (8, 4, 2, 1), (4, 8, 16, 32))
        for stage, dim, heads, reduction, stride in plan:
            x = stage(x)
            assert x.shape == (1, dim, SIZE[0] // stride, SIZE[1] // stride)
            attention = stage.blocks[0].attention
            assert attention.heads == heads and len(stage.blocks) == 2
            assert (attention.reduce.stride[0] if attention.reduce is not None else 1) == reduction


def test_spatial_reduction_shrinks_keys_by_the_square_of_the_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    attention = EfficientSelfAttention(dim=16, heads=2, reduction=4).eval()
    fmap = torch.randn(1, 16, 32, 64)
    scores: list[torch.Size] = []
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda t, dim: scores.append(t.shape) or softmax(t, dim=dim))
    out = attention(fmap.flatten(2).transpose(1, 2), fmap)
    assert out.shape == (1, 32 * 64, 16)
    assert scores == [(1, 2, 32 * 64, 32 * 64 // 16)]


def test_decoder_fuses_all_four_stages_at_one_quarter() -> None:
    model = SegFormer(num_classes=19)
    assert [p.in_channels for p in model.projections] == [32, 64, 160, 256]
    assert all(p.out_channels == 256 for p in model.projections)
    assert model.fuse.conv.in_channels == 4 * 256 and model.classifier.out_channels == 19


def test_layernorm_exports_as_one_layernormalization_op_not_its_decomposition(zoo_export) -> None:
    """FP16 backends overflow on ReduceMean → Sub → Pow → ReduceMean → Sqrt; one fused op stays accurate."""
    exported = zoo_export("segformer-b0")
    model = exported.model
    graph = onnx.load(exported.path).graph
    ops = [node.op_type for node in graph.node]
    layer_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert layer_norms == 30  # per stage: embedding, 2 × 2 in blocks, final; + 2 reduction norms in stages 1–3
    assert ops.count("LayerNormalization") == layer_norms
    assert not {"Pow", "Sqrt", "ReduceMean", "ReduceSumSquare"} & set(ops), "a decomposed LayerNorm is in the graph"
    assert ops.count("Softmax") == 8 and "Attention" not in ops  # plain MatMul + Softmax, one per block
    for value in (graph.input[0], graph.output[0]):
        assert [d.dim_param for d in value.type.tensor_type.shape.dim[2:]] == ["height", "width"]
