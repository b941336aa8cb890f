"""The OpenVINO backend: runner parity with onnxruntime, honest bf16 refusal, NNCF's INT8 graph gated and
checked on OpenVINO, a bench that keeps the faster INT8 graph, and crash isolation of native runtimes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.core.errors import RunnerInputError, SegedgeError
from segedge.core.hardware import Machine

ov = pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install "segedge[openvino]")')

from segedge.backends import openvino as ovb  # noqa: E402
from segedge.backends.isolate import probe  # noqa: E402
from segedge.backends.registry import get_backend  # noqa: E402

X86 = Machine(arch="x86_64", cpu="Test CPU", cores=2, os="Linux", ort_providers=("CPUExecutionProvider",),
              cpu_flags=("avx2", "avx512f"))
SIZE = (64, 128)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    from segedge.graph.export import onnx_from_torch
    from segedge.models.registry import get_spec

    torch.manual_seed(0)
    spec = get_spec("unet")
    path = tmp_path_factory.mktemp("ov") / "unet.onnx"
    onnx_from_torch(spec.build(num_classes=4, width=0.125).eval(), spec, path, (64, 64))
    return path


def test_openvino_f32_matches_onnxruntime(tiny_onnx, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(tiny_onnx, threads=1) as ort_runner, \
            ovb.OpenVinoRunner(tiny_onnx, threads=1, cache_dir=tmp_path / "cache") as ov_runner:
        a = ort_runner.infer(x)
        b = ov_runner.infer(x)
        again = ov_runner.infer(x)
        assert ov_runner.input_spec.shape == (1, 3, 64, 64)
    assert b.shape == a.shape == (1, 4, 64, 64) and b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-3
    assert np.array_equal(b, again)  # a copy: the next inference does not overwrite the first's output
    assert any((tmp_path / "cache").iterdir())  # the compiled model was cached


def test_the_runner_validates_like_every_runner(tiny_onnx, tmp_path):
    with ovb.OpenVinoRunner(tiny_onnx, threads=1) as runner:
        with pytest.raises(RunnerInputError, match="dtype float64, expected float32"):
            runner.infer(np.zeros((1, 3, 64, 64)))
        with pytest.raises(RunnerInputError, match="shape 1x3x32x64"):
            runner.infer(np.zeros((1, 3, 32, 64), np.float32))
    with pytest.raises(RunnerInputError, match="inference_precision must be f32, bf16 or f16"):
        ovb.OpenVinoRunner(tiny_onnx, inference_precision="int4")
    with pytest.raises(SegedgeError, match="does not exist"):
        ovb.OpenVinoRunner(tmp_path / "absent.onnx").activate()
    with pytest.raises(RunnerInputError, match="no NPU device"):
        ovb.OpenVinoRunner(tiny_onnx, device="NPU").activate()


def test_bf16_is_refused_where_the_cpu_has_none_never_run_as_f32(monkeypatch):
    backend = get_backend("openvino")
    monkeypatch.setattr(ovb, "capabilities", lambda device="CPU": ("FP32", "INT8"))
    refusal = backend.refuses("bf16", None, X86)
    assert "no bf16" in refusal and "AVX-512 BF16 or AMX" in refusal and "avx512f" in refusal
    assert backend.float_precision(None) == "f32"
    assert backend.refuses("fp16", None, X86) == "openvino does not run fp16 (it runs fp32, bf16, int8)"
    monkeypatch.setattr(ovb, "capabilities", lambda device="CPU": ("FP32", "BF16", "INT8"))
    assert backend.refuses("bf16", None, X86) == ""
    assert backend.float_precision(None) == "bf16"  # INT8 graphs keep their float layers in bf16 there
    assert get_backend("onnxruntime").refuses("bf16", None, X86).startswith("onnxruntime does not run bf16")


@pytest.mark.skipif("BF16" not in ovb.capabilities(), reason="this CPU has no bf16 (AVX-512 BF16 or AMX)")
def test_bf16_runs_close_to_f32_where_the_cpu_has_it(tiny_onnx):
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with ovb.OpenVinoRunner(tiny_onnx, threads=1) as f32, \
            ovb.OpenVinoRunner(tiny_onnx, threads=1, inference_precision="bf16") as bf16:
        a, b = f32.infer(x), bf16.infer(x)
    assert not np.array_equal(a, b)  # bf16 arithmetic really ran
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.9


def test_the_gpu_profile_refuses_naming_what_is_missing():
    from segedge.backends.profiles import load_profile
    from segedge.core.hardware import detect_machine

    machine = detect_machine()
    if "GPU" in ov.Core().available_devices:
        pytest.skip("this machine has an OpenVINO GPU device")
    lacks = load_profile("openvino-gpu").missing(machine)
    assert any("an OpenVINO GPU device (OpenVINO here sees: CPU" in item for item in lacks)
    assert load_profile("openvino-cpu").missing(machine) == []


def test_nncf_int8_is_its_own_stage_gated_on_openvino(tiny_checkpoint, tmp_path):
    pytest.importorskip("nncf", reason="NNCF is not installed")
    from segedge.flows.export import ExportConfig, export_model
    from segedge.graph.int8 import Int8Config

    def config(scheme):
        return ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2,
                            store=tmp_path, threads=1, precisions=("int8",),
                            int8_config=Int8Config(scheme=scheme, calib_images=4))

    nncf_result = export_model(config("openvino"))
    stage = nncf_result.manifest["stages"]["int8-nncf"]
    # NNCF quantizes OpenVINO's model of the graph: an IR, its weights file hashed with it
    assert stage["file"] == "model.int8-nncf.xml" and stage["quantizer"].startswith("nncf ")
    assert list(stage["sidecars"]) == ["model.int8-nncf.bin"]
    assert stage["fake_quantize_nodes"] > 0 and stage["parity"]["argmax_agreement"] >= 0.90
    own = export_model(config("x86"))  # segedge's graph lands beside NNCF's, neither rebuilt over the other
    assert own.directory == nncf_result.directory
    assert set(own.manifest["stages"]) >= {"int8", "int8-nncf"}
    again = export_model(config("openvino"))
    assert again.manifest["stages"]["int8-nncf"]["sha256"] == stage["sha256"]
    # weights edited (or a run killed between the two renames): the IR is rebuilt, never served with them
    weights = nncf_result.directory / "model.int8-nncf.bin"
    good = weights.read_bytes()
    weights.write_bytes(good[:-4] + bytes(4))
    rebuilt = export_model(config("openvino")).manifest["stages"]["int8-nncf"]
    assert weights.read_bytes() != good[:-4] + bytes(4)
    from segedge.core.artifacts import sha256_file
    assert rebuilt["sidecars"]["model.int8-nncf.bin"] == sha256_file(weights)
    assert not list(nncf_result.directory.glob(".*tmp*")) and not list(nncf_result.directory.glob(".candidate*"))

    # the Predictor runs NNCF's graph on OpenVINO, segedge's own on onnxruntime, and says what bf16 needs
    from segedge.flows.predict import Predictor

    frame = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)
    with Predictor(nncf_result.directory, backend="openvino", precision="int8", threads=1) as on_ov, \
            Predictor(nncf_result.directory, precision="int8", threads=1) as on_ort, \
            Predictor(nncf_result.directory, precision="fp32", threads=1) as fp32:
        assert on_ov.file.name == "model.int8-nncf.xml" and on_ort.file.name == "model.int8.onnx"
        masks = [p(frame) for p in (on_ov, on_ort, fp32)]
    assert all(m.shape == (50, 90) for m in masks)
    assert (masks[0] == masks[2]).mean() > 0.8 and (masks[1] == masks[2]).mean() > 0.8
    with pytest.raises(SegedgeError, match="onnxruntime does not run bf16"):
        Predictor(nncf_result.directory, precision="bf16")


def test_an_openvino_bench_keeps_the_faster_int8_graph_and_says_which(tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("nncf", reason="NNCF is not installed")
    from segedge.cli.main import main
    from segedge.flows.export import ExportConfig, export_model

    fp32 = export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2,
                                     store=tmp_path / "theirs", threads=1))
    onnx_path = fp32.file("sim")
    store = tmp_path / "results.sqlite"
    code = main(["bench", "--profile", "openvino-cpu", "--onnx", f"net={onnx_path}", "--precisions", "fp32,int8",
                 "--quick", "--eval-images", "2", "--calib-images", "4", "--results", str(store), "--out",
                 str(tmp_path / "store"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = dict(sqlite3.connect(store).execute("SELECT precision, variant FROM measurements"))
    assert rows["fp32"] == "CPU, inference precision f32"
    assert "INT8 graph: " in rows["int8"] and "tried NNCF" in rows["int8"] and "segedge x86" in rows["int8"]


# crash isolation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, message", [
    ("segfault", r"crashed \(SIGSEGV\)"),
    ("abort", r"crashed \(SIGABRT\)"),
    ("error", "RuntimeError: the runtime said no"),
])
def test_a_native_crash_in_the_probe_is_an_error_not_the_end(mode, message, tiny_onnx, monkeypatch):
    monkeypatch.setenv("SEGEDGE_TEST_CRASH", mode)
    with pytest.raises(SegedgeError, match=message):
        probe("tests.fixtures.crashing_backend:CRASHING", tiny_onnx, None, (64, 64), "fp32", 1, {})


def test_a_hang_is_stopped_at_the_timeout(tiny_onnx, monkeypatch):
    monkeypatch.setenv("SEGEDGE_TEST_CRASH", "hang")
    with pytest.raises(SegedgeError, match="hung for 3 s"):
        probe("tests.fixtures.crashing_backend:CRASHING", tiny_onnx, None, (64, 64), "fp32", 1, {}, timeout_s=3)


def test_a_healthy_backend_passes_the_probe(tiny_onnx):
    probe("openvino", tiny_onnx, None, (64, 64), "fp32", 1, {})  # no exception


def test_nncf_keeps_float_exactly_the_layers_it_is_told_to(tiny_onnx, tmp_path):
    """The search and the classifier rule name ONNX layers; NNCF quantizes OpenVINO's model, whose ops are named
    after the ONNX nodes (plus suffixes): each named layer must come out float, and only those."""
    pytest.importorskip("nncf", reason="NNCF is not installed")
    from segedge.graph.int8 import Int8Config, NncfGraph, calibrated_graph

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 64, 64), dtype=np.float32) for _ in range(4)]
    config = Int8Config(scheme="openvino", calib_images=4, quantize_classifier=True)
    with calibrated_graph(tiny_onnx, lambda: iter(arrays), config, available_images=4) as graph:
        assert isinstance(graph, NncfGraph) and graph.suffix == ".xml"
        layers = [layer for layer in graph.layers() if layer.op_type in ("Conv", "ConvTranspose")]
        # a ConvTranspose first: OpenVINO names its op apart from the ONNX node
        convs = sorted((layer.name for layer in layers), key=lambda name: dict(
            (layer.name, layer.op_type) for layer in layers)[name] != "ConvTranspose")
        full = graph.quantize(tmp_path / "full.xml")
        one_float = graph.quantize(tmp_path / "minus.xml", exclude=convs[:1])
        only_one = graph.quantize(tmp_path / "only.xml", only=convs[:1])
        graph.write_float(tmp_path / "float.xml")
        graph.copy(tmp_path / "minus.xml", tmp_path / "copied.xml")
        assert graph.counts(tmp_path / "copied.xml") == {k: one_float[k] for k in ("fake_quantize_nodes", "float_convs_left")}
        float_counts = graph.counts(tmp_path / "float.xml")
    assert full["float_convs_left"] == 0 and full["fake_quantize_nodes"] > 0
    assert one_float["float_convs_left"] == 1
    assert only_one["float_convs_left"] == len(convs) - 1
    assert float_counts == {"fake_quantize_nodes": 0, "float_convs_left": len(convs)}
    for name in ("full", "minus", "only", "float"):  # an IR is its .xml and its .bin, nothing left beside them
        assert (tmp_path / f"{name}.bin").is_file()
    assert not list(tmp_path.glob(".*"))
    x = arrays[0]
    with ovb.OpenVinoRunner(tmp_path / "float.xml", threads=1) as floated, \
            OnnxRuntimeRunner(tiny_onnx, threads=1) as reference:
        np.testing.assert_allclose(floated.infer(x), reference.infer(x), atol=1e-4)
