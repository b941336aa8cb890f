"""OpenVINO runner and backend: segedge's ONNX files compiled by OpenVINO for a CPU (or an Intel GPU/NPU).

Why a second CPU runtime: on x86 CPUs OpenVINO is what a user would pick instead of ONNX Runtime, and it runs
bf16 (AVX-512 BF16, AMX) and NNCF's INT8 placement, which ONNX Runtime's CPU provider does not. Precisions:

- fp32: the FP32 graph with ``INFERENCE_PRECISION_HINT`` f32 (OpenVINO's CPU default on bf16-capable CPUs
  is bf16: left implicit, an "fp32" row would silently be a bf16 one);
- bf16: the FP32 graph with the hint bf16; refused on a CPU without bf16 instead of silently running f32;
- int8: segedge's own Q/DQ ONNX graph or NNCF's IR (FakeQuantize), float layers in bf16 where the CPU has it, else f32.

The compiled model is cached in ``openvino-cache/`` beside the artifact (OpenVINO's own ``CACHE_DIR``: keyed
by the model and the compile settings, so an edited graph or another hint never loads a stale blob).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segedge.backends.base import Backend, Runner, TensorSpec
from segedge.core.errors import ArtifactError, RunnerInputError

HINTS = {"fp32": "f32", "bf16": "bf16"}
_TYPES = {"f32": np.float32, "f16": np.float16, "u8": np.uint8}
INSTALL = 'pip install "segedge[openvino]"'


def _openvino():
    try:
        import openvino
    except ImportError:
        raise RunnerInputError(f"the openvino backend needs OpenVINO: {INSTALL}") from None
    return openvino


def capabilities(device: str = "CPU") -> tuple[str, ...]:
    """What ``device`` computes in, as OpenVINO reports it (e.g. FP32, BF16, INT8); () when it is absent."""
    try:
        ov = _openvino()
        core = ov.Core()
        if device not in core.available_devices:
            return ()
        return tuple(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a broken install reports nothing rather than failing a `segedge profiles` listing
        return ()


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, model_path: str | Path, threads: int | None = None, device: str = "CPU",
                 inference_precision: str = "f32", cache_dir: str | Path | None = None) -> None:
        super().__init__(threads)
        if inference_precision not in ("f32", "bf16", "f16"):
            raise RunnerInputError(f"inference_precision must be f32, bf16 or f16, got {inference_precision!r}")
        self.model_path = Path(model_path)
        self.device = device
        self.inference_precision = inference_precision
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.request = None

    def _activate(self) -> None:
        ov = _openvino()
        if not self.model_path.is_file():
            raise ArtifactError(f"model file {self.model_path} does not exist")
        core = ov.Core()
        if self.device not in core.available_devices:
            raise RunnerInputError(f"OpenVINO here has no {self.device} device (available: "
                                   f"{', '.join(core.available_devices)})")
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        config = {"INFERENCE_PRECISION_HINT": self.inference_precision, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": "1"}
        if self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        try:
            model = core.read_model(str(self.model_path))
            compiled = core.compile_model(model, self.device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ context
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"OpenVINO cannot compile {self.model_path.name} for {self.device}: {first}") from None
        if len(compiled.inputs) != 1:
            raise ArtifactError(f"{self.model_path} has {len(compiled.inputs)} inputs; segedge expects one image input")
        port = compiled.inputs[0]
        kind = port.get_element_type().get_type_name()
        if kind not in _TYPES:
            raise ArtifactError(f"{self.model_path}: input type {kind} is not supported")
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        self.input_spec = TensorSpec(port.get_any_name(), shape, np.dtype(_TYPES[kind]))
        self.request = compiled.create_infer_request()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        # the output tensor's memory is reused by the next inference: hand back a copy
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def _deactivate(self) -> None:
        self.request = None


class OpenVinoBackend(Backend):
    """OpenVINO on ``profile.device`` (CPU by default): fp32 and bf16 from the FP32 graph, int8 from a Q/DQ graph."""

    name = "openvino"
    precisions = ("fp32", "bf16", "int8")
    description = "OpenVINO (CPU, or an Intel GPU/NPU)"

    def int8_scheme(self, machine) -> str:
        return "openvino"  # NNCF's placement; bench also times segedge's own (x86/arm) graph: int8_candidates

    def int8_candidates(self, machine) -> tuple[str, ...]:
        """INT8 graphs a row tries, fastest within the tolerance kept: NNCF's, then segedge's own for the CPU."""
        from segedge.graph.int8 import cpu_int8_scheme

        return ("openvino", cpu_int8_scheme(machine))

    @staticmethod
    def device(profile) -> str:
        return (getattr(profile, "device", "") or "CPU") if profile is not None else "CPU"

    def lacks(self, profile, machine) -> str:
        try:
            ov = _openvino()
        except RunnerInputError:
            return f"OpenVINO ({INSTALL})"
        device = self.device(profile)
        try:
            available = ov.Core().available_devices
        except Exception as exc:
            return f"a working OpenVINO ({type(exc).__name__}: {exc})"
        if not any(d == device or d.startswith(device + ".") for d in available):
            return f"an OpenVINO {device} device (OpenVINO here sees: {', '.join(available) or 'none'})"
        return ""

    def refuses(self, precision: str, profile, machine) -> str:
        refusal = super().refuses(precision, profile, machine)
        if refusal or precision != "bf16":
            return refusal
        device = self.device(profile)
        if "BF16" not in capabilities(device):
            flags = ", ".join(getattr(machine, "cpu_flags", ()) or ()) or "none listed"
            return (f"OpenVINO reports no bf16 on this {device} (it needs AVX-512 BF16 or AMX; CPU flags: {flags}); "
                    f"a bf16 row here would silently run f32")
        return ""

    def float_precision(self, profile) -> str:
        """The hint for a Q/DQ graph: its float layers run bf16 where the device has it (the fast fallback)."""
        return "bf16" if "BF16" in capabilities(self.device(profile)) else "f32"

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict) -> OpenVinoRunner:
        hint = HINTS.get(precision) or self.float_precision(profile)
        return OpenVinoRunner(prepared, threads=threads, device=self.device(profile), inference_precision=hint,
                              cache_dir=Path(prepared).parent / "openvino-cache")

    def variant(self, precision: str, profile) -> str:
        """How a row ran, in words stored with it."""
        hint = HINTS.get(precision) or self.float_precision(profile)
        return f"{self.device(profile)}, inference precision {hint}"


OPENVINO = OpenVinoBackend()
