"""Checkpoints that carry their architecture, width, classes and normalisation, and the weight cache.

A segedge checkpoint is a dict saved with ``torch.save``; loading validates it against the registry, so a
checkpoint for another architecture or class count fails with a message instead of a shape traceback.
Trained weights are cached under ``$SEGEDGE_CACHE`` (default ``~/.cache/segedge``) keyed by the training
recipe, so later commands reuse them instead of training again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segedge.core.artifacts import atomic_path, sha256_file
from segedge.core.errors import CheckpointError, brief
from segedge.models.registry import ModelSpec, get_spec

FORMAT = "segedge-checkpoint-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("SEGEDGE_CACHE") or Path.home() / ".cache" / "segedge")


@dataclass(frozen=True)
class Checkpoint:
    model: str
    width: float
    num_classes: int
    class_names: tuple[str, ...]
    state_dict: dict[str, Any] = field(repr=False)
    train_info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.model)

    def sha256(self) -> str | None:
        return sha256_file(self.path) if self.path else None

    def build(self):
        """The architecture with these weights loaded, in eval mode."""
        module = self.spec.build(num_classes=self.num_classes, width=self.width)
        _load_state(module, self.state_dict, self)
        return module.eval()


def save_checkpoint(path: str | Path, module, model: str, width: float, class_names, train_info=None) -> Path:
    import torch

    spec = get_spec(model)
    payload = {
        "format": FORMAT,
        "model": spec.name,
        "width": float(width),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "spec": {
            "default_input_size": list(spec.default_input_size),
            "mean": list(spec.mean),
            "std": list(spec.std),
            "output_stride": spec.output_stride,
        },
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "train": dict(train_info or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; ``expect_model`` is the architecture the user asked for."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({brief(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a segedge checkpoint (no '{FORMAT}' header); train one with `segedge train`"
        )
    spec = get_spec(payload["model"])
    if expect_model is not None and get_spec(expect_model).name != spec.name:
        raise CheckpointError(
            f"checkpoint {path} holds a {spec.name} model, but --model asks for {get_spec(expect_model).name}"
        )
    ckpt = Checkpoint(
        model=spec.name,
        width=float(payload["width"]),
        num_classes=int(payload["num_classes"]),
        class_names=tuple(payload["class_names"]),
        state_dict=payload["state_dict"],
        train_info=dict(payload.get("train", {})),
        path=path,
    )
    if len(ckpt.class_names) != ckpt.num_classes:
        raise CheckpointError(f"checkpoint {path} names {len(ckpt.class_names)} classes but declares {ckpt.num_classes}")
    return ckpt


def _load_state(module, state_dict: dict[str, Any], ckpt: Checkpoint) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        where = f"checkpoint {ckpt.path}" if ckpt.path else "checkpoint"
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches (e.g. {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise CheckpointError(
            f"{where} does not match {ckpt.model} (width {ckpt.width}, {ckpt.num_classes} classes): " + "; ".join(parts)
        )
    module.load_state_dict(state_dict)
