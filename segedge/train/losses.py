"""Segmentation losses: cross-entropy, Dice, Focal, Tversky, Lovász-Softmax, and weighted sums of them.

Every loss is an ``nn.Module`` called as ``loss(logits, target)`` with logits ``N×C×H×W`` (raw scores, before
softmax) and integer targets ``N×H×W``. Pixels labelled ``ignore_index`` are void: they contribute nothing to
any sum, numerator or denominator, so adding void pixels never changes a loss. A batch with no labelled pixel
at all gives 0 (with a gradient of zeros), not NaN.

The formulas are the seed's (``p`` = softmax probability, ``g`` = one-hot target, sums over the batch's
labelled pixels, per class ``c``; the region losses are averaged over all C classes):

- CE       = -1/N sum_i log p_i,t_i  (torch's ``cross_entropy``: class weights normalise by the summed weights of
  the labelled pixels; label smoothing ε mixes the one-hot target with ε/C everywhere)
- Dice     = 1 - mean_c (2 sum p g + s) / (sum p + sum g + s)        ``squared=False`` (the default)
             1 - mean_c (2 sum p g + s) / (sum p² + sum g² + s)      ``squared=True`` (V-Net's form)
- Focal    = -1/N sum_i α_t (1 - p_t)^γ log p_t     (γ = 0, α = None is CE exactly)
- Tversky  = 1 - mean_c (TP + s) / (TP + α FP + β FN + s), TP = sum p g, FP = sum p (1-g), FN = sum (1-p) g
- Lovász   = Berman, Triki & Blaschko (CVPR 2018), the Lovász extension of the Jaccard loss on the sorted
  errors |g - p|, averaged over the classes present in the target

Choices the seed leaves open, made here:

- **Region losses are batch-level.** Dice and Tversky sum over the whole batch per class, then average the
  C classes. A class absent from the batch's target scores ``s / (sum p + s)``: near 0 loss if the network
  predicts little of it, near 1 if it hallucinates it. With ``smooth=0`` and a class that has neither target
  nor predicted mass the class counts as perfect (loss 0) rather than 0/0.
- **Tversky(0.5, 0.5) is Dice with the linear denominator** (``TP + (FP + FN)/2 = (sum p + sum g)/2``), and
  with smoothing ``s`` it equals ``DiceLoss(smooth=2 s)``: Tversky adds ``s`` to TP, Dice to 2 TP. There is no
  squared Tversky: ``sum p² - TP`` is not a false-positive mass (it can be negative).
- **Focal α.** A scalar α weighs every pixel alike (in the multi-class case it just scales the loss); a list
  gives one α per class, picked by the pixel's true class. Either way the mean is over labelled pixels (the
  seed's 1/N), not over the summed α as torch's weighted CE does, so ``focal`` with γ = 0 and per-class α is
  *not* weighted CE.
- **Lovász per image** averages over images that have at least one labelled pixel (Berman's reference counts
  an all-void image as a 0 loss, which would make void pixels change the loss).

``build_loss("0.5*ce+1.0*dice", num_classes)`` turns a CLI spec into a module; :data:`LOSSES` holds the names.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segedge.core.errors import SegedgeError


class SegmentationLoss(nn.Module):
    """Base: validates ``logits``/``target`` with clear messages, masks void pixels, calls ``_loss``.

    ``params`` documents the keyword parameters a spec may set (name -> kind), for ``build_loss``'s parser and
    its error messages; ``per_class`` names those that hold one value per class.
    """

    params: ClassVar[dict[str, str]] = {}
    per_class: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 4:
            raise ValueError(f"logits must be N×C×H×W, got shape {tuple(logits.shape)}")
        n, c, h, w = logits.shape
        if tuple(target.shape) != (n, h, w):
            raise ValueError(f"target must be N×H×W = {(n, h, w)} for logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError(f"target must hold integer class labels, got dtype {target.dtype}")
        target = target.long()
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= c))
        if bad.any():
            raise SegedgeError(
                f"target holds label {int(target[bad][0])} outside 0..{c - 1} (and is not the ignore index "
                f"{self.ignore_index}); check num_classes and the dataset's void label"
            )
        for name in self.per_class:
            values = getattr(self, name, None)
            if values is not None and values.dim() == 1 and values.numel() != c:
                raise SegedgeError(f"{type(self).__name__}: {name} has {values.numel()} values for {c} classes")
        if not valid.any():
            return logits.sum() * 0.0
        return self._loss(logits, target, valid)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _masked_probs_and_onehot(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """Softmax probabilities and one-hot targets, both N×C×H×W and zero at void pixels."""
    mask = valid.unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * mask
    onehot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype) * mask
    return probs, onehot


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """FP16/BF16 logits are summed in FP32 (mixed-precision training); FP32/FP64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _ratio_or_one(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator per class, 1 where the denominator is 0 (no target and no predicted mass).

    The clamp keeps the unused branch finite, so ``torch.where`` does not leak NaN into the gradient.
    """
    safe = denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    return torch.where(denominator > 0, numerator / safe, torch.ones_like(numerator))


class CrossEntropyLoss(SegmentationLoss):
    """Pixel-wise cross-entropy with optional class weights and label smoothing (torch's semantics)."""

    params = {"weight": "list of C numbers", "label_smoothing": "number in [0, 1)"}
    per_class = ("weight",)

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if weight is not None and any(w < 0 for w in weight):
            raise ValueError(f"class weights must be >= 0, got {list(weight)}")
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))
        self.label_smoothing = float(label_smoothing)

    def _loss(self, logits, target, valid):
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class DiceLoss(SegmentationLoss):
    """Soft Dice per class over the batch, averaged over classes; ``squared`` picks the p² + g² denominator."""

    params = {"squared": "true|false", "smooth": "number >= 0"}

    def __init__(self, squared: bool = False, smooth: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.squared = bool(squared)
        self.smooth = float(smooth)

    def _loss(self, logits, target, valid):
        probs, onehot = _masked_probs_and_onehot(_at_least_float32(logits), target, valid)
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        if self.squared:
            denominator = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
        else:
            denominator = probs.sum(dims) + onehot.sum(dims)
        dice = _ratio_or_one(2 * intersection + self.smooth, denominator + self.smooth)
        return 1 - dice.mean()


class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al. 2017): CE scaled by (1 - p_t)^γ, optionally by α (scalar or one per class)."""

    params = {"gamma": "number >= 0", "alpha": "number or list of C numbers"}
    per_class = ("alpha",)

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        alphas = [alpha] if isinstance(alpha, (int, float)) else alpha
        if alphas is not None and any(a < 0 for a in alphas):
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.tensor(alpha, dtype=torch.float32))

    def _loss(self, logits, target, valid):
        safe_target = torch.where(valid, target, 0).unsqueeze(1)
        log_pt = _at_least_float32(logits).log_softmax(dim=1).gather(1, safe_target).squeeze(1)
        # 1 - p_t, accurate near p_t = 1; the floor keeps d/dx x^γ finite for γ < 1 on a saturated pixel
        # (the clamped branch gets no gradient, and its loss term is ~0 anyway since log p_t ~ 0)
        one_minus_pt = (-torch.expm1(log_pt)).clamp_min(1e-12)
        loss = -(one_minus_pt**self.gamma) * log_pt
        if self.alpha is not None:
            loss = loss * (self.alpha if self.alpha.dim() == 0 else self.alpha[safe_target.squeeze(1)])
        return loss[valid].mean()


class TverskyLoss(SegmentationLoss):
    """Tversky loss (Salehi et al. 2017): α weighs false positives, β false negatives.

    The defaults α = 0.3, β = 0.7 are the paper's best, favouring recall of small structures.
    """

    params = {"alpha": "number >= 0 (false positives)", "beta": "number >= 0 (false negatives)",
              "smooth": "number >= 0"}

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        if alpha < 0 or beta < 0 or smooth < 0:
            raise ValueError(f"alpha, beta and smooth must be >= 0, got {alpha}, {beta}, {smooth}")
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)

    def _loss(self, logits, target, valid):
        probs, onehot = _masked_probs_and_onehot(_at_least_float32(logits), target, valid)
        dims = (0, 2, 3)
        true_pos = (probs * onehot).sum(dims)
        false_pos = probs.sum(dims) - true_pos  # sum p (1 - g) over labelled pixels
        false_neg = onehot.sum(dims) - true_pos  # sum (1 - p) g
        tversky = _ratio_or_one(true_pos + self.smooth,
                                true_pos + self.alpha * false_pos + self.beta * false_neg + self.smooth)
        return 1 - tversky.mean()


class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovász-Softmax (Berman et al. 2018) over the classes present; per batch or averaged per image."""

    params = {"per_image": "true|false"}

    def __init__(self, per_image: bool = False, ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        self.per_image = bool(per_image)

    def _loss(self, logits, target, valid):
        probs = _at_least_float32(logits).softmax(dim=1).permute(0, 2, 3, 1)  # N×H×W×C
        if not self.per_image:
            return _lovasz_softmax_flat(probs[valid], target[valid])
        losses = [_lovasz_softmax_flat(p[v], t[v]) for p, t, v in zip(probs, target, valid) if v.any()]
        return torch.stack(losses).mean()


def _lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs P×C, labels P (labelled pixels only). All classes at once: each column is sorted on its own.

    For class c with errors e = |g - p| sorted descending, the loss is sum_i e_i (J_i - J_{i-1}), where J_i is
    the Jaccard loss when the first i pixels are the errors: 1 - |G \\ top_i| / |G ∪ top_i|.
    """
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    errors = (onehot - probs).abs()
    errors_sorted, order = errors.sort(dim=0, descending=True)
    gt_sorted = onehot.gather(0, order)
    gts = gt_sorted.sum(0)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1 - intersection / union  # union >= 1 for every present class
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    per_class = (errors_sorted * grad).sum(0)
    return per_class[gts > 0].mean()


class WeightedSum(nn.Module):
    """sum_k w_k * loss_k(logits, target): the module ``build_loss`` returns for a spec with ``+`` or ``*``."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a weighted sum needs at least one term")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList([loss for _, loss in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, loss in zip(self.weights, self.losses):
            term = weight * loss(logits, target)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{w:g}" for w in self.weights)


LOSSES: dict[str, type[SegmentationLoss]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "lovasz": LovaszSoftmaxLoss,
}

_SPEC_EXAMPLES = '"ce", "ce+dice", "0.5*ce+1.0*dice", "focal:gamma=2", "tversky:alpha=0.3,beta=0.7"'


def build_loss(spec: str, num_classes: int, ignore_index: int = 255) -> nn.Module:
    """A loss module from a spec: ``[weight*]name[:key=value,...]`` terms joined by ``+``.

    Values are numbers, ``true``/``false``, or ``[a,b,...]`` lists (one per class). A single unweighted term
    returns that loss itself; anything else a :class:`WeightedSum`.
    """
    text = spec.replace(" ", "")
    if not text:
        raise SegedgeError(f"empty loss spec; give one like {_SPEC_EXAMPLES}")
    pieces = re.split(r"(?<![0-9][eE])\+", text)  # '+' joins terms, except the exponent sign in 1e+3
    terms = [_parse_term(piece, spec, num_classes, ignore_index) for piece in pieces]
    if len(terms) == 1 and terms[0][0] is None:
        return terms[0][1]
    return WeightedSum([(1.0 if w is None else w, loss) for w, loss in terms])


def _parse_term(piece: str, spec: str, num_classes: int, ignore_index: int) -> tuple[float | None, nn.Module]:
    if not piece:
        raise SegedgeError(f"loss spec {spec!r} has an empty term; join terms with one '+', e.g. {_SPEC_EXAMPLES}")
    weight = None
    head, _, arguments = piece.partition(":")
    if "*" in head:
        weight_text, _, head = head.partition("*")
        weight = _number(weight_text, f"weight {weight_text!r} in loss spec {spec!r}")
        if not weight > 0 or math.isinf(weight):
            raise SegedgeError(f"weight {weight_text!r} in loss spec {spec!r} must be a positive number")
    name = head.lower()
    if name not in LOSSES:
        raise SegedgeError(f"unknown loss {head!r} in spec {spec!r}; valid names: {', '.join(sorted(LOSSES))} "
                           f"(e.g. {_SPEC_EXAMPLES})")
    cls = LOSSES[name]
    kwargs = {}
    for argument in _split_top_level(arguments) if arguments else []:
        key, equals, value = argument.partition("=")
        if key not in cls.params or not equals:
            raise SegedgeError(
                f"loss {name!r} has no parameter {argument!r} in spec {spec!r}; valid: "
                + (", ".join(f"{k}=<{kind}>" for k, kind in cls.params.items()) or "none")
            )
        kwargs[key] = _value(value, cls.params[key], f"{name}:{key}={value} in loss spec {spec!r}")
        if isinstance(kwargs[key], list) and len(kwargs[key]) != num_classes:
            raise SegedgeError(f"{name}:{key} has {len(kwargs[key])} values in loss spec {spec!r}; "
                               f"give one per class ({num_classes})")
    try:
        return weight, cls(**kwargs, ignore_index=ignore_index)
    except ValueError as error:
        raise SegedgeError(f"loss {name!r} in spec {spec!r}: {error}") from None


def _split_top_level(arguments: str) -> list[str]:
    """Split ``a=1,b=[1,2]`` on the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(arguments):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(arguments[start:i])
            start = i + 1
    parts.append(arguments[start:])
    return parts


def _value(text: str, kind: str, where: str):
    if kind == "true|false":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise SegedgeError(f"{where}: expected true or false")
    if text.startswith("[") and text.endswith("]"):
        if "list" not in kind:
            raise SegedgeError(f"{where}: expected a {kind}, not a list")
        return [_number(item, where) for item in text[1:-1].split(",")]
    if not kind.startswith("number"):
        raise SegedgeError(f"{where}: expected a {kind}, e.g. [1,2,0.5]")
    return _number(text, where)


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SegedgeError(f"{where}: {text!r} is not a number") from None
    if math.isnan(value):
        raise SegedgeError(f"{where}: NaN is not a usable value")
    return value
