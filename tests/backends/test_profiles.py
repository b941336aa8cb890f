import pytest

from segedge.core.errors import ProfileError
from segedge.core.hardware import Machine
from segedge.backends.profiles import list_profiles, load_profile, load_profile_file, require_runnable, version_in_range

X86_CPU = Machine(arch="x86_64", cpu="Test CPU", cores=2, os="Linux", ort_providers=("CPUExecutionProvider",))
ORIN_NANO = Machine(
    arch="aarch64", cpu="ARMv8", cores=6, os="Linux", gpus=("Orin",), tensorrt="8.6.2",
    ort_providers=("CPUExecutionProvider",), torch_cuda=True, jetson_model="NVIDIA Jetson Orin Nano Developer Kit",
)
GPU_NO_TRT = Machine(arch="x86_64", cpu="Xeon", cores=16, os="Linux", gpus=("NVIDIA H100",),
                     ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))


def test_every_shipped_profile_loads():
    names = {p.name for p in list_profiles()}
    assert {"cpu", "desktop-gpu", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"} <= names


def test_cpu_profile_runs_on_a_plain_cpu():
    assert require_runnable(load_profile("cpu"), X86_CPU) == "onnxruntime"


def test_jetson_profile_refusal_names_what_is_missing():
    with pytest.raises(ProfileError) as err:
        require_runnable(load_profile("jetson-orin-nano"), X86_CPU, list_profiles())
    message = str(err.value)
    for needle in ("cannot run here", "an aarch64 CPU (this machine is x86_64)", "a Jetson Orin Nano",
                   "an NVIDIA CUDA GPU", "TensorRT >=8.6,<11 (JetPack ships it)", "this machine can run: cpu"):
        assert needle in message


def test_generic_jetson_picks_the_detected_module():
    assert load_profile("jetson", ORIN_NANO).name == "jetson-orin-nano"
    assert require_runnable(load_profile("jetson", ORIN_NANO), ORIN_NANO) == "tensorrt"


def test_generic_jetson_elsewhere_is_an_honest_refusal():
    with pytest.raises(ProfileError, match=r"this machine is not a Jetson \(x86_64 Test CPU .*`--profile cpu` works"):
        load_profile("jetson", X86_CPU)


def test_desktop_gpu_falls_back_to_onnxruntime_cuda_without_tensorrt():
    assert require_runnable(load_profile("desktop-gpu"), GPU_NO_TRT) == "onnxruntime-cuda"


def test_tensorrt_version_out_of_range_is_named():
    old = Machine(**{**ORIN_NANO.__dict__, "tensorrt": "8.5.2"})
    assert "TensorRT >=8.6,<11 (found 8.5.2)" in "; ".join(load_profile("jetson-orin-nano").missing(old))


@pytest.mark.parametrize("version, spec, ok", [("8.6.1", ">=8.6,<11", True), ("10.3.0", ">=8.6,<11", True),
                                               ("11.0", ">=8.6,<11", False), ("8.5.2", ">=8.6", False)])
def test_version_ranges(version, spec, ok):
    assert version_in_range(version, spec) is ok


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ProfileError, match="unknown profile 'jetson-nano'; available: cpu, desktop-gpu"):
        load_profile("jetson-nano")


BASE = 'name = "t"\ndescription = "d"\nbackend = "onnxruntime"\nprecisions = ["fp32"]\ninput_size = [64, 64]\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "treads = 2\n", "unknown key 'treads'"),
        (BASE + "[tensorrt]\nworkspace = 1\n", "unknown key tensorrt.'workspace'"),
        (BASE + "[tolerance]\nint4 = 1.0\n", "unknown key tolerance.'int4'"),
        (BASE.replace('"onnxruntime"', '"snpe"'), "backend 'snpe' is not one of"),
        (BASE.replace('["fp32"]', '["fp8"]'), "precisions must be a non-empty subset"),
        (BASE.replace("[64, 64]", "[64]"), "input_size must be [height, width]"),
        (BASE.replace('name = "t"\n', ""), "missing required key 'name'"),
        ("name = ", "is not valid TOML"),
    ],
)
def test_malformed_profiles_are_refused(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + 'min_runs = "ten"\n', "min_runs must be an integer, not 'ten'"),
        (BASE + '[tolerance]\nfp16 = "half"\n', "tolerance.fp16 must be a number, not 'half'"),
        (BASE + '[requires]\narch = "aarch64"\n', "requires.arch must be a list of strings, not 'aarch64'"),
        (BASE + "min_seconds = true\n", "min_seconds must be a number, not True"),
        (BASE + "tensorrt = 3\n", "tensorrt must be a table"),
        (BASE.replace("[64, 64]", '["64", "64"]'), "input_size must be a list of integers"),
    ],
)
def test_profile_value_types_are_checked_when_loaded(tmp_path, text, message):
    """A wrong type used to pass loading and fail later: a traceback at `min_runs`, or after a row was measured."""
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert message in str(err.value)


