"""PyTorch eager runner: the FP32 reference every artifact is compared against."""

from __future__ import annotations

import numpy as np

from segedge.runners.base import Runner, TensorSpec


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, module, threads: int | None = None, input_name: str = "input", device: str = "cpu") -> None:
        super().__init__(threads)
        self.module = module
        self.input_name = input_name
        self.device = device
        self._saved_threads: int | None = None

    def _activate(self) -> None:
        import torch

        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self.module.eval().to(self.device)
        self.input_spec = TensorSpec(self.input_name, (None, 3, None, None), np.dtype(np.float32))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        if isinstance(out, (tuple, list)):  # a model left in training mode returns aux heads too
            out = out[0]
        return out.float().cpu().numpy()

    def _deactivate(self) -> None:
        import torch

        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
