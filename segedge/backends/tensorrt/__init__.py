"""TensorRT: engines built from segedge's ONNX artifacts for this GPU and TensorRT version (``build``), run
with trtexec-style timing (``runner``), and a static check of what a profile's parser would refuse
(``check``, which runs on any CPU). ``tensorrt`` itself is imported only when an engine is built or run.

bf16 starts from the FP32 artifact like OpenVINO's and torch's: a strongly typed build (TensorRT 10 on) takes
precision from the graph's types, so ``prepare`` builds from a cached bf16 copy of the graph
(:func:`segedge.graph.bf16.cached_bf16`); a weakly typed one (TensorRT 9.x) sets the BF16 builder flag on the
FP32 graph instead. Either needs a GPU of compute capability 8.0 or later (Ampere, Orin).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from segedge.backends.base import Backend
from segedge.backends.profiles import version_in_range


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "NVIDIA TensorRT engine on the GPU (explicit Q/DQ INT8)"
    precisions = ("fp32", "fp16", "int8", "bf16")

    def int8_scheme(self, machine) -> str:
        return "tensorrt"  # int8 only, zero points 0, float biases

    def lacks(self, profile, machine) -> str:
        hint = "JetPack ships it" if profile.requires.jetson_module else "pip install 'segedge[tensorrt]'"
        if machine.tensorrt is None:
            return f"TensorRT {profile.tensorrt.versions} ({hint})"
        if not version_in_range(machine.tensorrt, profile.tensorrt.versions):
            return f"TensorRT {profile.tensorrt.versions} (found {machine.tensorrt})"
        return "" if machine.has_cuda_gpu else "a CUDA GPU for TensorRT"

    def refuses(self, precision: str, profile, machine) -> str:
        """bf16 needs TensorRT 9.0 or later and a GPU of compute capability 8.0 or later, and no DLA;
        ``machine`` None (not detected) leaves the build to say what is missing."""
        refusal = super().refuses(precision, profile, machine)
        if refusal or precision != "bf16" or machine is None:
            return refusal
        missing = []
        if machine.tensorrt is None:
            missing.append("TensorRT 9.0 or later (none is installed)")
        elif _version(machine.tensorrt) < (9, 0):
            missing.append(f"TensorRT 9.0 or later (this machine has {machine.tensorrt}, which has no bf16)")
        cc = machine.compute_capability
        if not machine.has_cuda_gpu:
            missing.append("a CUDA GPU of compute capability 8.0 or later (none is visible)")
        elif cc and _version(cc) < (8, 0):
            gpu = machine.gpus[0] if machine.gpus else "this GPU"
            missing.append(f"a GPU of compute capability 8.0 or later, Ampere or Orin ({gpu} is {cc}, which has no bf16)")
        if profile is not None and profile.tensorrt.dla_core >= 0:
            missing.append(f"a GPU build: profile {profile.name} builds for DLA core {profile.tensorrt.dla_core}, "
                           "and the DLA runs fp16 and int8 only")
        return f"TensorRT bf16 needs {'; '.join(missing)}" if missing else ""

    def variant(self, precision: str, profile) -> str:
        """Strongly typed (the graph's types are the engine's) or weakly typed (builder flags); for bf16, which
        graph the engine was built from."""
        from segedge.backends.tensorrt.build import TensorRTUnavailable, builds_strongly_typed

        try:
            strongly = builds_strongly_typed()
        except TensorRTUnavailable:
            return ""
        if precision == "bf16":
            return ("bf16 ONNX graph (FP32 inputs/outputs), strongly typed" if strongly
                    else "FP32 graph with the BF16 builder flag, weakly typed")
        return f"{precision} ONNX graph, {'strongly typed' if strongly else 'weakly typed (builder flags)'}"

    def prepare(self, artifact: Path, profile, input_size: tuple[int, int], precision: str = "fp32") -> Path:
        """Build (or reuse) the engine for this GPU and TensorRT version; batch-dynamic profiles get one
        optimization profile over their batch sizes. bf16 is built from the FP32 artifact: its bf16 copy where
        the build is strongly typed, the FP32 graph with the BF16 flag where it is not."""
        from segedge.backends.tensorrt.build import EngineSettings, builds_strongly_typed, engine_from_onnx

        shapes = {}
        if max(profile.batch_sizes) > 1:
            h, w = input_size
            top = max(profile.batch_sizes)
            shapes = dict(min_shape=(1, 3, h, w), opt_shape=(top, 3, h, w), max_shape=(top, 3, h, w))
        settings = EngineSettings(workspace_mb=profile.tensorrt.workspace_mb, dla_core=profile.tensorrt.dla_core,
                                  builder_optimization_level=profile.tensorrt.builder_optimization_level, **shapes)
        source = artifact
        if precision == "bf16":
            if builds_strongly_typed(settings):
                from segedge.graph.bf16 import cached_bf16

                source = cached_bf16(artifact)
            else:
                settings = replace(settings, bf16=True)
        return engine_from_onnx(source, settings, timing_cache=artifact.parent / "timing.cache")

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict):
        from segedge.backends.tensorrt.runner import TensorRTRunner

        return TensorRTRunner(prepared, cuda_graph=True)

    def check(self, onnx: Path, profile):
        from segedge.backends.tensorrt.check import check_onnx

        return check_onnx(onnx, profile)


def _version(text: str) -> tuple[int, ...]:
    """'10.3.0' -> (10, 3, 0), '8.7' -> (8, 7), '10.0.0b6' -> (10, 0, 0): the leading number of each part."""
    parts = []
    for part in text.split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


TENSORRT = TensorRTBackend()
