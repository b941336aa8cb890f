"""The model registry: one dict of :class:`ModelSpec`, filled by ``@register_model``.

Adding a model is one file in ``segedge/models/`` plus one import line in ``segedge/models/__init__.py``;
tests parametrised over :func:`list_models` then cover it (export, parity, quantization) the day it lands.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from segedge.core.errors import InputSizeError, SegedgeError, UnknownModelError

if TYPE_CHECKING:  # torch is heavy; the registry itself must not import it
    import torch.nn as nn

# ImageNet statistics: what every classic segmentation backbone was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What the deployment chain needs to know about an architecture before building it.

    ``output_stride`` is the factor H and W must be multiples of (the network's total downsampling,
    so skip connections line up and the logits come back at full resolution).
    """

    name: str
    builder: Callable[..., "nn.Module"]
    description: str
    default_input_size: tuple[int, int] = (512, 1024)
    num_classes: int = 19
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output_stride: int = 32
    min_input_size: tuple[int, int] = (64, 64)
    # H and W must be multiples of this; defaults to output_stride. Larger where a module needs it
    # (e.g. PSPNet's 6-bin pooling at stride 8 needs multiples of 48).
    input_multiple: int | None = None
    # capability flags
    dynamic_hw: bool = True  # the exported graph stays correct when H/W vary at run time
    dynamic_hw_reason: str = ""  # why not, when dynamic_hw is False: shown to the user who asks for it
    int8_safe: bool = True  # static Q/DQ quantization keeps accuracy within the default tolerance
    tensorrt_parser_safe: bool = True  # TensorRT's ONNX parser accepts every op of the exported graph
    min_train_batch: int = 2  # BatchNorm on pooled 1x1 maps needs two samples per step
    # which op types get Q/DQ on onnxruntime (graph.int8.OP_SETS) when the user gives none: "auto" times and
    # scores both on the model at export (probe_op_set); a zoo model whose answer was measured names it here, so
    # a busy machine cannot flip a choice that changes accuracy
    int8_op_set: str = "auto"
    aliases: tuple[str, ...] = field(default=())

    @property
    def size_multiple(self) -> int:
        return self.input_multiple or self.output_stride

    def build(self, num_classes: int | None = None, width: float = 1.0) -> "nn.Module":
        """Build the architecture, untrained, in eval mode."""
        if width <= 0:
            raise InputSizeError(f"width must be > 0, got {width}")
        model = self.builder(num_classes=num_classes or self.num_classes, width=width)
        return model.eval()

    def complexity(self, width: float = 1.0, input_size: tuple[int, int] | None = None) -> tuple[int, float]:
        """(parameters, GMACs at ``input_size``), counted on torch's meta device: no memory, no compute."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        size = input_size or self.default_input_size
        with torch.device("meta"):
            model = self.build(width=width)
            x = torch.empty(1, 3, *size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e9

    def flags(self) -> str:
        """Capability flags in a few characters for listings."""
        return ",".join(
            name for name, on in (("dynamic", self.dynamic_hw), ("int8", self.int8_safe), ("trt", self.tensorrt_parser_safe)) if on
        ) or "-"

    def nearest_valid_size(self, height: int, width: int) -> tuple[int, int]:
        """The size closest to ``height`` x ``width`` that the network takes (multiples of ``size_multiple``,
        at least the minimum): what a dataset's native size becomes for training and export."""
        s = self.size_multiple

        def snap(value: int, minimum: int) -> int:
            return max(round(value / s) * s, -(-minimum // s) * s, s)

        return snap(height, self.min_input_size[0]), snap(width, self.min_input_size[1])

    def check_input_size(self, height: int, width: int) -> None:
        """Refuse sizes the network cannot take, naming the nearest sizes it can."""
        s = self.size_multiple
        min_h, min_w = self.min_input_size
        problems = []
        for axis, value, minimum in (("height", height, min_h), ("width", width, min_w)):
            if value < minimum:
                problems.append(f"{axis} {value} is below the minimum {minimum}")
            elif value % s:
                lower, upper = (value // s) * s, (value // s + 1) * s
                near = f"{lower} or {upper}" if lower >= minimum else f"{upper}"
                problems.append(f"{axis} {value} is not a multiple of {s} (nearest valid: {near})")
        if problems:
            raise InputSizeError(
                f"{self.name} cannot take input {height}x{width}: " + "; ".join(problems)
                + f" — {self.name} needs H and W to be multiples of {s}"
            )


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry; a second spec under the same name is a bug and raises."""
    if spec.int8_op_set not in ("auto", "all", "layers"):  # graph.int8.OP_SETS (the graph layer sits above)
        raise ValueError(f"{spec.name}: int8_op_set must be auto, all or layers, got {spec.int8_op_set!r}")
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} is registered twice")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


NOT_FAMILIES = {"blocks", "registry", "checkpoint"}  # shared code in segedge/models/, not architectures
_LOADED = False


def _ensure_models_loaded() -> None:
    """Import (and so register) every family module in segedge/models/, once."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import segedge.models as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name not in NOT_FAMILIES and not info.name.startswith("_"):
            try:
                importlib.import_module(f"{package.__name__}.{info.name}")
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] != "torch":
                    raise
                raise SegedgeError("the model zoo needs torch, which this install lacks: pip install 'segedge[export]' "
                                   "(an exported artifact runs without it: segedge predict, bench --onnx)") from None
    _LOADED = True


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _ensure_models_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name or alias; an unknown name lists the valid ones."""
    _ensure_models_loaded()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(key, names + sorted(_ALIASES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Valid models: {', '.join(names)}")
    return _REGISTRY[key]


def create_model(name: str, num_classes: int | None = None, width: float = 1.0) -> "nn.Module":
    """Build a registered architecture, untrained, in eval mode."""
    return get_spec(name).build(num_classes=num_classes, width=width)
