"""``segedge.Predictor``: the chosen artifact inside the user's application: camera frame in, class mask out.

What the glue would otherwise be written by hand, read from the artifact's manifest: which file holds the
precision, the normalisation, the input layout and channels (:class:`~segedge.data.model_io.ModelIO`), and the
size the model takes. A frame of any size is resized to a fixed-size model's input, or padded to the stride
of a dynamic one, and the mask comes back at the frame's size. Nothing here imports torch.

    predictor = Predictor("export/bisenet/<hash>", precision="int8")
    mask = predictor(frame)                 # H×W uint8 class ids, frame: H×W×3 uint8 RGB (bgr=True for OpenCV)
    for mask in predictor.stream(frames):   # an iterator of frames
        ...
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from segedge.backends.base import default_threads
from segedge.core.artifacts import check_manifest_shape, verified_stage_file
from segedge.core.errors import ArtifactError, RunnerInputError, SegedgeError
from segedge.core.precision import INT8_STAGES, PRECISIONS, get_precision
from segedge.data.model_io import ModelIO, resize_scores
from segedge.data.transforms import class_map, resize_bilinear, resize_nearest

def _resizers():
    """(bilinear image resize, nearest mask resize): OpenCV's (a dependency: 1080p → 512x1024 in 7.3 ms against
    59.7 ms in numpy, benchmarks/bench_predictor.py), else segedge's numpy ones, with the same pixel centres."""
    try:
        import cv2
    except ImportError:
        return resize_bilinear, resize_nearest

    def bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    return bilinear, nearest


PREFERRED = ("int8", "fp32", "fp16")  # without --precision: INT8 where exported, else FP32 (FP16 is slow on CPUs)
DEFAULT_MULTIPLE = 32  # manifests written before the size multiple was recorded


@dataclass
class Timings:
    """Milliseconds spent per stage over the frames predicted so far (end-to-end FPS and its split)."""

    frames: int = 0
    pre_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0

    @property
    def fps(self) -> float:
        total = self.pre_ms + self.infer_ms + self.post_ms
        return 1000.0 * self.frames / total if total > 0 else 0.0

    def describe(self) -> str:
        n = max(self.frames, 1)
        return (f"{self.frames} frames, {self.fps:.1f} FPS end to end: pre-processing {self.pre_ms / n:.1f} ms, "
                f"inference {self.infer_ms / n:.1f} ms, post-processing {self.post_ms / n:.1f} ms per frame")


def _stage(precision: str, stages: dict, backend: str) -> str:
    """The stage a precision runs from: for INT8 on OpenVINO, NNCF's graph where exported, else segedge's own."""
    stage = get_precision(precision).stage
    if stage != "int8":
        return stage
    order = ("int8-nncf", "int8") if backend == "openvino" else ("int8",)  # onnxruntime refuses NNCF's zero points
    return next((s for s in order if s in stages), "int8")


