"""DDRNet-23-slim: two branches at 1/8 and down to 1/64, DAPPM pooling, an aux head in training only."""

from __future__ import annotations

import onnx
import pytest
import torch

from segedge.models.ddrnet import DAPPM, DDRNet
from segedge.models.registry import get_spec

SIZE = (128, 192)


@pytest.fixture
def model() -> DDRNet:
    torch.manual_seed(0)
    return get_spec("ddrnet").build(num_classes=10, width=0.25)


def test_alias_and_parameters_at_width_one_match_the_paper() -> None:
    assert get_spec("DDRNet") is get_spec("ddrnet23slim")
    model = DDRNet(num_classes=19)
    inference = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.aux_head.parameters())
    assert 5.6e6 < inference < 5.8e6  # paper, Table 3: 5.7 M


def test_high_branch_stays_at_one_eighth_while_low_branch_reaches_one_sixty_fourth() -> None:
    model = DDRNet(num_classes=19).eval()
    shapes: dict[str, torch.Size] = {}
    for name in ("high3", "high4", "high5", "low3", "low4", "low5"):
        getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: shapes.update({name: out.shape}))
    with torch.no_grad():
        model(torch.randn(1, 3, *SIZE))
    h, w = SIZE
    assert shapes["high3"] == shapes["high4"] == (1, 64, h // 8, w // 8)
    assert shapes["high5"] == (1, 128, h // 8, w // 8)  # bottleneck doubles the channels
    assert shapes["low3"][2:] == (h // 16, w // 16) and shapes["low4"][2:] == (h // 32, w // 32)
    assert shapes["low5"] == (1, 512, h // 64, w // 64)


def test_dappm_pools_at_kernels_5_9_17_and_strides_2_4_8_plus_a_global_mean() -> None:
    dappm = DAPPM(64, 16, 32).eval()
    assert [(p.kernel_size, p.stride) for p in dappm.pools] == [(5, 2), (9, 4), (17, 8)]
    with torch.no_grad():  # size-agnostic: any map size, output at the input map's size
        for size in ((2, 3), (8, 16), (9, 13)):
            assert dappm(torch.randn(1, 64, *size)).shape == (1, 32, *size)


def test_aux_head_runs_only_in_training(model: DDRNet) -> None:
    calls: list[str] = []
    model.aux_head.register_forward_hook(lambda *_: calls.append("aux"))
    with torch.no_grad():
        assert model(torch.randn(1, 3, *SIZE)).shape == (1, 10, *SIZE)
    assert calls == []
    logits, aux = model.train()(torch.randn(2, 3, *SIZE))
    assert logits.shape == aux.shape == (2, 10, *SIZE) and calls == ["aux"]


def test_exported_graph_has_fixed_kernel_pools_a_mean_and_no_aux_head(zoo_export) -> None:
    exported = zoo_export("ddrnet23slim")
    model = exported.model
    ops = [node.op_type for node in onnx.load(exported.path).graph.node]
    assert ops.count("AveragePool") == 3 and ops.count("ReduceMean") == 1 and "GlobalAveragePool" not in ops
    assert not {"Gather", "ScatterND", "MaxUnpool"} & set(ops)
    aux_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.aux_head.modules())
    assert ops.count("Conv") == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - aux_convs
    assert ops.count("Resize") == 8  # 2 fusions, 4 DAPPM scales, context to 1/8, logits to the input
