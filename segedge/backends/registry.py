"""Backends by name. Each entry points at the module-level :class:`~segedge.backends.base.Backend` object
that implements it; the module is imported on first use, so naming a backend never imports a runtime.

Adding a backend: one module in ``segedge/backends/`` with a ``Backend`` subclass, one line here, a profile
in ``profiles/`` that names it, and its tests (README's layout section lists the files).
"""

from __future__ import annotations

import importlib

from segedge.backends.base import Backend
from segedge.core.errors import ProfileError

_BACKENDS = {
    "onnxruntime": "segedge.backends.onnxruntime:CPU",
    "onnxruntime-cuda": "segedge.backends.onnxruntime:CUDA",
    "tensorrt": "segedge.backends.tensorrt:TENSORRT",
    "torch-cuda": "segedge.backends.torch:CUDA",
    "openvino": "segedge.backends.openvino:OPENVINO",
}


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise ProfileError(f"backend {name!r} is not one of {', '.join(_BACKENDS)}")
    module, _, attribute = _BACKENDS[name].partition(":")
    backend = getattr(importlib.import_module(module), attribute)
    assert backend.name == name, f"{_BACKENDS[name]} registers {backend.name!r}, not {name!r}"
    return backend
