"""PyTorch eager runner: the FP32 reference on the CPU, and torch CUDA (FP16, channels_last) on a GPU.

On CUDA, ``last_gpu_ms`` is the forward's time from CUDA events, as for the TensorRT runner, so the
desktop-gpu profile can compare like with like where TensorRT is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segedge.backends.base import Backend, Runner, TensorSpec
from segedge.core.errors import RunnerInputError, SegedgeError


class TorchRunner(Runner):
    backend = "torch"

    def __init__(
        self,
        module,
        threads: int | None = None,
        input_name: str = "input",
        device: str = "cpu",
        half: bool = False,
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__(threads)
        self.module = module
        self.input_name = input_name
        self.device = device
        self.half = half
        self.bf16 = bf16
        if half and bf16:
            raise RunnerInputError("half and bf16 are two precisions: give one")
        self.channels_last = channels_last
        self.last_gpu_ms: float | None = None
        self._saved_threads: int | None = None

    def _activate(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunnerInputError("TorchRunner on cuda needs a CUDA build of torch and a GPU; none is visible")
        if (self.half or self.bf16) and not self.device.startswith("cuda"):
            raise RunnerInputError("half and bf16 are for the CUDA runner here; on the CPU use OpenVINO's bf16")
        if self.bf16 and not torch.cuda.is_bf16_supported():
            raise RunnerInputError("this GPU has no bf16 (it needs compute capability 8.0 or later)")
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        module = self.module.eval().to(self.device)
        if self.half:
            module = module.half()
        if self.bf16:
            module = module.to(torch.bfloat16)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.input_spec = TensorSpec(self.input_name, (None, 3, None, None), np.dtype(np.float32))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if self.half:
                x = x.half()
            if self.bf16:
                x = x.to(torch.bfloat16)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = self.module(x)
                end.record()
                torch.cuda.synchronize()
                self.last_gpu_ms = start.elapsed_time(end)
            else:
                out = self.module(x)
        if isinstance(out, (tuple, list)):  # a model left in training mode returns aux heads too
            out = out[0]
        return out.float().cpu().numpy()

    def _deactivate(self) -> None:
        import torch

        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)


class TorchCudaBackend(Backend):
    """Eager torch on a CUDA GPU (FP16 by ``half``, channels_last): the desktop fallback without TensorRT.

    It runs the checkpoint the artifact was exported from, not the ONNX file: the same weights, torch's kernels.
    """

    name = "torch-cuda"
    precisions = ("fp32", "fp16", "bf16")
    description = "PyTorch eager on a CUDA GPU"

    def int8_scheme(self, machine) -> str:
        return "tensorrt"

    def lacks(self, profile, machine) -> str:
        return "" if machine.torch_cuda else "a CUDA build of torch on a CUDA GPU"

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict) -> TorchRunner:
        if precision not in self.precisions:
            raise SegedgeError("torch CUDA has no INT8 path here; INT8 needs TensorRT or onnxruntime")
        from segedge.models.checkpoint import load_checkpoint

        module = load_checkpoint(manifest["checkpoint"]).build()
        return TorchRunner(module, device="cuda", half=precision == "fp16", bf16=precision == "bf16", channels_last=True)

    def refuses(self, precision: str, profile, machine) -> str:
        refusal = super().refuses(precision, profile, machine)
        cc = getattr(machine, "compute_capability", None)
        if not refusal and precision == "bf16" and cc and float(cc) < 8.0:
            return f"this GPU (compute capability {cc}) has no bf16; it needs 8.0 or later (Ampere, Orin)"
        return refusal

    def variant(self, precision: str, profile) -> str:
        return f"torch eager, {precision}, channels_last"


CUDA = TorchCudaBackend()
