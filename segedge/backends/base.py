"""The Runner interface every backend implements.

``with runner: out = runner.infer(batch)``. Public methods validate (names, shapes, dtypes) and give the
user a message that says what was expected; ``_activate`` / ``_infer`` / ``_deactivate`` do the backend
work. Thread counts are always explicit: a default that follows the machine makes timings incomparable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segedge.core.errors import RunnerInputError


@dataclass(frozen=True)
class TensorSpec:
    """Expected input: ``None`` in ``shape`` marks a dimension that may vary (batch, dynamic H/W)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Runner:
    """Base class: subclasses set ``self.input_spec`` in ``_activate`` and implement ``_infer``."""

    backend = "base"

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise RunnerInputError(f"threads must be >= 1, got {threads}")
        self.threads = threads or default_threads()
        self.input_spec: TensorSpec | None = None
        self.active = False

    # lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    # inference -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch (N×3×H×W float32, or ``{input_name: array}``) and return N×C×H×W logits."""
        if not self.active:
            raise RunnerInputError(f"{type(self).__name__} is not active: use it as `with runner: ...`")
        array = self._validated(batch)
        return self._infer(array)

    def _validated(self, batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        spec = self.input_spec
        assert spec is not None, "subclass must set input_spec in _activate"
        if isinstance(batch, dict):
            unknown = sorted(set(batch) - {spec.name})
            if unknown or spec.name not in batch:
                raise RunnerInputError(
                    f"input names {sorted(batch)} do not match the model's input; expected {spec.describe()}"
                )
            batch = batch[spec.name]
        if not isinstance(batch, np.ndarray):
            raise RunnerInputError(f"input must be a numpy array, got {type(batch).__name__}; expected {spec.describe()}")
        if batch.dtype != spec.dtype:
            raise RunnerInputError(
                f"input {spec.name!r} has dtype {batch.dtype.name}, expected {np.dtype(spec.dtype).name} "
                f"({spec.describe()}); convert with .astype(np.{np.dtype(spec.dtype).name})"
            )
        if batch.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(batch.shape, spec.shape)
        ):
            got = "x".join(map(str, batch.shape))
            raise RunnerInputError(f"input {spec.name!r} has shape {got}, expected {spec.describe()}")
        return np.ascontiguousarray(batch)

    # for subclasses ---------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass


class Backend:
    """One deployment runtime, registered by name in :mod:`segedge.backends.registry`: the only place that
    knows what a backend name means. Subclasses override what differs; the defaults suit a runtime that
    takes segedge's ONNX files as they are.
    """

    name: str = ""
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    description: str = ""
    # build, compile and first inference probed in a child process before the bench runs it in its own
    # (segedge.backends.isolate): a native crash there becomes a failed row instead of the end of the sweep
    isolate: bool = True

    def int8_scheme(self, machine) -> str:
        """The INT8 scheme (:data:`segedge.graph.int8.INT8_SCHEMES`) this backend runs fastest on ``machine``
        (``None``: not known yet); a profile's ``int8_scheme`` overrides it."""
        return "x86"

    def int8_candidates(self, machine) -> tuple[str, ...]:
        """The INT8 schemes a bench row tries on this backend, the fastest within the tolerance kept; one
        unless the backend runs more than one placement well (OpenVINO: NNCF's and segedge's own)."""
        return (self.int8_scheme(machine),)

    def lacks(self, profile, machine) -> str:
        """What ``machine`` lacks to run this backend as ``profile`` configures it; empty when it can."""
        return ""

    def refuses(self, precision: str, profile, machine) -> str:
        """Why this backend will not run ``precision`` here (empty when it will): never a silent substitute."""
        if precision not in self.precisions:
            return f"{self.name} does not run {precision} (it runs {', '.join(self.precisions)})"
        return ""

    def variant(self, precision: str, profile) -> str:
        """How a row at ``precision`` runs beyond the backend's name (device, arithmetic), stored with the row."""
        return ""

    def prepare(self, artifact: Path, profile, input_size: tuple[int, int], precision: str = "fp32") -> Path:
        """The file the runner loads: the ONNX artifact itself, or a form derived from it and cached (a backend
        whose build fixes the arithmetic, TensorRT, needs ``precision``: bf16 comes from the FP32 artifact)."""
        return artifact

    def runner(self, prepared: Path, *, precision: str, threads: int, profile, manifest: dict) -> "Runner":
        raise NotImplementedError

    def check(self, onnx: Path, profile):
        """A static report of what this backend would refuse in ``onnx``; None when it has no such check."""
        return None