def test_camera_size_is_checked(tmp_path):
    base = 'name = "t"\ndescription = "d"\nbackend = "onnxruntime"\nprecisions = ["fp32"]\ninput_size = [64, 64]\n'
    path = tmp_path / "p.toml"
    path.write_text(base + "camera_size = [1080]\n")
    with pytest.raises(ProfileError, match="camera_size must be \\[height, width\\]"):
        load_profile_file(path)
    path.write_text(base + 'camera_size = ["1080p"]\n')
    with pytest.raises(ProfileError, match="camera_size must be a list of integers"):
        load_profile_file(path)
    path.write_text(base + "camera_size = [1080, 1920]\n")
    assert load_profile_file(path).camera_size == (1080, 1920)


def test_a_profile_that_is_not_utf8_is_named_in_one_line(tmp_path):
    """A profile saved as Latin-1 used to end in a UnicodeDecodeError traceback (and read_text used the locale's
    encoding, where TOML is always UTF-8)."""
    path = tmp_path / "cafe.toml"
    path.write_bytes(BASE.replace('"d"', '"caf\xe9 camera"').encode("latin-1"))
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    message = str(err.value)
    assert message.startswith(f"profile {path} is not UTF-8 text") and "save it as UTF-8" in message
    assert len(message.splitlines()) == 1
    path.write_text(BASE.replace('"d"', '"café camera"'), encoding="utf-8")
    assert load_profile_file(path).description == "café camera"


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "[tolerance]\nint8 = nan\n", "profile p.toml: tolerance.int8 must be a finite number, not nan"),
        (BASE + "[tolerance]\nfp16 = inf\n", "profile p.toml: tolerance.fp16 must be a finite number, not inf"),
        (BASE + "[tolerance]\nint8 = -0.5\n", "profile p.toml: tolerance.int8 must not be negative, not -0.5"),
        (BASE + "min_seconds = nan\n", "profile p.toml: min_seconds must be a finite number, not nan"),
        (BASE + "min_seconds = -inf\n", "profile p.toml: min_seconds must be a finite number, not -inf"),
        (BASE + "min_seconds = -1.0\n", "profile p.toml: min_seconds must not be negative, not -1.0"),
        (BASE + "min_runs = 0\n", "profile p.toml: min_runs must be at least 1, not 0"),
        (BASE + "threads = -1\n", "profile p.toml: threads must not be negative, not -1"),
        (BASE + "warmup_runs = -2\n", "profile p.toml: warmup_runs must not be negative, not -2"),
        (BASE + "[tensorrt]\nworkspace_mb = 0\n", "profile p.toml: tensorrt.workspace_mb must be at least 1, not 0"),
        (BASE + "[tensorrt]\nbuilder_optimization_level = -1\n",
         "profile p.toml: tensorrt.builder_optimization_level must not be negative, not -1"),
        (BASE + "[tensorrt]\ndla_core = -2\n", "profile p.toml: tensorrt.dla_core must be -1 (no DLA) or a core number, not -2"),
    ],
)
def test_every_number_that_cannot_be_meant_is_refused_by_key_and_file(tmp_path, text, message):
    """`tolerance = nan` passed, so every row compared against NaN; a negative tolerance and `min_seconds = nan` passed
    too; `min_runs = 0` was refused as "must not be negative"."""
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(err.value) == message


def test_zero_is_a_tolerance_and_a_minimum_time(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(BASE + "min_seconds = 0.0\nthreads = 0\nwarmup_runs = 0\n[tolerance]\nint8 = 0.0\n")
    profile = load_profile_file(path)
    assert profile.tolerance["int8"] == 0.0 and profile.min_seconds == 0.0
