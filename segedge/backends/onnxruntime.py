"""ONNX Runtime runner (CPU by default; any execution provider the installed build offers)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from segedge.core.errors import ArtifactError, RunnerInputError
from segedge.backends.base import Backend, Runner, TensorSpec

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        spin_wait: bool = False,
    ) -> None:
        super().__init__(threads)
        self.model_path = Path(model_path)
        self.providers = list(providers)
        # onnxruntime's idle worker threads spin by default, keeping cores busy after a run: measured here, that
        # slowed the *next* session timed on the same cores by up to 45 %. Off, a lone small model (9 ms) runs
        # ~6 % slower, a 512x1024 BiSeNet no slower: spin_wait=True for a device that runs one session alone
        self.spin_wait = spin_wait
        self.session = None
        self.output_name = ""

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise ArtifactError(f"ONNX file {self.model_path} does not exist")
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise RunnerInputError(
                f"onnxruntime here lacks {', '.join(missing)} (available: {', '.join(ort.get_available_providers())})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin_wait else "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"onnxruntime cannot load {self.model_path}: {first_line}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.model_path} has {len(inputs)} inputs; segedge expects one image input")
        meta = inputs[0]
        dtype = _ORT_TYPES.get(meta.type)
        if dtype is None:
            raise ArtifactError(f"{self.model_path}: input type {meta.type} is not supported")
        shape = tuple(d if isinstance(d, int) else None for d in meta.shape)
        self.input_spec = TensorSpec(meta.name, shape, np.dtype(dtype))
        self.output_name = self.session.get_outputs()[0].name

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_spec.name: batch})[0]

    def _deactivate(self) -> None:
        self.session = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU: runs segedge's ONNX files as they are (no prepare step)."""

    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    # not probed in a child: the export's parity check has already loaded and run this very file with
    # onnxruntime's CPU provider in-process, so a crash would have shown there (a probe costs a second load)
    isolate = False
    default_providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def int8_scheme(self, machine) -> str:
        # x86: u8 activations feed the u8·s8 VNNI kernels (7-bit weights without VNNI); ARM64: s8 symmetric for
        # the signed SDOT/SMMLA ones
        from segedge.graph.int8 import cpu_int8_scheme

        return cpu_int8_scheme(machine)

    def providers(self, profile) -> tuple[str, ...]:
        return (tuple(profile.providers) if profile is not None else ()) or self.default_providers

    def lacks(self, profile, machine) -> str:
        absent = [p for p in self.providers(profile) if p not in machine.ort_providers]
        return f"onnxruntime with {', '.join(absent)}" if absent else ""

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(prepared, threads=threads, providers=self.providers(profile))


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    """ONNX Runtime's CUDA execution provider (onnxruntime-gpu), CPU as the fallback for ops CUDA lacks."""

    name = "onnxruntime-cuda"
    description = "ONNX Runtime, CUDA execution provider"
    default_providers = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def int8_scheme(self, machine) -> str:
        return "tensorrt"  # symmetric s8: what the CUDA provider's Q/DQ kernels take

    isolate = True  # the CUDA provider's kernels were not part of the export's CPU parity check

    def providers(self, profile) -> tuple[str, ...]:
        return self.default_providers

    def lacks(self, profile, machine) -> str:
        ok = "CUDAExecutionProvider" in machine.ort_providers and machine.has_cuda_gpu
        return "" if ok else "onnxruntime's CUDAExecutionProvider (pip install onnxruntime-gpu) on a CUDA GPU"


CPU = OnnxRuntimeBackend()
CUDA = OnnxRuntimeCudaBackend()
