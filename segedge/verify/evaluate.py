"""``segedge eval``: every metric, per class, of a zoo model, a checkpoint, an ONNX file or a TensorRT engine
on a dataset split — the same numbers whichever backend, because one confusion matrix scores them all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segedge.data.model_io import ModelIO
from segedge.core.errors import SegedgeError
from segedge.verify.compare import require_finite, require_same_classes
from segedge.core.metrics import ConfusionMatrix, SegmentationScores
from segedge.backends.base import Runner


@dataclass(frozen=True)
class EvalResult:
    scores: SegmentationScores
    class_names: tuple[str, ...]
    images: int
    data: str
    split: str
    backend: str
    crf: dict | None = None  # the dense-CRF parameters and the scores without it, when --crf refined the output

    def as_dict(self) -> dict:
        result = {"data": self.data, "split": self.split, "images": self.images, "backend": self.backend,
                  "class_names": list(self.class_names), **self.scores.as_dict()}
        if self.crf is not None:
            result["crf"] = self.crf
        return result


def evaluate_runner(runner: Runner, dataset, count: int, mean, std, num_classes: int, progress: bool = False,
                    ignore_index: int = 255, crf=None, io: ModelIO | None = None) -> SegmentationScores | tuple[SegmentationScores, SegmentationScores]:
    """Scores of ``runner`` on the first ``count`` images; with ``crf`` (a ``segedge.verify.crf.CrfParams``), the
    pair (scores after the dense CRF, scores of the raw argmax), both from the same inferences."""
    from tqdm import tqdm

    io = io or ModelIO()
    cm = ConfusionMatrix(num_classes, ignore_index)
    raw = ConfusionMatrix(num_classes, ignore_index) if crf is not None else None
    if crf is not None:
        from segedge.verify.crf import refine

    with runner:
        for i in tqdm(range(count), desc="evaluate" if crf is None else "evaluate + CRF", unit="img", disable=not progress):
            image, mask = dataset[i]
            logits = io.scores(runner.infer(io.feed(image, mean, std)), mask.shape[:2])
            require_same_classes("the model", logits.shape[1], "the dataset", num_classes)
            require_finite(logits, "the model", count)
            if crf is None:
                cm.update(mask[None], logits.argmax(1))
            else:
                raw.update(mask[None], logits.argmax(1))
                cm.update(mask[None], refine(image, logits[0], crf)[None])
    return cm.scores() if crf is None else (cm.scores(), raw.scores())


def manifest_beside(path: Path) -> dict:
    """A segedge artifact's manifest (normalisation, class names, size), when the file lives in one."""
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def input_size_of(runner: Runner, io: ModelIO | None = None) -> tuple[int, int] | None:
    shape = runner.input_spec.shape if runner.input_spec else ()
    spatial = shape[1:3] if io is not None and io.input_layout == "NHWC" else shape[2:]
    return tuple(spatial) if len(shape) == 4 and None not in spatial else None


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


def activated_input_size(runner: Runner, io: ModelIO | None = None) -> tuple[int, int] | None:
    with runner:
        return input_size_of(runner, io)


def evaluate(runner: Runner, data: str, split: str, size: tuple[int, int] | None, images: int, mean, std,
             class_names: tuple[str, ...] | None, progress: bool = False, crf=None, io: ModelIO | None = None) -> EvalResult:
    """Score ``runner`` on ``images`` images of ``data``'s ``split`` at ``size`` (or the model's fixed size);
    ``crf`` (``segedge.verify.crf.CrfParams``) refines each output with DeepLab's dense CRF on the CPU first."""
    if crf is not None:
        from segedge.verify.crf import require_crf

        crf.validate()
        require_crf()  # before the model loads: a missing library is the user's first error, not the last
    fixed = activated_input_size(runner, io)
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
    scores = evaluate_runner(runner, dataset, count, mean, std, class_count(dataset), progress, crf=crf, io=io)
    if crf is None:
        return EvalResult(scores, names, count, data, split, runner.backend)
    refined, raw = scores
    from dataclasses import asdict

    return EvalResult(refined, names, count, data, split, runner.backend,
                      crf={**asdict(crf), "without_crf": {"miou": raw.mean_iou, "pixel_accuracy": raw.pixel_accuracy}})