@dataclass
class Predictor:
    """A segedge artifact as a function from images to class masks. ``artifact`` is an artifact directory (the
    file is picked by ``precision``) or one of its model files (its manifest beside it)."""

    artifact: str | Path
    backend: str | None = None  # None: the bundle's (segedge ship records it), else onnxruntime
    precision: str | None = None
    threads: int | None = None
    timings: Timings = field(default_factory=Timings)
    profile: object = None  # a segedge profile: the backend's device and settings (None: the backend's defaults)

    def __post_init__(self) -> None:
        path = Path(self.artifact)
        directory = path if path.is_dir() else path.parent
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise ArtifactError(f"{path} has no segedge manifest.json beside it; predict takes what `segedge export` "
                                f"wrote (a directory under export/ or a model file in one)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"manifest {manifest_path} is unreadable ({exc})") from None
        check_manifest_shape(manifest, manifest_path)
        if self.backend is None:
            shipped = manifest.get("ship") if isinstance(manifest.get("ship"), dict) else {}
            self.backend = str(shipped.get("backend") or "onnxruntime")
        stages = manifest["stages"]
        if path.is_file():
            stage = next((s for s, e in stages.items() if e["file"] == path.name), None)
            if stage is None:
                raise ArtifactError(f"{path.name} is not a stage of {manifest_path}")
            if self.precision is None:
                self.precision = "int8" if stage in INT8_STAGES else next(
                    (p.name for p in PRECISIONS.values() if p.stage == stage), "fp32")
            elif stage not in {get_precision(self.precision).stage} | (set(INT8_STAGES) if self.precision == "int8" else set()):
                raise ArtifactError(f"{path.name} holds the {stage} stage, not {self.precision}")
        elif self.precision is None:
            self.precision = next(p for p in PREFERRED if _stage(p, stages, self.backend) in stages or p == "fp32")
        stage = stage if path.is_file() else _stage(self.precision, stages, self.backend)
        if stage not in stages:
            from segedge.backends.registry import get_backend

            runs = get_backend(self.backend)
            have = [p.name for p in PRECISIONS.values() if _stage(p.name, stages, self.backend) in stages
                    and not runs.refuses(p.name, self.profile, None)]  # only what this backend would run
            raise ArtifactError(f"{directory} has no {self.precision} artifact (it has {', '.join(have)}); export it "
                                f"with --{self.precision}")
        self.file = verified_stage_file(directory, stage, stages[stage])  # a swapped file is refused, never run
        self.manifest = manifest
        self.io = ModelIO.from_dict(manifest.get("io"), f"manifest {manifest_path}")
        norm = manifest.get("normalization", {})
        self.mean, self.std = tuple(norm.get("mean", ())), tuple(norm.get("std", ()))
        config = manifest.get("config", {})
        self.size = tuple(config.get("input_size", ()))
        self.dynamic = bool(config.get("dynamic"))
        self.multiple = int(manifest.get("size_multiple") or DEFAULT_MULTIPLE)
        self.class_names = tuple(manifest.get("class_names", ()))
        self._bilinear, self._nearest = _resizers()
        from segedge.backends.registry import get_backend

        backend = get_backend(self.backend)
        refusal = backend.refuses(self.precision, self.profile, None)
        if refusal:
            raise SegedgeError(refusal)
        # a profile says how to build the backend's own form (a TensorRT engine); without one the file runs as is
        prepared = backend.prepare(self.file, self.profile, self.size, precision=self.precision) if self.profile is not None else self.file
        self._runner = backend.runner(prepared, precision=self.precision, threads=self.threads or default_threads(),
                                      profile=self.profile, manifest=manifest)
        self._runner.__enter__()

    def close(self) -> None:
        self._runner.__exit__(None, None, None)

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # one frame ---------------------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray, bgr: bool = False, scores: bool = False):
        """A class-id mask (uint8, the image's H×W) of one H×W×3 uint8 image (RGB; ``bgr`` for OpenCV frames) or
        an H×W grey one; with ``scores``, also the per-class scores at the image's size (C×H×W float32)."""
        started = time.perf_counter()
        rgb = self._as_rgb(image, bgr)
        height, width = rgb.shape[:2]
        model_input, crop = self._fit(rgb)
        x = self.io.feed(model_input, self.mean, self.std)
        fed = time.perf_counter()
        out = self._runner.infer(x)
        ran = time.perf_counter()
        size = model_input.shape[:2]
        class_scores = self.io.scores(out, size)[0]
        if crop is not None:  # padded to the stride: cut the padding off
            class_scores = class_scores[:, : crop[0], : crop[1]]
            mask = class_map(class_scores)
        else:  # resized to the model's size: back to the frame's
            mask = class_map(class_scores)
            if mask.shape != (height, width):
                mask = self._nearest(mask, (height, width))
        result = mask
        if scores:
            full = class_scores if class_scores.shape[1:] == (height, width) else \
                resize_scores(class_scores[None], (height, width))[0]
            result = (mask, full)
        done = time.perf_counter()
        self.timings.frames += 1
        self.timings.pre_ms += 1000 * (fed - started)
        self.timings.infer_ms += 1000 * (ran - fed)
        self.timings.post_ms += 1000 * (done - ran)
        return result

    def predict_batch(self, images: Iterable[np.ndarray], bgr: bool = False) -> list[np.ndarray]:
        return [self(image, bgr=bgr) for image in images]

    def stream(self, frames: Iterable[np.ndarray], bgr: bool = False) -> Iterator[np.ndarray]:
        for frame in frames:
            yield self(frame, bgr=bgr)

    # helpers -----------------------------------------------------------------------------------------------

    def _as_rgb(self, image: np.ndarray, bgr: bool) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise RunnerInputError(f"expected a uint8 image (H×W×3 RGB, or H×W grey), got {image.dtype}")
        if image.ndim in (2, 3) and 0 in image.shape[:2]:  # OpenCV's resize would fail on it with a traceback
            raise RunnerInputError(f"got an empty image ({image.shape[0]}×{image.shape[1]}): a frame needs at least "
                                   "one pixel; a camera or decoder that gives one has failed")
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise RunnerInputError(f"expected an H×W×3 RGB image or an H×W grey one, got shape {image.shape}")
        image = image[..., :3]
        return np.ascontiguousarray(image[..., ::-1]) if bgr else image

    def _fit(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """(the image at a size the model takes, the region to crop back, or None when it was resized)."""
        height, width = rgb.shape[:2]
        if not self.dynamic:
            if (height, width) == tuple(self.size):
                return rgb, None
            return self._bilinear(rgb, tuple(self.size)), None
        m = self.multiple
        padded_h, padded_w = -(-height // m) * m, -(-width // m) * m
        if (padded_h, padded_w) == (height, width):
            return rgb, (height, width)
        canvas = np.zeros((padded_h, padded_w, 3), np.uint8)
        canvas[:height, :width] = rgb
        return canvas, (height, width)
