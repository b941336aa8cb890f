"""segedge: semantic segmentation from a PyTorch definition to a verified edge deployment.

The public API is re-exported here lazily, so ``import segedge`` stays cheap (no torch, no onnxruntime)
until a function that needs them is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SegedgeError": "segedge.errors",
    "ModelSpec": "segedge.registry",
    "register_model": "segedge.registry",
    "create_model": "segedge.registry",
    "list_models": "segedge.registry",
    "get_spec": "segedge.registry",
    "onnx_from_torch": "segedge.export",
    "simplified_onnx": "segedge.simplify",
    "fp16_from_onnx": "segedge.quantize",
    "int8_from_onnx": "segedge.quantize",
    "Int8Config": "segedge.quantize",
    "export_model": "segedge.pipeline",
    "ExportConfig": "segedge.pipeline",
    "train": "segedge.train",
    "TrainConfig": "segedge.train",
    "load_checkpoint": "segedge.checkpoint",
    "ConfusionMatrix": "segedge.metrics",
    "mean_iou": "segedge.metrics",
    "OnnxRuntimeRunner": "segedge.runners",
    "TorchRunner": "segedge.runners",
    "TensorRTRunner": "segedge.runners.tensorrt",
    "engine_from_onnx": "segedge.engine",
    "EngineSettings": "segedge.engine",
    "build_loss": "segedge.losses",
    "LOSSES": "segedge.losses",
    "format_table": "segedge.metrics",
    "open_dataset": "segedge.data.datasets",
    "SyntheticScenes": "segedge.data.synthetic",
    "load_profile": "segedge.profiles",
    "list_profiles": "segedge.profiles",
    "detect_machine": "segedge.hardware",
    "check_onnx": "segedge.check",
    "check_model": "segedge.check",
    "layer_sensitivity": "segedge.sensitivity",
    "Int8Scheme": "segedge.quantize",
    "INT8_SCHEMES": "segedge.quantize",
    "ResultsStore": "segedge.results",
    "run_sweep": "segedge.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segedge' has no attribute {name!r}")
