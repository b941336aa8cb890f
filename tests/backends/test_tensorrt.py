"""TensorRT and GPU paths. The pure-Python parts (graph precision, cache keys, the portability refusal)
run everywhere; building and running engines needs TensorRT and a CUDA GPU and skips, saying so, where
either is absent."""

import importlib.util
import json

import numpy as np
import pytest

from segedge.backends.tensorrt.build import (
    EngineMeta,
    EngineSettings,
    check_engine_compatible,
    engine_cache_path,
    graph_precision,
    read_meta,
)
from segedge.core.errors import ArtifactError, SegedgeError
from segedge.graph.export import onnx_from_torch
from segedge.graph.fp16 import fp16_from_onnx
from segedge.models.registry import get_spec


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not (HAS_TRT and _cuda()), reason="needs TensorRT and a CUDA GPU (pip install 'segedge[tensorrt]' on an NVIDIA machine)")
needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU and a CUDA build of torch")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    spec = get_spec("unet")
    module = spec.build(num_classes=4, width=0.125)
    root = tmp_path_factory.mktemp("trt")
    fp32 = root / "model.onnx"
    onnx_from_torch(module, spec, fp32, (64, 64))
    fp16 = root / "model.fp16.onnx"
    fp16_from_onnx(fp32, fp16)
    return module, fp32, fp16


def test_graph_precision_is_read_from_the_graph(tiny_onnx, tmp_path):
    _, fp32, fp16 = tiny_onnx
    assert graph_precision(fp32) == "fp32"
    assert graph_precision(fp16) == "fp16"


def test_engine_cache_key_changes_with_gpu_version_and_settings(tiny_onnx):
    _, fp32, _ = tiny_onnx
    base = engine_cache_path(fp32, "10.3.0", "NVIDIA H100", "9.0", EngineSettings())
    assert base.name.startswith("model.trt10.3.0.nvidia-h100.") and base.suffix == ".engine"
    assert base == engine_cache_path(fp32, "10.3.0", "NVIDIA H100", "9.0", EngineSettings())
    assert base != engine_cache_path(fp32, "8.6.2", "NVIDIA H100", "9.0", EngineSettings())
    assert base != engine_cache_path(fp32, "10.3.0", "Orin", "8.7", EngineSettings())
    assert base != engine_cache_path(fp32, "10.3.0", "NVIDIA H100", "9.0", EngineSettings(workspace_mb=2048))


def test_an_engine_from_another_gpu_or_version_is_refused_in_words(tmp_path):
    meta = EngineMeta("8.6.2", "Orin", "8.7", "ab" * 32, "int8")
    check_engine_compatible(meta, "8.6.2", "Orin", "8.7", tmp_path / "m.engine")
    with pytest.raises(ArtifactError) as err:
        check_engine_compatible(meta, "10.3.0", "NVIDIA RTX 4090", "8.9", tmp_path / "m.engine")
    message = str(err.value)
    assert "built with TensorRT 8.6.2, this machine has 10.3.0" in message
    assert "built for Orin (compute capability 8.7), this machine has NVIDIA RTX 4090 (8.9)" in message
    assert "not portable" in message


def test_engine_without_or_with_corrupt_sidecar_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="has no m.engine.json"):
        read_meta(engine)
    (tmp_path / "m.engine.json").write_text("{")
    with pytest.raises(ArtifactError, match="is corrupt"):
        read_meta(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"tensorrt": "10.0", "gpu": "g", "compute_capability": "9.0",
                                                         "onnx_sha256": "0", "graph_precision": "fp32"}))
    assert read_meta(engine).tensorrt == "10.0"


@pytest.mark.parametrize(
    "settings, message",
    [
        (EngineSettings(opt_shape=(1, 3, 64, 64)), "min, opt and max shapes together"),
        (EngineSettings(min_shape=(1, 3, 128, 64), opt_shape=(1, 3, 64, 64), max_shape=(1, 3, 256, 256)), "min ≤ opt ≤ max"),
        (EngineSettings(workspace_mb=0), "workspace_mb"),
    ],
)
def test_engine_settings_are_validated(settings, message):
    with pytest.raises(SegedgeError, match=message):
        settings.validate()


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is absent")
def test_building_without_tensorrt_says_how_to_get_it(tiny_onnx):
    from segedge.backends.tensorrt.build import TensorRTUnavailable, engine_from_onnx

    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed: on a Jetson it comes with JetPack"):
        engine_from_onnx(tiny_onnx[1])


