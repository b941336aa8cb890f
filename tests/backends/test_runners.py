import numpy as np
import pytest

from segedge.core.errors import ArtifactError, RunnerInputError
from segedge.graph.export import onnx_from_torch
from segedge.models.registry import get_spec
from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.backends.torch import TorchRunner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    spec = get_spec("unet")
    module = spec.build(num_classes=4, width=0.125)
    path = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    onnx_from_torch(module, spec, path, (64, 64))
    return module, path


def test_onnxruntime_and_torch_agree(tiny):
    module, path = tiny
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(path, threads=1) as ort_runner, TorchRunner(module, threads=1) as torch_runner:
        a = ort_runner.infer(x)
        b = torch_runner.infer({"input": x})
    assert a.shape == b.shape == (1, 4, 64, 64)
    assert np.abs(a - b).max() < 1e-4


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.zeros((1, 3, 64, 64), np.float64), "dtype float64, expected float32"),
        (np.zeros((1, 3, 32, 64), np.float32), "shape 1x3x32x64, expected input: float32[1x3x64x64]"),
        (np.zeros((3, 64, 64), np.float32), "shape 3x64x64"),
        ({"image": np.zeros((1, 3, 64, 64), np.float32)}, "input names ['image'] do not match"),
        ([[1.0]], "must be a numpy array"),
    ],
)
def test_runner_rejects_bad_input_with_a_clear_message(tiny, batch, message):
    _, path = tiny
    with OnnxRuntimeRunner(path, threads=1) as runner:
        with pytest.raises(RunnerInputError) as err:
            runner.infer(batch)
    assert message in str(err.value)


def test_runner_must_be_active(tiny):
    _, path = tiny
    with pytest.raises(RunnerInputError, match="not active"):
        OnnxRuntimeRunner(path).infer(np.zeros((1, 3, 64, 64), np.float32))


def test_thread_count_is_explicit_and_validated(tiny):
    _, path = tiny
    runner = OnnxRuntimeRunner(path, threads=1)
    with runner:
        assert runner.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(RunnerInputError, match="threads must be >= 1"):
        OnnxRuntimeRunner(path, threads=0)


def test_torch_runner_restores_thread_count(tiny):
    import torch

    module, _ = tiny
    before = torch.get_num_threads()
    with TorchRunner(module, threads=1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_missing_and_corrupt_onnx_files_are_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        with OnnxRuntimeRunner(tmp_path / "nope.onnx"):
            pass
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        with OnnxRuntimeRunner(bad):
            pass
