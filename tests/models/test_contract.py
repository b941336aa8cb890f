"""The contract every registered model keeps, parametrised over the registry so that a new family is
covered the day it is registered.

Small widths and sizes keep this fast on a CPU; the ONNX export is the slow part and runs once per model.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from segedge.core.errors import InputSizeError
from segedge.models.registry import get_spec, list_models
from zoo_exports import NUM_CLASSES, WIDTH, Exported, valid_size

MODELS = list_models()


@pytest.fixture(scope="module", params=MODELS)
def exported(request: pytest.FixtureRequest, zoo_export) -> Exported:
    return zoo_export(request.param)


@pytest.mark.parametrize("name", MODELS)
def test_eval_returns_full_resolution_logits_at_default_size(name: str) -> None:
    spec = get_spec(name)
    model = spec.build(num_classes=NUM_CLASSES, width=WIDTH)
    assert not model.training, "ModelSpec.build must hand back a model in eval mode"
    spec.check_input_size(*spec.default_input_size)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *spec.default_input_size))
    assert isinstance(logits, torch.Tensor), "eval forward must return the logits tensor alone"
    assert logits.shape == (1, NUM_CLASSES, *spec.default_input_size)


@pytest.mark.parametrize("name", MODELS)
def test_train_step_gives_finite_gradients_to_every_parameter(name: str) -> None:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.build(num_classes=NUM_CLASSES, width=WIDTH).train()
    size = valid_size(spec, extra_strides=1)
    out = model(torch.randn(2, 3, *size))
    outputs = out if isinstance(out, tuple) else (out,)
    target = torch.randint(0, NUM_CLASSES, (2, *size))
    for logits in outputs:  # main and auxiliary outputs are all per-pixel logits at input resolution
        assert logits.shape == (2, NUM_CLASSES, *size)
    sum(F.cross_entropy(logits, target) for logits in outputs).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters that get no gradient in training: {unused[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_input_size_off_the_stride_names_nearest_valid_sizes(name: str) -> None:
    spec = get_spec(name)
    s = spec.size_multiple
    h, w = valid_size(spec, extra_strides=1)
    spec.check_input_size(h, w)  # valid: no error
    with pytest.raises(InputSizeError) as err:
        spec.check_input_size(h + 1, w)
    assert f"{h} or {h + s}" in str(err.value)
    assert name in str(err.value)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_shrinks_with_width(name: str) -> None:
    spec = get_spec(name)
    quarter, half = (sum(p.numel() for p in spec.build(width=w).parameters()) for w in (0.25, 0.5))
    # channel counts scale linearly, so conv weights shrink roughly quadratically
    assert quarter < 0.5 * half, f"halving the width kept {quarter / half:.0%} of the parameters"


def test_onnx_export_is_clean_and_has_dynamic_hw(exported: Exported) -> None:
    graph = onnx.load(exported.path).graph
    failures = [m for m in exported.messages if "❌" in m or re.search(r"fail|fallback|not supported", m, re.I)]
    assert not failures, f"exporter reported problems: {failures}"
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[:2]] == [1, 3 if value.name == "input" else NUM_CLASSES]
        if not exported.spec.dynamic_hw:
            continue  # static by declaration: the refusal is tested below
        assert all(d.dim_param and not d.dim_value for d in dims[2:]), (
            f"{value.name} H/W were baked in as {[d.dim_value for d in dims[2:]]}: "
            "the model turns a size into a Python int"
        )
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}, "only standard ONNX ops (no ATen fallbacks)"


@pytest.mark.parametrize("extra_strides", [0, 1])
def test_onnxruntime_matches_torch_at_two_sizes(exported: Exported, extra_strides: int) -> None:
    if extra_strides and not exported.spec.dynamic_hw:
        return  # a static graph runs at its export size only (the refusal of --dynamic is tested below)
    size = valid_size(exported.spec, extra_strides)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = exported.model(x).numpy()
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x.numpy()})
    assert got.shape == expected.shape
    max_abs_diff = float(np.abs(got - expected).max())
    argmax_agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    print(f"{exported.spec.name} {size}: max abs diff {max_abs_diff:.2e}, argmax agreement {argmax_agreement:.4%}")
    # relative to the logits' scale: a BN over a near-constant pooled channel (DeepLab's image pooling on random
    # weights) amplifies activations ~300×, where float32 rounding alone gives 1e-5 relative
    assert max_abs_diff < 1e-3 * max(1.0, float(np.abs(expected).max()))
    assert argmax_agreement > 0.999



@pytest.mark.parametrize("name", MODELS)
def test_dynamic_export_is_refused_with_the_reason_where_not_supported(name: str, tmp_path: Path) -> None:
    from segedge.graph.export import onnx_from_torch

    spec = get_spec(name)
    if spec.dynamic_hw:
        assert not spec.dynamic_hw_reason, "a reason is only for models that refuse dynamic H/W"
        return
    assert spec.dynamic_hw_reason, "a model that refuses dynamic H/W must say why"
    with pytest.raises(InputSizeError, match=f"{name} cannot be exported with dynamic H/W: "):
        onnx_from_torch(spec.build(num_classes=NUM_CLASSES, width=WIDTH), spec, tmp_path / "m.onnx", valid_size(spec), dynamic=True)
    assert not list(tmp_path.iterdir())


def test_a_model_without_dynamic_hw_is_refused_with_its_reason(tmp_path: Path) -> None:
    """Every zoo model exports with dynamic H/W today, so the refusal branch above never runs on the zoo: a
    stub spec that cannot exercises it."""
    from segedge.graph.export import onnx_from_torch
    from segedge.models.registry import ModelSpec

    spec = ModelSpec(name="fixedbins", builder=lambda **_: torch.nn.Conv2d(3, 2, 1), description="stub",
                     output_stride=1, dynamic_hw=False, dynamic_hw_reason="its pooling bins are fixed at export")
    with pytest.raises(InputSizeError, match="fixedbins cannot be exported with dynamic H/W: its pooling bins are fixed"):
        onnx_from_torch(spec.build(), spec, tmp_path / "m.onnx", (64, 64), dynamic=True)
    assert not list(tmp_path.iterdir())


# the models that also go checkpoint → segedge's own torch → ONNX export inside the chain (a CNN with auxiliary
# heads, a ViT, an encoder-decoder with skip concatenations); the others start the chain from their session export
# above, which every contract test already checks (the torch export is most of the chain's time on these sizes; ENet,
# the slowest to export at 25 s, left this list for that)
FULL_CHAIN = ("bisenet", "setr-naive", "unet")


def test_checkpoint_round_trip_and_fp16_int8_export(exported: Exported, tmp_path: Path) -> None:
    """Through the real chain: checkpoint → ONNX → simplified (parity-gated at 99.9 %) → FP16 and INT8.

    Weights are random (BN settled), so FP16/INT8 accuracy means nothing here: their gates are opened and
    the test asserts they build, run and stay finite. Their real cost is measured on trained weights in
    benchmarks/.
    """
    from segedge.models.checkpoint import load_checkpoint, save_checkpoint
    from segedge.core.precision import STAGES, ParityGate
    from segedge.data.synthetic import CLASS_NAMES
    from segedge.flows.export import ExportConfig, export_model
    from segedge.graph.int8 import Int8Config

    spec, name = exported.spec, exported.spec.name
    size = valid_size(spec)
    assert len(CLASS_NAMES) == NUM_CLASSES
    path = save_checkpoint(tmp_path / "ckpt.pt", exported.model, name, WIDTH, CLASS_NAMES)
    rebuilt = load_checkpoint(path, expect_model=name).build()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert torch.equal(exported.model(x), rebuilt(x))

    open_gate = ParityGate(0.0)
    source = (dict(model=name, checkpoint=path, dynamic=spec.dynamic_hw) if name in FULL_CHAIN
              else dict(model="", onnx=exported.path, mean=spec.mean, std=spec.std))
    config = ExportConfig(
        **source, input_size=size, precisions=("fp16", "int8"),
        int8_config=Int8Config(calib_images=2, chunk=2), eval_images=2, store=tmp_path / "store", threads=2,
        gates={**{n: s.gate for n, s in STAGES.items()}, "fp16": open_gate, "int8": open_gate},
    )
    stages = export_model(config).manifest["stages"]
    assert set(stages) == {"onnx", "sim", "fp16", "int8"}
    assert stages["sim"]["parity"]["argmax_agreement"] >= 0.999
    for stage in ("fp16", "int8"):
        assert math.isfinite(stages[stage]["parity"]["max_abs_diff"])
    # FP16 must agree with FP32 far above chance (10 % for 10 classes) even on random weights, whose near-tied
    # logits flip easily: measured 88.6 % (SegNet-trt) to 100 % across the zoo; a graph that computed something
    # else, or overflowed, would not reach it
    assert stages["fp16"]["parity"]["argmax_agreement"] >= 0.85
    assert stages["int8"]["quantize_nodes"] > 0
