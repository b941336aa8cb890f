"""TensorRT: engines built from segedge's ONNX artifacts for this GPU and TensorRT version (``build``), run
with trtexec-style timing (``runner``), and a static check of what a profile's parser would refuse
(``check``, which runs on any CPU). ``tensorrt`` itself is imported only when an engine is built or run.
"""

from __future__ import annotations

from pathlib import Path

from segedge.backends.base import Backend
from segedge.backends.profiles import version_in_range


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "NVIDIA TensorRT engine on the GPU (explicit Q/DQ INT8)"

    def int8_scheme(self, machine) -> str:
        return "tensorrt"  # int8 only, zero points 0, float biases

    def lacks(self, profile, machine) -> str:
        hint = "JetPack ships it" if profile.requires.jetson_module else "pip install 'segedge[tensorrt]'"
        if machine.tensorrt is None:
            return f"TensorRT {profile.tensorrt.versions} ({hint})"
        if not version_in_range(machine.tensorrt, profile.tensorrt.versions):
            return f"TensorRT {profile.tensorrt.versions} (found {machine.tensorrt})"
        return "" if machine.has_cuda_gpu else "a CUDA GPU for TensorRT"

    def prepare(self, artifact: Path, profile, input_size: tuple[int, int]) -> Path:
        """Build (or reuse) the engine for this GPU and TensorRT version; batch-dynamic profiles get one
        optimization profile over their batch sizes."""
        from segedge.backends.tensorrt.build import EngineSettings, engine_from_onnx

        shapes = {}
        if max(profile.batch_sizes) > 1:
            h, w = input_size
            top = max(profile.batch_sizes)
            shapes = dict(min_shape=(1, 3, h, w), opt_shape=(top, 3, h, w), max_shape=(top, 3, h, w))
        settings = EngineSettings(workspace_mb=profile.tensorrt.workspace_mb, dla_core=profile.tensorrt.dla_core,
                                  builder_optimization_level=profile.tensorrt.builder_optimization_level, **shapes)
        return engine_from_onnx(artifact, settings, timing_cache=artifact.parent / "timing.cache")

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict):
        from segedge.backends.tensorrt.runner import TensorRTRunner

        return TensorRTRunner(prepared, cuda_graph=True)

    def check(self, onnx: Path, profile):
        from segedge.backends.tensorrt.check import check_onnx

        return check_onnx(onnx, profile)


TENSORRT = TensorRTBackend()
