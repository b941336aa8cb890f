"""segedge: semantic segmentation from a PyTorch definition to a verified edge deployment.

The public API is re-exported here lazily, so ``import segedge`` stays cheap (no torch, no onnxruntime)
until a function that needs them is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "SegedgeError": "segedge.core.errors",
    "ModelSpec": "segedge.models.registry",
    "register_model": "segedge.models.registry",
    "create_model": "segedge.models.registry",
    "list_models": "segedge.models.registry",
    "get_spec": "segedge.models.registry",
    "onnx_from_torch": "segedge.graph.export",
    "simplified_onnx": "segedge.graph.simplify",
    "fp16_from_onnx": "segedge.graph.fp16",
    "int8_from_onnx": "segedge.graph.int8",
    "Int8Config": "segedge.graph.int8",
    "export_model": "segedge.flows.export",
    "ExportConfig": "segedge.flows.export",
    "train": "segedge.train.loop",
    "TrainConfig": "segedge.train.loop",
    "load_checkpoint": "segedge.models.checkpoint",
    "ConfusionMatrix": "segedge.core.metrics",
    "mean_iou": "segedge.core.metrics",
    "OnnxRuntimeRunner": "segedge.backends.onnxruntime",
    "TorchRunner": "segedge.backends.torch",
    "TensorRTRunner": "segedge.backends.tensorrt.runner",
    "engine_from_onnx": "segedge.backends.tensorrt.build",
    "EngineSettings": "segedge.backends.tensorrt.build",
    "build_loss": "segedge.train.losses",
    "LOSSES": "segedge.train.losses",
    "format_table": "segedge.core.metrics",
    "open_dataset": "segedge.data.datasets",
    "SyntheticScenes": "segedge.data.synthetic",
    "load_profile": "segedge.backends.profiles",
    "list_profiles": "segedge.backends.profiles",
    "detect_machine": "segedge.core.hardware",
    "check_onnx": "segedge.backends.tensorrt.check",
    "check_model": "segedge.backends.tensorrt.check",
    "layer_sensitivity": "segedge.verify.sensitivity",
    "Int8Scheme": "segedge.graph.int8",
    "INT8_SCHEMES": "segedge.graph.int8",
    "ResultsStore": "segedge.core.results",
    "run_sweep": "segedge.flows.bench",
    "Predictor": "segedge.flows.predict",
    "ModelIO": "segedge.data.model_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segedge' has no attribute {name!r}")
