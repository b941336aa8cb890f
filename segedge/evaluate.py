"""``segedge eval``: every metric, per class, of a zoo model, a checkpoint, an ONNX file or a TensorRT engine
on a dataset split — the same numbers whichever backend, because one confusion matrix scores them all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segedge.data.transforms import to_network_input
from segedge.errors import SegedgeError
from segedge.metrics import ConfusionMatrix, SegmentationScores
from segedge.runners.base import Runner


@dataclass(frozen=True)
class EvalResult:
    scores: SegmentationScores
    class_names: tuple[str, ...]
    images: int
    data: str
    split: str
    backend: str

    def as_dict(self) -> dict:
        return {"data": self.data, "split": self.split, "images": self.images, "backend": self.backend,
                "class_names": list(self.class_names), **self.scores.as_dict()}


def evaluate_runner(runner: Runner, dataset, count: int, mean, std, num_classes: int, progress: bool = False,
                    ignore_index: int = 255) -> SegmentationScores:
    from tqdm import tqdm

    cm = ConfusionMatrix(num_classes, ignore_index)
    with runner:
        for i in tqdm(range(count), desc="evaluate", unit="img", disable=not progress):
            image, mask = dataset[i]
            logits = runner.infer(to_network_input(image, mean, std))
            if logits.shape[1] != num_classes:
                raise SegedgeError(f"the model outputs {logits.shape[1]} classes, the dataset labels {num_classes}")
            cm.update(mask[None], logits.argmax(1))
    return cm.scores()


def manifest_beside(path: Path) -> dict:
    """A segedge artifact's manifest (normalisation, class names, size), when the file lives in one."""
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def input_size_of(runner: Runner) -> tuple[int, int] | None:
    shape = runner.input_spec.shape if runner.input_spec else ()
    return tuple(shape[2:]) if len(shape) == 4 and None not in shape[2:] else None


def class_count(dataset) -> int:
    return int(getattr(dataset, "num_classes", len(getattr(dataset, "class_names", ()))))


def open_eval_set(data: str, split: str, size: tuple[int, int], seed: int = 0, length: int = 512):
    if data == "synthetic":
        from segedge.data.synthetic import SyntheticScenes

        return SyntheticScenes(split, length, size=size, seed=seed)
    from segedge.data.datasets import open_dataset

    kind, sep, root = data.partition(":")
    if not sep or not root:
        raise SegedgeError(f"--data takes synthetic or KIND:ROOT (e.g. cityscapes:/data/cityscapes), got {data!r}")
    return open_dataset(kind, root, split, size=size)


def activated_input_size(runner: Runner) -> tuple[int, int] | None:
    with runner:
        return input_size_of(runner)


def evaluate(runner: Runner, data: str, split: str, size: tuple[int, int] | None, images: int, mean, std,
             class_names: tuple[str, ...] | None, progress: bool = False) -> EvalResult:
    """Score ``runner`` on ``images`` images of ``data``'s ``split`` at ``size`` (or the model's fixed size)."""
    fixed = activated_input_size(runner)
    if size is None:
        size = fixed
    if size is None:
        raise SegedgeError("the model takes any H/W: give --input-size HxW")
    if fixed is not None and tuple(size) != fixed:
        raise SegedgeError(f"the model takes a fixed {fixed[0]}x{fixed[1]} input; --input-size asks for {size[0]}x{size[1]}")
    dataset = open_eval_set(data, split, tuple(size))
    count = min(images, len(dataset))
    if count < 1:
        raise SegedgeError(f"{data} {split} holds no images")
    names = tuple(class_names) if class_names else tuple(getattr(dataset, "class_names", ()))
    scores = evaluate_runner(runner, dataset, count, mean, std, class_count(dataset), progress)
    return EvalResult(scores, names, count, data, split, runner.backend)
