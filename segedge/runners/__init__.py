"""Backends behind one :class:`Runner` interface."""

from segedge.runners.base import Runner, TensorSpec
from segedge.runners.onnxrt import OnnxRuntimeRunner
from segedge.runners.torch import TorchRunner

__all__ = ["Runner", "TensorSpec", "OnnxRuntimeRunner", "TorchRunner"]