@needs_trt
@pytest.mark.parametrize("which", ["fp32", "fp16"])
def test_tensorrt_engine_matches_onnxruntime(tiny_onnx, tmp_path, which):
    from segedge.backends.tensorrt.build import engine_from_onnx
    from segedge.backends.onnxruntime import OnnxRuntimeRunner
    from segedge.backends.tensorrt.runner import TensorRTRunner

    _, fp32, fp16 = tiny_onnx
    onnx_path = fp32 if which == "fp32" else fp16
    engine = engine_from_onnx(onnx_path, timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").is_file()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(onnx_path) as ort_runner, TensorRTRunner(engine, cuda_graph=True) as trt_runner:
        want = ort_runner.infer(x)
        got = trt_runner.infer(x)
        assert trt_runner.last_gpu_ms > 0 and trt_runner.last_e2e_ms >= trt_runner.last_gpu_ms
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99


@needs_cuda
def test_torch_cuda_fp16_channels_last_matches_cpu(tiny_onnx):
    from segedge.backends.torch import TorchRunner

    module, _, _ = tiny_onnx
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with TorchRunner(module, threads=1) as cpu:
        want = cpu.infer(x)
    import copy

    with TorchRunner(copy.deepcopy(module), device="cuda", half=True, channels_last=True) as gpu:
        got = gpu.infer(x)
        assert gpu.last_gpu_ms > 0
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99


@needs_cuda
def test_onnxruntime_cuda_provider_matches_cpu(tiny_onnx):
    import onnxruntime as ort

    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    _, fp32, _ = tiny_onnx
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(fp32) as cpu, OnnxRuntimeRunner(fp32, providers=("CUDAExecutionProvider",)) as gpu:
        assert np.abs(cpu.infer(x) - gpu.infer(x)).max() < 1e-3


def test_torch_runner_refuses_half_on_cpu(tiny_onnx):
    from segedge.core.errors import RunnerInputError
    from segedge.backends.torch import TorchRunner

    for kwargs in ({"half": True}, {"bf16": True}):
        with pytest.raises(RunnerInputError, match="half and bf16 are for the CUDA runner here"):
            with TorchRunner(tiny_onnx[0], **kwargs):
                pass
    with pytest.raises(RunnerInputError, match="half and bf16 are two precisions"):
        TorchRunner(tiny_onnx[0], half=True, bf16=True)


def test_torch_cuda_refuses_bf16_on_gpus_without_it():
    from segedge.backends.registry import get_backend
    from segedge.core.hardware import Machine

    turing = Machine(arch="x86_64", cpu="c", cores=8, os="Linux", gpus=("T4",), compute_capability="7.5")
    ampere = Machine(arch="x86_64", cpu="c", cores=8, os="Linux", gpus=("A10",), compute_capability="8.6")
    backend = get_backend("torch-cuda")
    assert "compute capability 7.5" in backend.refuses("bf16", None, turing)
    assert backend.refuses("bf16", None, ampere) == ""
    assert backend.refuses("int8", None, ampere).startswith("torch-cuda does not run int8")


# bf16 -------------------------------------------------------------------------------------------------------
def _machine(**kwargs):
    from segedge.core.hardware import Machine

    return Machine(arch="x86_64", cpu="c", cores=8, os="Linux", **kwargs)


def test_tensorrt_runs_bf16_where_it_can_and_says_why_not_elsewhere():
    from types import SimpleNamespace

    from segedge.backends.registry import get_backend

    backend = get_backend("tensorrt")
    assert "bf16" in backend.precisions
    ampere = _machine(gpus=("NVIDIA A10",), compute_capability="8.6", tensorrt="10.3.0")
    assert backend.refuses("bf16", None, ampere) == ""
    assert backend.refuses("bf16", None, _machine(gpus=("Orin",), compute_capability="8.7", tensorrt="9.0.1")) == ""
    assert backend.refuses("bf16", None, None) == ""  # not detected (predict): the build says what is missing
    cases = {
        "TensorRT 9.0 or later (none is installed)": _machine(gpus=("NVIDIA A10",), compute_capability="8.6"),
        "TensorRT 9.0 or later (this machine has 8.6.2, which has no bf16)":
            _machine(gpus=("Orin",), compute_capability="8.7", tensorrt="8.6.2"),
        "a CUDA GPU of compute capability 8.0 or later (none is visible)": _machine(tensorrt="10.3.0"),
        "compute capability 8.0 or later, Ampere or Orin (T4 is 7.5, which has no bf16)":
            _machine(gpus=("T4",), compute_capability="7.5", tensorrt="10.3.0"),
    }
    for reason, machine in cases.items():
        refusal = backend.refuses("bf16", None, machine)
        assert refusal.startswith("TensorRT bf16 needs ") and reason in refusal, refusal
    # a CPU-only machine without TensorRT gets both reasons in one line
    both = backend.refuses("bf16", None, _machine())
    assert "none is installed" in both and "none is visible" in both
    dla = SimpleNamespace(name="orin-dla", tensorrt=SimpleNamespace(dla_core=0))
    assert "the DLA runs fp16 and int8 only" in backend.refuses("bf16", dla, ampere)
    # the other precisions are untouched by these checks
    assert backend.refuses("fp16", None, _machine()) == ""


def test_graph_precision_reads_a_bf16_graph(tiny_onnx, tmp_path):
    from segedge.graph.bf16 import bf16_from_onnx

    bf16 = tmp_path / "model.bf16.onnx"
    bf16_from_onnx(tiny_onnx[1], bf16)
    assert graph_precision(bf16) == "bf16"


def test_the_bf16_builder_flag_keys_its_own_engine(tiny_onnx):
    _, fp32, _ = tiny_onnx
    plain = engine_cache_path(fp32, "9.3.0", "NVIDIA A10", "8.6", EngineSettings(strongly_typed=False))
    flagged = engine_cache_path(fp32, "9.3.0", "NVIDIA A10", "8.6", EngineSettings(strongly_typed=False, bf16=True))
    assert plain != flagged


@pytest.mark.parametrize("strongly_typed", [True, False])
def test_prepare_builds_bf16_from_a_bf16_copy_or_with_the_flag(tiny_onnx, tmp_path, monkeypatch, strongly_typed):
    """The routing, on the CPU (engine_from_onnx replaced): strongly typed builds get the cached bf16 copy of
    the FP32 artifact, weakly typed ones the FP32 graph with EngineSettings.bf16 (BuilderFlag.BF16)."""
    import shutil

    import segedge.backends.tensorrt.build as build
    from segedge.backends.profiles import load_profile
    from segedge.backends.registry import get_backend

    artifact = tmp_path / "model.sim.onnx"
    shutil.copy(tiny_onnx[1], artifact)
    built = {}
    monkeypatch.setattr(build, "builds_strongly_typed", lambda settings=EngineSettings(): strongly_typed)
    monkeypatch.setattr(build, "engine_from_onnx", lambda source, settings, timing_cache=None: built.update(
        source=source, settings=settings) or tmp_path / "model.engine")
    backend = get_backend("tensorrt")
    profile = load_profile("jetson-orin-nano")
    assert backend.prepare(artifact, profile, (64, 64), precision="bf16") == tmp_path / "model.engine"
    if strongly_typed:
        assert built["source"] == tmp_path / "model.bf16.onnx" and graph_precision(built["source"]) == "bf16"
        assert not built["settings"].bf16
    else:
        assert built["source"] == artifact and built["settings"].bf16
        assert not (tmp_path / "model.bf16.onnx").exists()
    backend.prepare(artifact, profile, (64, 64))  # fp32 by default: the artifact as it is, no flag
    assert built["source"] == artifact and not built["settings"].bf16


def _bf16_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)
    except ImportError:
        return False


