"""SETR: the small ViT encoder at 1/16, run-time position-embedding resize, naive and PUP decoders."""

from __future__ import annotations

import onnx
import pytest
import torch

from segedge.models.setr import POSITION_GRID, SETR, NaiveDecoder, ProgressiveUpsamplingDecoder
from segedge.models.registry import get_spec

SIZE = (64, 128)


def test_both_decoders_are_registered_on_the_same_small_encoder() -> None:
    naive, pup = (get_spec(name).build(width=1.0) for name in ("setr-naive", "setr-pup"))
    assert isinstance(naive.decoder, NaiveDecoder) and isinstance(pup.decoder, ProgressiveUpsamplingDecoder)
    encoder = sum(p.numel() for p in naive.encoder.parameters())
    assert encoder == sum(p.numel() for p in pup.encoder.parameters())
    # dim 256, depth 8: 8 × ~0.79 M per block + patch embedding + 32×64×256 position embedding
    assert 6.9e6 < encoder < 7.2e6
    assert len(naive.encoder.blocks) == 8 and naive.encoder.blocks[0].attention.heads == 4


def test_encoder_output_stride_is_16() -> None:
    model = SETR(num_classes=19, width=0.25).eval()
    with torch.no_grad():
        assert model.encoder(torch.randn(1, 3, *SIZE)).shape[2:] == (SIZE[0] // 16, SIZE[1] // 16)
    assert get_spec("setr-pup").output_stride == 16


def test_position_embedding_is_resized_to_the_token_grid_and_untouched_at_the_default_size() -> None:
    model = SETR(num_classes=19, width=0.25).eval()
    assert tuple(model.encoder.position.shape[2:]) == POSITION_GRID == (512 // 16, 1024 // 16)
    seen: list[torch.Tensor] = []
    model.encoder.patch_embed.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        for size in ((512, 1024), (96, 160)):
            assert model(torch.randn(1, 3, *size)).shape == (1, 19, *size)
    # at the default size the resize is the identity, so the learned grid is used as trained
    from segedge.models.blocks import resize_to

    assert torch.equal(resize_to(model.encoder.position, seen[0]), model.encoder.position)
    assert resize_to(model.encoder.position, seen[1]).shape[2:] == (6, 10)


def test_pup_upsamples_progressively_in_four_steps() -> None:
    model = SETR(num_classes=19, width=0.25, decoder="pup").eval()
    inputs: list[tuple[int, ...]] = []
    for conv in model.decoder.convs:
        conv.register_forward_hook(lambda _m, args, _o: inputs.append(tuple(args[0].shape[2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, *SIZE))
    assert inputs == [(SIZE[0] // s, SIZE[1] // s) for s in (16, 8, 4, 2)]


@pytest.mark.parametrize("name, resizes", [("setr-naive", 2), ("setr-pup", 5)])
def test_export_keeps_hw_dynamic_with_the_position_resize_in_the_graph(name: str, resizes: int, zoo_export) -> None:
    graph = onnx.load(zoo_export(name).path).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Resize") == resizes  # position embedding + decoder upsampling
    assert ops.count("LayerNormalization") == 17 and "Pow" not in ops
    for value in (graph.input[0], graph.output[0]):
        assert [d.dim_param for d in value.type.tensor_type.shape.dim[2:]] == ["height", "width"]
