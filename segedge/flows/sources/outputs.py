"""Torch outputs as libraries return them, reduced to the one tensor of class scores segedge exports and scores.

torchvision's segmentation models return ``{"out": ..., "aux": ...}``, Hugging Face's an output object with
``.logits`` (at 1/4 of the input for SegFormer), other code a tuple whose first item is the main head. The
export wraps the module in :class:`ScoresOnly`, so the ONNX has the chosen scores as its one output (auxiliary
heads dropped, named after the key) at the model's own stride; scoring resizes a lower-resolution output to the
labels exactly as for an ONNX made elsewhere (:func:`segedge.data.model_io.resize_scores`).
"""

from __future__ import annotations

from typing import Any

from segedge.core.errors import SegedgeError
from segedge.data.model_io import output_fits  # noqa: F401  (the one rule, re-exported for the adapters)

def output_key_of(out: Any, key: str | None = None) -> str | None:
    """Which part of ``out`` holds the class scores: None for a tensor, the key for a mapping (``key``, else
    ``out``, else its only tensor; ``aux`` never), ``logits`` for an object with ``.logits``, ``0`` for a tuple
    or list (its first item). Refuses by name what it cannot read."""
    import torch

    if isinstance(out, torch.Tensor):
        if key is not None:
            raise SegedgeError(f"--output-key {key!r}: the model returns one tensor, not a mapping")
        return None
    if hasattr(out, "logits"):
        if key not in (None, "logits"):
            raise SegedgeError(f"--output-key {key!r}: the model returns an object whose scores are .logits")
        return "logits"
    if isinstance(out, dict) or (hasattr(out, "keys") and hasattr(out, "__getitem__")):
        keys = [k for k in out.keys() if isinstance(out[k], torch.Tensor)]
        if key is not None:
            if key not in keys:
                raise SegedgeError(f"--output-key {key!r} is not among the model's outputs ({', '.join(map(str, keys))})")
            return key
        if "out" in keys:
            return "out"
        main = [k for k in keys if k != "aux"]
        if len(main) == 1:
            return main[0]
        raise SegedgeError(f"the model returns a mapping with {', '.join(map(str, keys)) or 'no tensors'}: name the "
                           f"class scores with --output-key")
    if isinstance(out, (tuple, list)) and out:
        if key is not None:
            raise SegedgeError(f"--output-key {key!r}: the model returns a {type(out).__name__}, whose first item is used")
        return "0"
    raise SegedgeError(f"the model returns a {type(out).__name__}; segedge reads a tensor of class scores, a mapping "
                       f"(out, or --output-key), an object with .logits, or a tuple whose first item is the scores")


def pick_scores(out: Any, key: str | None):
    """The tensor ``output_key_of`` chose."""
    if key is None:
        return out
    if key == "logits" and hasattr(out, "logits"):
        return out.logits
    if key == "0" and isinstance(out, (tuple, list)):
        return out[0]
    return out[key]


def scores_only(module, key: str | None):
    """``module`` returning only its class scores (a plain tensor): what the export traces. ``key`` None: as is."""
    if key is None:
        return module
    import torch

    class ScoresOnly(torch.nn.Module):
        """The wrapped model, its class scores only: auxiliary heads and output objects are left behind."""

        def __init__(self, inner, key: str) -> None:
            super().__init__()
            self.inner = inner
            self.key = key

        def forward(self, x):
            return pick_scores(self.inner(x), self.key)

    return ScoresOnly(module, key).eval()
