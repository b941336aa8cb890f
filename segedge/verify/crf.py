"""DeepLab v1's fully connected CRF, as an optional CPU post-processing step after any backend.

Why: a network with output stride 8 (DeepLab v1 is one) predicts a coarse score map that is
upsampled bilinearly, so its class boundaries are smooth blobs that miss the object's real outline by a few
pixels. DeepLab v1 (Chen et al. 2015, "Semantic image segmentation with deep convolutional nets and fully
connected CRFs") refines the softmax with a fully connected CRF (Krähenbühl & Koltun 2011): every pixel pair
is linked, and mean-field inference pulls a pixel towards the labels of pixels that are near it *and* of a
similar colour, so the boundary snaps to the colour edge the network blurred. The pairwise energy is

    k(i, j) = w1 exp(-|p_i - p_j|^2 / (2 s_xy_b^2) - |I_i - I_j|^2 / (2 s_rgb^2))   (appearance / bilateral)
            + w2 exp(-|p_i - p_j|^2 / (2 s_xy_s^2))                                  (smoothness / spatial)

with a Potts compatibility (a cost only when the two labels differ); the unary is the negative log of the
network's softmax.

Where: it needs the image and the logits of one image, runs in Krähenbühl's C++ code on one CPU core, and has
no ONNX or TensorRT form, so it is a step after whichever runner produced the logits (torch, ONNX Runtime,
TensorRT...), never part of an exported graph; ``segedge eval --crf`` applies it to every output.

Optional: the C++ code comes from the package ``pydensecrf2`` (a maintained fork of pydensecrf, imported as
``pydensecrf``), installed by ``pip install "segedge[crf]"``. segedge imports without it; :func:`refine`
raises :class:`~segedge.core.errors.SegedgeError` saying so, and :func:`crf_available` tells beforehand.

Defaults (:class:`CrfParams`) are DeepLab v1's released settings for PASCAL VOC 2012: bilateral weight
w1 = 4, bilateral position std s_xy_b = 121 px, bilateral colour std s_rgb = 5, spatial weight w2 = 3,
spatial position std s_xy_s = 3 px, 10 mean-field iterations. The position stds are in pixels of the image
the CRF runs on and were tuned on VOC images (about 500x375): on much smaller or larger images scale them
with the width. On 64x128 synthetic scenes, the VOC values unchanged make the bilateral kernel span the
whole image and the gain is within noise, while 30 and 1 px raise mIoU by about 2 points (tests/test_crf.py).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, fields

import numpy as np

from segedge.core.errors import InputSizeError, SegedgeError

INSTALL_COMMAND = 'pip install "segedge[crf]"'


@dataclass(frozen=True)
class CrfParams:
    """Mean-field iterations and the two Gaussian kernels (weights and standard deviations, module docstring).

    Defaults: DeepLab v1's released settings for PASCAL VOC.
    """

    iterations: int = 10
    bilateral_weight: float = 4.0  # w1, compat of the appearance kernel
    bilateral_xy: float = 121.0  # its position std, pixels
    bilateral_rgb: float = 5.0  # its colour std, 0-255 intensity units
    spatial_weight: float = 3.0  # w2, compat of the smoothness kernel
    spatial_xy: float = 3.0  # its position std, pixels

    def validate(self) -> "CrfParams":
        """Raise :class:`InputSizeError` unless iterations >= 1 and every weight and std is positive and finite."""
        iterations = self.iterations
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise InputSizeError(f"CRF iterations must be an integer >= 1, got {iterations!r}")
        for field in fields(self):
            if field.name == "iterations":
                continue
            value = getattr(self, field.name)
            number = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            if not number or not math.isfinite(value) or value <= 0:
                raise InputSizeError(f"CRF {field.name} must be a positive finite number, got {value!r}")
        return self


def _library():
    """``(pydensecrf.densecrf, pydensecrf.utils.unary_from_softmax)``, or a one-line SegedgeError."""
    try:
        densecrf = importlib.import_module("pydensecrf.densecrf")
        utils = importlib.import_module("pydensecrf.utils")
    except ImportError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegedgeError(
            f"the dense CRF needs the optional package pydensecrf2, which cannot be imported ({reason}); "
            f"install it with: {INSTALL_COMMAND}"
        ) from None
    return densecrf, utils.unary_from_softmax


def crf_available() -> bool:
    """Whether :func:`refine` can run here (``pydensecrf2`` imports)."""
    try:
        _library()
    except SegedgeError:
        return False
    return True


def require_crf() -> None:
    """Raise the :class:`SegedgeError` that :func:`refine` would, now: lets a caller fail before slow work."""
    _library()


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax in float64 (the maximum is subtracted before ``exp``)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputSizeError(f"the CRF image must be HxWx3 RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputSizeError(f"the CRF image must be uint8 (0-255 RGB), got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputSizeError(f"the CRF image is empty: shape {image.shape}")
    return image


def _check_logits(logits, height: int, width: int) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim == 4 and logits.shape[0] == 1:
        logits = logits[0]
    elif logits.ndim == 4:
        raise InputSizeError(
            f"refine takes the logits of one image (CxHxW or 1xCxHxW), got a batch of {logits.shape[0]}: "
            "use refine_batch"
        )
    if logits.ndim != 3:
        raise InputSizeError(f"the CRF logits must be CxHxW (or 1xCxHxW), got shape {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        raise InputSizeError(f"the CRF logits must be floating point, got dtype {logits.dtype}")
    classes = logits.shape[0]
    if classes < 2:
        raise InputSizeError(f"the CRF needs logits of at least 2 classes, got {classes}")
    if logits.shape[1:] != (height, width):
        raise InputSizeError(
            f"the CRF logits are {logits.shape[1]}x{logits.shape[2]} (HxW) but the image is {height}x{width}: "
            "resize the logits to the image first"
        )
    if not np.isfinite(logits).all():
        raise InputSizeError("the CRF logits hold NaN or infinite values")
    return logits


def refine(image: np.ndarray, logits: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """Label map (int64 HxW) of one image after DeepLab v1's dense CRF.

    ``image``: uint8 HxWx3 RGB (BGR gives the same result: the colour kernel treats channels alike).
    ``logits``: the network's raw float output for that image, CxHxW or 1xCxHxW, at the image's size.
    Inputs and ``params`` are checked before the library is needed, so a bad call fails the same way
    everywhere; a missing ``pydensecrf2`` raises :class:`SegedgeError`.
    """
    params.validate()
    image = _check_image(image)
    height, width = image.shape[:2]
    logits = _check_logits(logits, height, width)
    densecrf, unary_from_softmax = _library()

    classes = logits.shape[0]
    unary = np.ascontiguousarray(unary_from_softmax(softmax(logits)), dtype=np.float32)  # C x (H*W), -log p
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=float(params.spatial_xy), compat=float(params.spatial_weight))
    crf.addPairwiseBilateral(
        sxy=float(params.bilateral_xy),
        srgb=float(params.bilateral_rgb),
        rgbim=np.ascontiguousarray(image),
        compat=float(params.bilateral_weight),
    )
    marginals = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    return marginals.reshape(classes, height, width).argmax(axis=0)


def refine_batch(images: np.ndarray, logits: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """:func:`refine` over a batch: images uint8 NxHxWx3, logits NxCxHxW, label maps int64 NxHxW."""
    images = np.asarray(images)
    logits = np.asarray(logits)
    if images.ndim != 4:
        raise InputSizeError(f"refine_batch images must be NxHxWx3, got shape {images.shape}")
    if logits.ndim != 4:
        raise InputSizeError(f"refine_batch logits must be NxCxHxW, got shape {logits.shape}")
    if images.shape[0] != logits.shape[0]:
        raise InputSizeError(f"refine_batch got {images.shape[0]} images but {logits.shape[0]} logit maps")
    params.validate()
    if images.shape[0] == 0:
        return np.empty((0, *images.shape[1:3]), dtype=np.int64)
    return np.stack([refine(image, scores, params) for image, scores in zip(images, logits)])