@pytest.mark.skipif(not (HAS_TRT and _bf16_gpu()), reason="needs TensorRT (9.0 or later) and a GPU with bf16 "
                    "(compute capability 8.0 or later: Ampere, Orin); pip install 'segedge[tensorrt]' on such a machine")
def test_tensorrt_bf16_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    import shutil

    from segedge.backends.onnxruntime import OnnxRuntimeRunner
    from segedge.backends.profiles import load_profile
    from segedge.backends.registry import get_backend
    from segedge.backends.tensorrt.build import builds_strongly_typed, read_meta
    from segedge.backends.tensorrt.runner import TensorRTRunner

    artifact = tmp_path / "model.sim.onnx"
    shutil.copy(tiny_onnx[1], artifact)
    backend = get_backend("tensorrt")
    engine = backend.prepare(artifact, load_profile("jetson-orin-nano"), (64, 64), precision="bf16")
    meta = read_meta(engine)
    if builds_strongly_typed():
        assert meta.graph_precision == "bf16" and (tmp_path / "model.bf16.onnx").is_file()
    else:
        assert meta.graph_precision == "fp32" and meta.settings["bf16"] is True
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(artifact) as ort_runner, TensorRTRunner(engine, cuda_graph=True) as trt_runner:
        want = ort_runner.infer(x)
        got = trt_runner.infer(x)
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.98
