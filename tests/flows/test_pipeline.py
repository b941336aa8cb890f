"""The export chain end to end at tiny sizes: artifacts, manifest, reuse, the parity gate, bad input."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from segedge.verify.compare import ParityGate
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.core.errors import CalibrationError, CheckpointError, InputSizeError, ParityError, UnknownModelError
from segedge.core.metrics import ConfusionMatrix
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import Int8Config
from segedge.models.registry import get_spec

SIZE = (64, 128)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    config = ExportConfig(
        model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("fp16", "int8"),
        int8_config=Int8Config(calib_images=8), eval_images=4, store=store, threads=2,
    )
    return config, export_model(config)


def test_every_stage_lands_with_parity_in_the_manifest(exported):
    _, result = exported
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"onnx", "sim", "fp16", "int8"}
    for stage, entry in manifest["stages"].items():
        assert (result.directory / entry["file"]).is_file()
        parity = entry["parity"]
        assert parity["images"] == 4
        assert parity["argmax_agreement"] >= entry["gate"]["min_argmax_agreement"]
        assert parity["reference_miou"] == pytest.approx(manifest["reference"]["miou"])
    assert manifest["stages"]["onnx"]["opset"] >= 17
    assert manifest["stages"]["onnx"]["output_shape"] == [1, 10, *SIZE]
    assert manifest["stages"]["sim"]["parity"]["argmax_agreement"] >= 0.999
    assert manifest["stages"]["int8"]["quantize_nodes"] > 0
    assert manifest["stages"]["int8"]["calibration"]["calib_images"] == 8
    assert "onnxruntime" in manifest["tools"] and "torch" in manifest["tools"]
    assert not list(result.directory.glob(".candidate*"))


def test_int8_graph_has_qdq_around_every_conv(exported):
    _, result = exported
    model = onnx.load(result.file("int8"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    entry = result.manifest["stages"]["int8"]
    assert entry["float_convs_left"] == len(entry["float_classifier"]) == 1  # every conv but the classifier
    # u8 activations for x86 onnxruntime: activation QuantizeLinear zero points are uint8
    zero_points = {t.name: t for t in model.graph.initializer}
    q_zero_types = {zero_points[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in zero_points}
    assert q_zero_types == {onnx.TensorProto.UINT8}


def test_fp16_graph_computes_in_fp16_with_fp32_io(exported):
    _, result = exported
    model = onnx.load(result.file("fp16"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {t.data_type for t in model.graph.initializer if t.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize("stage", ["onnx", "sim", "fp16", "int8"])
def test_an_independent_onnxruntime_session_reproduces_the_manifest(exported, stage):
    config, result = exported
    entry = result.manifest["stages"][stage]
    spec = get_spec("unet")
    images, masks = SyntheticScenes("val", 4, size=SIZE, seed=config.seed).batch(0, 4)
    x = to_network_input(images, spec.mean, spec.std)
    session = ort.InferenceSession(str(result.file(stage)), providers=["CPUExecutionProvider"])
    cm = ConfusionMatrix(10)
    for i in range(4):
        logits = session.run(None, {"input": x[i : i + 1]})[0]
        cm.update(masks[i : i + 1], logits.argmax(1))
    assert cm.scores().mean_iou == pytest.approx(entry["parity"]["miou"], abs=1e-6)


def test_same_inputs_reuse_every_stage(exported):
    config, first = exported
    logs = []
    second = export_model(config, log=logs.append)
    assert second.directory == first.directory
    assert all("reused" in line for line in logs) and len(logs) == 4
    assert second.manifest["stages"] == first.manifest["stages"]


def test_parity_gate_fires_on_a_broken_graph_and_keeps_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    """A simplifier that silently corrupts weights must be caught and its output discarded."""
    import segedge.flows.export as pipeline

    def corrupting_simplifier(src, dst):
        model = onnx.load(str(src))
        for tensor in model.graph.initializer:
            if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) == 4:
                array = onnx.numpy_helper.to_array(tensor)
                tensor.CopyFrom(onnx.numpy_helper.from_array(-array, tensor.name))
        onnx.save(model, str(dst))
        return {}

    monkeypatch.setattr(pipeline, "simplified_onnx", corrupting_simplifier)
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2, store=tmp_path)
    with pytest.raises(ParityError, match=r"sim artifact fails the parity gate.*argmax agreement .* below the gate's 99.90 %.*no sim artifact was kept"):
        export_model(config)
    directory = next(tmp_path.glob("unet/*"))
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "model.onnx"]
    assert set(json.loads((directory / "manifest.json").read_text())["stages"]) == {"onnx"}


def test_an_x86_graph_checked_on_a_cpu_without_vnni_says_why_it_may_read_worse(tiny_checkpoint, tmp_path, monkeypatch):
    """On a CPU without VNNI the x86 scheme's 8-bit weights saturate in onnxruntime's kernels: the export says so,
    records it, and names it again when the gate refuses the graph."""
    from dataclasses import replace
    from types import SimpleNamespace

    import segedge.flows.export as pipeline
    from segedge.graph.int8 import saturation_note

    avx2 = SimpleNamespace(arch="x86_64", cpu_flags=("avx2",))
    monkeypatch.setattr(pipeline, "saturation_note", lambda scheme: saturation_note(scheme, avx2))
    said = []
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("int8",),
                          int8_config=Int8Config(calib_images=4), eval_images=2, store=tmp_path, threads=2)
    entry = export_model(config, log=said.append).manifest["stages"]["int8"]
    assert "--int8-scheme x86-novnni" in entry["saturation_note"] and "flags: avx2" in entry["saturation_note"]
    assert any(line.startswith("int8  warning: this CPU has no VNNI") for line in said)
    strict = {**config.gates, "int8": ParityGate(min_argmax_agreement=1.01)}
    with pytest.raises(ParityError, match=r"no int8 artifact was kept\. Likely why: this CPU has no VNNI"):
        export_model(replace(config, gates=strict, store=tmp_path / "strict"))
    seven_bit = export_model(replace(config, int8_config=Int8Config(calib_images=4, scheme="x86-novnni")), log=said.append)
    assert "saturation_note" not in seven_bit.manifest["stages"]["int8"]


def test_a_failing_rerun_never_replaces_a_good_artifact(exported, monkeypatch):
    config, result = exported
    good = result.file("int8").read_bytes()
    strict = dict(config.gates, int8=ParityGate(1.01))  # no artifact can pass
    changed = ExportConfig(**{**config.__dict__, "gates": strict, "int8_config": Int8Config(calib_images=4)})
    with pytest.raises(ParityError, match="int8 artifact fails"):
        export_model(changed)
    assert result.file("int8").read_bytes() == good


def test_dynamic_export_runs_at_a_second_size(tiny_checkpoint, tmp_path):
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, dynamic=True, eval_images=2, store=tmp_path)
    result = export_model(config)
    onnx_entry = result.manifest["stages"]["onnx"]
    assert onnx_entry["input_shape"] == [1, 3, "height", "width"]
    assert onnx_entry["dynamic_checked_at"] == [80, 160]
    session = ort.InferenceSession(str(result.file("sim")), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((1, 3, 96, 192), np.float32)})[0]
    assert out.shape == (1, 10, 96, 192)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"model": "segnetx"}, UnknownModelError, "unknown model 'segnetx'.*Valid models: .*bisenet"),
        ({"input_size": (500, 1000)}, InputSizeError, r"height 500 is not a multiple of 16 \(nearest valid: 496 or 512\)"),
        ({"precisions": ("int8",), "int8_config": Int8Config(calib_images=600)}, CalibrationError, "calibration set has 512 images but 600 were asked for"),
    ],
)
def test_bad_input_is_refused_before_any_artifact(tiny_checkpoint, tmp_path, kwargs, error, message):
    fields = {"model": "unet", "checkpoint": tiny_checkpoint.path, "input_size": SIZE, "eval_images": 2, "store": tmp_path, **kwargs}
    with pytest.raises(error, match=message):
        export_model(ExportConfig(**fields))
    assert not any(tmp_path.iterdir())


def test_checkpoint_of_another_model_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="holds a unet model"):
        export_model(ExportConfig(model="bisenet", checkpoint=tiny_checkpoint.path, store=tmp_path))
    assert not any(tmp_path.iterdir())


def test_schemes_share_one_minmax_ranges_cache(tiny_checkpoint, tmp_path):
    def export(scheme):
        return export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("int8",),
                                         int8_config=Int8Config(calib_images=4, scheme=scheme), eval_images=2,
                                         store=tmp_path, threads=2))

    x86 = export("x86")
    before = sorted(p.name for p in x86.directory.glob("calib.*.json"))
    trt = export("tensorrt")
    assert trt.directory == x86.directory
    assert len(before) == 1 and before[0].startswith("calib.minmax.any.4.")
    assert sorted(p.name for p in trt.directory.glob("calib.*.json")) == before
    entry = trt.manifest["stages"]["int8"]
    assert entry["calibration"]["ranges_cache"] == before[0]
    assert entry["calibration"]["scheme"]["name"] == "tensorrt"


@pytest.mark.parametrize("budget, met", [(50.0, True), (-1.0, False)])
def test_mixed_precision_budget_lands_in_the_manifest(tiny_checkpoint, tmp_path, budget, met):
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("int8",),
                          int8_config=Int8Config(calib_images=4, max_drop=budget, max_search_steps=2),
                          eval_images=2, store=tmp_path, threads=2)
    logs = []
    result = export_model(config, log=logs.append)
    entry = json.loads((result.directory / "manifest.json").read_text())["stages"]["int8"]
    search = entry["mixed_precision"]
    assert search["met"] is met and search["max_drop_points"] == budget
    assert any(search["message"] in line for line in logs)
    if met:
        assert search["kept_float"] == [] and search["message"].startswith("full INT8 meets the budget")
        assert "warnings" not in entry
    else:
        # says so, keeps the most accurate candidate tried, and the normal INT8 gate still decided
        assert entry["warnings"] == [search["message"]] and "NOT met" in search["message"]
        assert len(search["steps"]) == 2 and search["steps"][-1]["float_layers"] == search["quantizable_layers"]
        assert all(k["why"].startswith(("quantized alone it costs", "in block ")) for k in search["kept_float"])
        kept_convs = {k["layer"] for k in search["kept_float"] if k["op_type"] in ("Conv", "ConvTranspose")}
        assert entry["float_convs_left"] == len(kept_convs | set(entry["float_classifier"]))
        assert search["order"] == "blocks" and all("drop_high" in step for step in search["steps"])
        assert search["blocks"] and sum(b["layers"] for b in search["blocks"]) == search["quantizable_layers"]
        assert entry["parity"]["argmax_agreement"] >= entry["gate"]["min_argmax_agreement"]
    assert {"fp32", "full_int8", "chosen"} <= set(search["latency_ms"])


def test_balanced_calibration_and_equalization_are_recorded_and_keep_parity(tiny_checkpoint, tmp_path):
    """Both options reach the graph through the CLI's Int8Config, key their own ranges cache and leave the
    manifest saying what was done; the equalized graph still passes the INT8 gate."""
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("int8",),
                          int8_config=Int8Config(calib_images=4, calib_select="balanced", equalize=True),
                          eval_images=2, store=tmp_path, threads=2)
    result = export_model(config)
    entry = result.manifest["stages"]["int8"]
    selection = entry["calibration"]["selection"]
    assert selection["select"] == "balanced" and selection["pool"] == 16
    assert 0 < selection["rarest_class_share"] <= 1
    assert entry["calibration"]["ranges_cache"].startswith("calib.minmax.any.4.balanced.cle.")
    eq = entry["equalization"]
    assert eq["pairs"] > 0 and eq["range_ratio_after"] < eq["range_ratio_before"]
    assert entry["parity"]["argmax_agreement"] >= entry["gate"]["min_argmax_agreement"]


def test_output_first_search_keeps_the_last_layers_float_without_measuring_each(tiny_checkpoint, tmp_path):
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, precisions=("int8",),
                          int8_config=Int8Config(calib_images=4, max_drop=-1.0, max_search_steps=3,
                                                 search_order="output-first", op_set="all"),  # not the probe's pick
                          eval_images=2, store=tmp_path, threads=2)
    logs = []
    result = export_model(config, log=logs.append)
    search = result.manifest["stages"]["int8"]["mixed_precision"]
    assert search["order"] == "output-first" and search["met"] is False
    assert not any("measuring the sensitivity" in line for line in logs)
    assert any("keeping layers float from the output back" in line for line in logs)
    kept = [k["layer"] for k in search["kept_float"]]
    import onnx

    from segedge.graph.int8 import OTHER_QUANTIZED_OPS, QUANTIZABLE_OPS, Int8Config as Config

    # the prepared graph's layer order is the simplified graph's: the kept ones are its last layers, last first
    kinds = set(QUANTIZABLE_OPS) | (set(OTHER_QUANTIZED_OPS) & set(Config().op_types()))
    order = [n.name for n in onnx.load(str(result.file("sim"))).graph.node if n.op_type in kinds and n.name]
    assert [step["float_layers"] for step in search["steps"]] == [1, 2, search["quantizable_layers"]]
    assert kept == order[::-1][: len(kept)]  # the most accurate candidate tried: a prefix of output-first order
    assert all(k["why"].startswith("among the layers nearest the output") for k in search["kept_float"])
    with pytest.raises(InputSizeError, match="--search-order must be one of blocks, sensitivity, output-first"):
        Int8Config(search_order="random").validate()


def test_the_op_set_is_probed_per_model_recorded_and_respected(tiny_checkpoint, tmp_path):
    """auto: both op sets timed on the model, the choice and its figures in the manifest; layers: Q/DQ only on
    Conv/MatMul/Gemm, so an Add reads float tensors."""
    def export(op_set):
        return export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE,
                                         precisions=("int8",), int8_config=Int8Config(calib_images=4, op_set=op_set),
                                         eval_images=2, store=tmp_path, threads=2))  # FP32 stages reused

    auto = export("auto").manifest["stages"]["int8"]
    probe = auto["op_set"]
    assert probe["chosen"] in ("all", "layers") and probe["probe_ms"]["all"] > 0 and probe["probe_ms"]["layers"] > 0
    fastest, agreement = probe["probe_fastest_ms"], probe["probe_agreement"]
    assert all(fastest[k] <= probe["probe_ms"][k] for k in ("all", "layers")) and probe["probe_images"] >= 1
    assert all(0 <= agreement[k] <= 1 for k in ("all", "layers"))
    keeps_all = fastest["all"] < 0.97 * fastest["layers"] and agreement["all"] >= agreement["layers"] - 0.002
    assert probe["chosen"] == ("all" if keeps_all else "layers") and probe["why"].startswith(probe["chosen"])
    assert auto["config"]["int8"]["op_types"] == "auto"  # the key says auto; the entry says what it became

    layers, every = export("layers").manifest["stages"]["int8"], export("all").manifest["stages"]["int8"]
    assert layers["config"]["int8"]["op_types"] == ["Conv", "ConvTranspose", "Gemm", "MatMul"]
    assert "Concat" in every["config"]["int8"]["op_types"] and "op_set" not in every  # given, not probed
    assert layers["quantize_nodes"] != every["quantize_nodes"]  # two different placements (MaxPool/Concat/Add float)
    chosen = layers if probe["chosen"] == "layers" else every
    assert auto["quantize_nodes"] == chosen["quantize_nodes"]  # auto built exactly the set it chose


def test_a_zoo_models_measured_op_set_is_used_without_a_probe(tiny_checkpoint, tmp_path, monkeypatch):
    """A ModelSpec that names its op set (DeepLab v2, SegFormer, SETR: measured) is built with it: no timing on a
    busy machine can flip it, and the key holds the resolved op types."""
    import dataclasses

    from segedge.models import registry

    registry.get_spec("unet")  # the zoo is loaded before one of its specs is swapped
    monkeypatch.setitem(registry._REGISTRY, "unet", dataclasses.replace(registry.get_spec("unet"), int8_op_set="layers"))
    entry = export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE,
                                      precisions=("int8",), int8_config=Int8Config(calib_images=4),
                                      eval_images=2, store=tmp_path, threads=2)).manifest["stages"]["int8"]
    assert entry["op_set"]["chosen"] == "layers" and "measured default" in entry["op_set"]["why"]
    assert "probe_ms" not in entry["op_set"]
    assert entry["config"]["int8"]["op_types"] == ["Conv", "ConvTranspose", "Gemm", "MatMul"]
