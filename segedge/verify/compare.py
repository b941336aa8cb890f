"""Parity of a compiled artifact against the torch FP32 reference on held-out images.

Three figures, stored with every artifact: max abs logit difference (catches numerical drift), pixel argmax
agreement (what the user's segmentation map sees), and mIoU against the labels for both, so the drop is
measured on the same images rather than inferred.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from segedge.core.errors import ParityError, SegedgeError
from segedge.core.precision import ParityGate
from segedge.data.model_io import ModelIO
from segedge.verify.interval import DropInterval, paired_bootstrap_drop, per_image_matrix
from segedge.core.metrics import ConfusionMatrix, SegmentationScores
from segedge.backends.base import Runner


@dataclass(frozen=True)
class ParityReport:
    images: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    miou: float
    reference_miou: float

    @property
    def miou_drop(self) -> float:
        """Points (0–100 scale) of mIoU lost against the reference."""
        return round(100.0 * (self.reference_miou - self.miou), 3)

    def as_dict(self) -> dict:
        return {**asdict(self), "miou_drop_points": self.miou_drop}


@dataclass(frozen=True)
class Reference:
    """The FP32 reference's scores on the evaluation images, computed once and shared by every check."""

    inputs: np.ndarray  # N×… float32 inputs as the model takes them (ModelIO.feed)
    masks: np.ndarray  # N×H×W uint8 labels
    logits: np.ndarray  # N×C×H×W float32 class scores at the label size (ModelIO.scores)
    num_classes: int
    ignore_index: int = 255
    io: ModelIO = field(default_factory=ModelIO)
    images: np.ndarray | None = None  # the uint8 images the inputs were fed from (bench times pre-processing on them)

    @property
    def miou(self) -> float:
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        cm.update(self.masks, self.logits.argmax(1))
        return cm.scores().mean_iou

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[1:3])

    def per_image_matrices(self) -> np.ndarray:
        predictions = self.logits.argmax(1)
        return np.stack([per_image_matrix(m, p, self.num_classes, self.ignore_index)
                         for m, p in zip(self.masks, predictions)])


def require_same_classes(model: str, model_classes: int, data: str, data_classes: int) -> None:
    """The one class check of every command that scores a model on labels: a 4-class model on the 10-class
    built-in scenes is refused by name, never scored (its mIoU would mean nothing)."""
    if int(model_classes) != int(data_classes):
        raise SegedgeError(f"{model} predicts {model_classes} classes but {data} has {data_classes}; score it on "
                           f"data labelled with the model's classes (--data KIND:ROOT)")


def require_finite(scores: np.ndarray, what: str, images: int) -> None:
    """NaN or inf scores (a NaN weight, an overflowing FP16 layer) make every comparison false, so max-diff and
    argmax figures would look perfect: refuse them by name instead."""
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores.reshape(len(scores), -1))).any(axis=1).sum())
        raise ParityError(f"{what} returns NaN or inf scores on {bad} of {images} images; nothing is scored on "
                          f"non-finite outputs (a NaN weight, or a layer overflowing its precision)")


def reference_from_runner(runner: Runner, inputs: np.ndarray, masks: np.ndarray, num_classes: int,
                          io: ModelIO | None = None, images: np.ndarray | None = None,
                          ignore_index: int = 255) -> Reference:
    io = io or ModelIO()
    size = tuple(masks.shape[1:3])
    if len(masks) and not ((masks != ignore_index) & (masks < num_classes)).any():
        raise SegedgeError(f"the {len(masks)} evaluation masks hold no labelled pixel (every pixel is void or outside "
                           f"the {num_classes} classes): no mIoU can be scored; check the masks' encoding")
    with runner:
        logits = np.concatenate([io.scores(runner.infer(inputs[i : i + 1]), size) for i in range(len(inputs))])
    require_finite(logits, f"the FP32 reference ({runner.backend})", len(inputs))
    return Reference(inputs, masks, logits.astype(np.float32), num_classes, io=io, images=images)


@dataclass(frozen=True)
class RunnerAccuracy:
    """A runner's figures on the reference's images: the parity report, and its drop's bootstrap interval."""

    report: ParityReport
    interval: DropInterval


