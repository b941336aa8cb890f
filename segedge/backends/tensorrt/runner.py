"""TensorRT runner on CUDA memory (torch CUDA tensors), with trtexec-style timing.

Two clocks, as trtexec reports them: ``last_gpu_ms`` is the engine's GPU compute time from CUDA events on
the runner's stream; ``last_e2e_ms`` adds the host→device and device→host copies. ``cuda_graph=True``
captures the enqueue once per input shape and replays it, removing launch overhead from the timed path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segedge.backends.tensorrt.build import TensorRTUnavailable, _tensorrt, check_engine_compatible, current_gpu, read_meta
from segedge.core.errors import ArtifactError
from segedge.backends.base import Runner, TensorSpec


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bool"):
        table[trt.bool] = torch.bool
    return table[dtype]


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, cuda_graph: bool = False) -> None:
        super().__init__(threads=1)
        self.engine_path = Path(engine_path)
        self.cuda_graph = cuda_graph
        self.last_gpu_ms: float | None = None
        self.last_e2e_ms: float | None = None

    def _activate(self) -> None:
        import torch

        trt = _tensorrt()
        gpu, cc = current_gpu()
        if not self.engine_path.is_file():
            raise ArtifactError(f"engine {self.engine_path} does not exist")
        check_engine_compatible(read_meta(self.engine_path), trt.__version__, gpu, cc, self.engine_path)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{self.engine_path} has {len(inputs)} inputs and {len(outputs)} outputs; segedge expects 1 and 1")
        self.input_name, self.output_name = inputs[0], outputs[0]
        if self.engine.get_tensor_dtype(self.input_name) != trt.float32:
            raise ArtifactError(f"{self.engine_path} takes {self.engine.get_tensor_dtype(self.input_name)} input; segedge feeds float32")
        shape = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(self.input_name))
        self.input_spec = TensorSpec(self.input_name, shape, np.dtype(np.float32))
        self.stream = torch.cuda.Stream()
        self._graphs: dict[tuple, object] = {}
        self._buffers: dict[tuple, tuple] = {}

    def _buffers_for(self, shape: tuple[int, ...]):
        import torch

        if shape not in self._buffers:
            self.context.set_input_shape(self.input_name, shape)
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            out_dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(self.output_name))
            x = torch.empty(shape, dtype=torch.float32, device="cuda")
            y = torch.empty(out_shape, dtype=out_dtype, device="cuda")
            self._buffers[shape] = (x, y)
        x, y = self._buffers[shape]
        self.context.set_input_shape(self.input_name, shape)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        return x, y

    def _enqueue(self, shape: tuple[int, ...]) -> None:
        import torch

        if not self.cuda_graph:
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactError("TensorRT execute_async_v3 failed")
            return
        graph = self._graphs.get(shape)
        if graph is None:
            # one plain enqueue first: TensorRT defers some setup to the first launch, which must not be captured
            self.context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
            self._graphs[shape] = graph
        graph.replay()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        shape = tuple(batch.shape)
        with torch.cuda.stream(self.stream):
            x, y = self._buffers_for(shape)
            start, gpu_start, gpu_end, end = (torch.cuda.Event(enable_timing=True) for _ in range(4))
            start.record(self.stream)
            x.copy_(torch.from_numpy(batch), non_blocking=False)
            gpu_start.record(self.stream)
            self._enqueue(shape)
            gpu_end.record(self.stream)
            out = y.float().cpu()
            end.record(self.stream)
        self.stream.synchronize()
        self.last_gpu_ms = gpu_start.elapsed_time(gpu_end)
        self.last_e2e_ms = start.elapsed_time(end)
        return out.numpy()

    def _deactivate(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self.context = None
        self.engine = None


__all__ = ["TensorRTRunner", "TensorRTUnavailable"]
