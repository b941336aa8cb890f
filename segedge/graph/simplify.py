"""``simplified_onnx``: constant folding and redundant-node removal with onnxsim.

onnxsim checks its own result on random inputs; segedge's parity gate then re-checks it on real images.
"""

from __future__ import annotations

import time
from pathlib import Path

from segedge.core.artifacts import atomic_path
from segedge.core.errors import ArtifactError


def simplifier() -> str:
    """``onnxsim``, or ``none`` on an install without it (the device's light install): then the graph is kept
    as exported, which onnxruntime and TensorRT optimise themselves; the stage config records which."""
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        return "none"
    return "onnxsim"


def simplified_onnx(src: str | Path, dst: str | Path) -> dict:
    """Simplify ``src`` into ``dst``; returns node counts before and after and the time taken."""
    import onnx

    started = time.perf_counter()
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ArtifactError(f"cannot read ONNX file {src}: {exc}") from None
    nodes_before = len(model.graph.node)
    if simplifier() == "none":
        with atomic_path(dst) as tmp:
            onnx.save_model(model, str(tmp))
        return {"nodes_before": nodes_before, "nodes_after": nodes_before, "simplifier": "none (onnxsim not installed: "
                "pip install 'segedge[export]')", "seconds": round(time.perf_counter() - started, 2)}
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ArtifactError(f"onnxsim could not validate its simplification of {src}")
    with atomic_path(dst) as tmp:
        onnx.save_model(simplified, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {
        "nodes_before": nodes_before,
        "nodes_after": len(simplified.graph.node),
        "simplifier": "onnxsim",
        "seconds": round(time.perf_counter() - started, 2),
    }