@dataclass(frozen=True)
class ImageStats:
    """A runner's per-image figures against the reference, in image order. Every figure of a
    :class:`RunnerAccuracy` is a function of these alone, so the stats of consecutive slices of the evaluation
    split, computed on several devices and joined in order, give exactly the figures of one unsplit pass."""

    runner_cms: np.ndarray  # N×K×K, the runner's confusion matrix of each image
    reference_cms: np.ndarray  # N×K×K, the FP32 reference's
    max_diff: np.ndarray  # N, max abs logit difference of each image
    mean_diff: np.ndarray  # N, mean abs logit difference of each image
    agree: np.ndarray  # N, pixels whose argmax is the reference's
    pixels: np.ndarray  # N, pixels of each image

    @classmethod
    def joined(cls, parts: "list[ImageStats]") -> "ImageStats":
        if not parts:
            raise ValueError("no image stats to join")
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("runner_cms", "reference_cms", "max_diff", "mean_diff", "agree", "pixels")))

    @property
    def images(self) -> int:
        return len(self.pixels)

    def accuracy(self) -> RunnerAccuracy:
        count = self.images
        report = ParityReport(
            images=count,
            max_abs_diff=float(self.max_diff.max()) if count else 0.0,
            mean_abs_diff=float(np.sum(self.mean_diff)) / max(1, count),
            argmax_agreement=int(self.agree.sum()) / max(1, int(self.pixels.sum())),
            miou=SegmentationScores.from_matrix(self.runner_cms.sum(0)).mean_iou,
            reference_miou=SegmentationScores.from_matrix(self.reference_cms.sum(0)).mean_iou,
        )
        return RunnerAccuracy(report, paired_bootstrap_drop(self.runner_cms, self.reference_cms))


def image_stats(runner: Runner, reference: Reference, batch: int = 1) -> ImageStats:
    """Every reference image through an *active* runner, ``batch`` at a time (the last batch padded by repeating
    its last image, whose extra outputs are dropped): the very runner, precision and batch that were timed."""
    io, size, count = reference.io, reference.size, len(reference.inputs)
    runner_cms, max_diff, mean_diff, agree, pixels = [], [], [], [], []
    for start in range(0, count, batch):
        chunk = reference.inputs[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        got = io.scores(runner.infer(chunk), size)[:real]
        want = reference.logits[start : start + real]
        require_finite(got, f"the artifact on {getattr(runner, 'backend', 'its runner')}", count)
        require_finite(want, "the FP32 reference", count)
        if got.shape != want.shape:
            raise ParityError(f"artifact returns scores shaped {got.shape}, the reference {want.shape}")
        diff = np.abs(got - want).reshape(real, -1)
        max_diff += list(diff.max(axis=1))
        mean_diff += list(diff.mean(axis=1))
        pred, wanted = got.argmax(1), want.argmax(1)
        agree += [int((p == w).sum()) for p, w in zip(pred, wanted)]
        pixels += [p.size for p in pred]
        runner_cms += [per_image_matrix(m, q, reference.num_classes, reference.ignore_index)
                       for m, q in zip(reference.masks[start : start + real], pred)]
    k = reference.num_classes
    as_array = lambda values, dtype: np.asarray(values, dtype=dtype)  # noqa: E731
    return ImageStats(as_array(runner_cms, np.int64).reshape(count, k, k), reference.per_image_matrices(),
                      as_array(max_diff, np.float64), as_array(mean_diff, np.float64), as_array(agree, np.int64),
                      as_array(pixels, np.int64))


def accuracy_on_active_runner(runner: Runner, reference: Reference, batch: int = 1) -> RunnerAccuracy:
    """The runner's parity report and drop interval on every reference image (see :func:`image_stats`)."""
    return image_stats(runner, reference, batch).accuracy()


def compare_to_reference(runner: Runner, reference: Reference) -> ParityReport:
    """Run every reference image through ``runner`` (batch 1, as deployed) and compare."""
    with runner:
        return accuracy_on_active_runner(runner, reference).report


def enforce_gate(stage: str, report: ParityReport, gate: ParityGate, hint: str = "",
                 against: str = "torch FP32") -> None:
    """Raise :class:`ParityError` when ``report`` fails ``gate``; the caller then keeps no artifact. ``hint``: a
    likely cause the build noticed, said after the figures; ``against``: what the reference is (torch FP32, or
    the user's own FP32 ONNX)."""
    problems = []
    if not (np.isfinite(report.max_abs_diff) and np.isfinite(report.mean_abs_diff) and np.isfinite(report.miou)
            and np.isfinite(report.reference_miou)):
        problems.append("the artifact returns non-finite logits")
    if report.argmax_agreement < gate.min_argmax_agreement:
        problems.append(
            f"argmax agreement {100 * report.argmax_agreement:.2f} % is below the gate's "
            f"{100 * gate.min_argmax_agreement:.2f} %"
        )
    if gate.max_miou_drop is not None and report.miou_drop > gate.max_miou_drop:
        problems.append(f"mIoU drop {report.miou_drop:.2f} points exceeds the gate's {gate.max_miou_drop:.2f}")
    if problems:
        raise ParityError(
            f"{stage} artifact fails the parity gate against {against} on {report.images} images: "
            + "; ".join(problems)
            + f" (max abs logit diff {report.max_abs_diff:.3g}); no {stage} artifact was kept"
            + (f". Likely why: {hint}" if hint else "")
        )
