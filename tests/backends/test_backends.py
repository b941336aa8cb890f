"""The backend registry: every backend name resolves to one Backend object, and what a machine lacks, which
INT8 scheme it gets and which runner it builds come from that object."""

import warnings

import pytest

from segedge.backends.profiles import load_profile, load_profile_file
from segedge.backends.registry import backend_names, get_backend
from segedge.core.errors import ProfileError, SegedgeError
from segedge.core.hardware import Machine
from segedge.core.precision import PRECISIONS
from segedge.graph.int8 import INT8_SCHEMES

X86 = Machine(arch="x86_64", cpu="Test CPU", cores=2, os="Linux", ort_providers=("CPUExecutionProvider",))
ARM = Machine(arch="aarch64", cpu="Neoverse", cores=4, os="Linux", ort_providers=("CPUExecutionProvider",))


@pytest.mark.parametrize("name", backend_names())
def test_every_registered_name_resolves_to_its_backend(name):
    backend = get_backend(name)
    assert backend.name == name
    assert set(backend.precisions) <= set(PRECISIONS)
    assert backend.int8_scheme(X86) in INT8_SCHEMES
    assert backend.int8_candidates(X86)[0] == backend.int8_scheme(X86)
    assert set(backend.int8_candidates(ARM)) <= set(INT8_SCHEMES)


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(ProfileError, match="backend 'snpe' is not one of onnxruntime, onnxruntime-cuda, tensorrt, torch-cuda, openvino"):
        get_backend("snpe")


def test_cpu_profile_benches_the_arm_scheme_on_arm_and_x86_on_x86():
    cpu = load_profile("cpu")
    assert cpu.int8_scheme == ""  # left to the backend
    assert cpu.int8_scheme_on("onnxruntime", X86) == "x86"
    assert cpu.int8_scheme_on("onnxruntime", ARM) == "arm"


@pytest.mark.parametrize("flags, scheme", [
    (("avx2", "avx512f", "avx512_vnni"), "x86"), (("avx2", "avx_vnni"), "x86"), (("avx2", "amx_int8"), "x86"),
    (("avx2",), "x86-novnni"), (("avx2", "avx512f"), "x86-novnni"),  # AVX-512 without VNNI saturates as AVX2 does
    ((), "x86"),  # flags unknown: nothing says the CPU lacks VNNI
])
def test_x86_without_vnni_gets_seven_bit_weights_in_onnxruntime_and_openvinos_own_graph(flags, scheme):
    from dataclasses import replace

    machine = replace(X86, cpu_flags=flags)
    assert load_profile("cpu").int8_scheme_on("onnxruntime", machine) == scheme
    assert get_backend("openvino").int8_candidates(machine) == ("openvino", scheme)
    assert INT8_SCHEMES[scheme].reduce_range is (scheme == "x86-novnni")


def test_gpu_profiles_name_the_tensorrt_scheme():
    for name in ("desktop-gpu", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"):
        assert load_profile(name).int8_scheme_on("tensorrt", X86) == "tensorrt"


BASE = 'name = "t"\ndescription = "d"\nbackend = "onnxruntime"\nprecisions = ["fp32"]\ninput_size = [64, 64]\n'


@pytest.mark.parametrize("old, scheme", [("u8", "x86"), ("s8", "tensorrt")])
def test_the_older_int8_activation_key_loads_with_a_deprecation_message(tmp_path, old, scheme):
    path = tmp_path / "p.toml"
    path.write_text(BASE + f'int8_activation = "{old}"\n')
    with pytest.warns(FutureWarning, match=f'int8_activation is deprecated; write int8_scheme = "{scheme}"'):
        profile = load_profile_file(path)
    assert profile.int8_scheme == scheme


def test_a_bad_int8_scheme_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(BASE + 'int8_scheme = "avx"\n')
    with pytest.raises(ProfileError, match="int8_scheme must be one of x86, x86-novnni, arm, tensorrt"):
        load_profile_file(path)


def test_shipped_profiles_use_no_deprecated_key():
    from segedge.backends.profiles import list_profiles

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list_profiles()


def test_lacks_comes_from_the_backend():
    cpu = load_profile("cpu")
    assert get_backend("onnxruntime").lacks(cpu, X86) == ""
    assert "CUDAExecutionProvider" in get_backend("onnxruntime-cuda").lacks(cpu, X86)
    assert get_backend("torch-cuda").lacks(cpu, X86) == "a CUDA build of torch on a CUDA GPU"


def test_onnxruntime_backend_builds_its_runner_without_preparing(tmp_path):
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    backend, cpu = get_backend("onnxruntime"), load_profile("cpu")
    onnx = tmp_path / "m.onnx"
    assert backend.prepare(onnx, cpu, (64, 64)) == onnx
    runner = backend.runner(onnx, precision="fp32", threads=1, profile=cpu, manifest={})
    assert isinstance(runner, OnnxRuntimeRunner) and runner.providers == ["CPUExecutionProvider"]


def test_torch_cuda_refuses_int8_in_words():
    with pytest.raises(SegedgeError, match="torch CUDA has no INT8 path"):
        get_backend("torch-cuda").runner(None, precision="int8", threads=1, profile=None, manifest={})
