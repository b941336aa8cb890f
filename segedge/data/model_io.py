"""How to feed a model and read its answer, for models as they come: NCHW or NHWC, one grey or three RGB
channels, any input scale, class scores or a single sigmoid/logit channel, at the input's resolution or below.

segedge's own models and any ``nn.Module`` are the canonical case (NCHW RGB in, N×C×H×W class scores out at
the input's size). An ONNX made elsewhere is read for what it is (:func:`model_io_from_onnx`) and the
difference is bridged here, outside the graph, so the artifact segedge times is the user's model unchanged:
:meth:`ModelIO.feed` turns uint8 images into the model's input, :meth:`ModelIO.scores` turns its output into
N×C×H×W scores at the label size (transposed, a one-channel output made two classes by its threshold, and a
lower-resolution output resized bilinearly as mmseg does before scoring).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from segedge.core.errors import SegedgeError
from segedge.data.transforms import to_network_input

LAYOUTS = ("NCHW", "NHWC")
OUTPUTS = ("scores", "sigmoid", "logit")
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma, as PIL's convert("L")


@dataclass(frozen=True)
class ModelIO:
    input_layout: str = "NCHW"
    channels: int = 3
    output_layout: str = "NCHW"
    output: str = "scores"  # scores: C >= 2 class scores (argmax); sigmoid/logit: one channel, two classes
    threshold: float = 0.5  # sigmoid/logit: foreground where the probability exceeds it
    resized: bool = False  # the output is at a lower resolution and is resized to the label size to be scored

    def __post_init__(self) -> None:
        if self.input_layout not in LAYOUTS or self.output_layout not in LAYOUTS:
            raise SegedgeError(f"layouts are {' or '.join(LAYOUTS)}, got {self.input_layout}/{self.output_layout}")
        if self.channels not in (1, 3):
            raise SegedgeError(f"segedge feeds 1 (grey) or 3 (RGB) input channels, not {self.channels}")
        if self.output not in OUTPUTS:
            raise SegedgeError(f"--output is one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if not 0.0 < self.threshold < 1.0:
            raise SegedgeError(f"--threshold is a probability in (0, 1), got {self.threshold}")

    @property
    def canonical(self) -> bool:
        return self == ModelIO()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "the manifest") -> "ModelIO":
        """A manifest's ``io`` record; unknown keys or values are refused by name (the manifest was edited)."""
        if not data:
            return cls()
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise SegedgeError(f"{where} io has unknown key(s) {', '.join(map(repr, unknown))} (known: "
                               f"{', '.join(cls.__dataclass_fields__)}); the manifest was edited: export again")
        try:
            return cls(**data)
        except SegedgeError as exc:
            raise SegedgeError(f"{where} io: {exc}") from None

    def describe(self) -> str:
        parts = [f"{self.input_layout} {'grey' if self.channels == 1 else 'RGB'} in",
                 f"{self.output_layout} out" if self.output == "scores" else
                 f"one {self.output} channel out (two classes at {self.threshold})"]
        if self.resized:
            parts.append("output resized to the label size")
        return ", ".join(parts)

    # feeding ---------------------------------------------------------------------------------------------

    def feed(self, images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
        """uint8 N×H×W×3 (or one H×W×3) images → the model's float32 input: grey when it takes one channel,
        normalised with one mean/std per channel (0–1 scale), in its layout."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if self.channels == 1 and images.shape[-1] == 3:
            images = (images.astype(np.float32) @ GREY_WEIGHTS)[..., None]
        mean, std = _per_channel(mean, self.channels, "mean"), _per_channel(std, self.channels, "std")
        x = to_network_input(images, mean, std)  # N×C×H×W
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.input_layout == "NHWC" else x

    # reading ---------------------------------------------------------------------------------------------

    def scores(self, output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The model's raw output → float32 N×C×H×W class scores at ``size`` (argmax gives the class map)."""
        out = np.asarray(output, dtype=np.float32)
        if out.ndim != 4:
            raise SegedgeError(f"the model returns a {out.ndim}-D output {out.shape}; segedge reads N×C×H×W or N×H×W×C")
        if self.output_layout == "NHWC":
            out = out.transpose(0, 3, 1, 2)
        if self.output != "scores":
            if out.shape[1] != 1:
                raise SegedgeError(f"--output {self.output} reads one channel, the model returns {out.shape[1]}")
            # two-class scores whose argmax is "foreground above the threshold": compare the channel with the
            # threshold on its own scale (a probability, or the logit of the threshold)
            cut = self.threshold if self.output == "sigmoid" else float(np.log(self.threshold / (1 - self.threshold)))
            out = np.concatenate([np.full_like(out, cut), out], axis=1)
        if tuple(out.shape[2:]) != tuple(size):
            out = resize_scores(out, size)
        return np.ascontiguousarray(out)

    def num_classes(self, output_channels: int) -> int:
        return 2 if self.output != "scores" else output_channels


def check_normalization(mean: Sequence[float], std: Sequence[float], where: str = "") -> None:
    """Refuse a mean or std that would score garbage in silence: NaN or inf anywhere, a std of zero or below
    (a division by zero gives inf inputs, then an all-one-class mask). ``where`` names whose values they are."""
    try:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):
        raise SegedgeError(f"{where or 'normalisation'}: mean {mean!r} / std {std!r} are not numbers") from None
    bad = [f"mean {v}" for v in mean if not np.isfinite(v)] + [f"std {v}" for v in std if not np.isfinite(v) or v <= 0]
    if bad:
        raise SegedgeError(f"{where + ': ' if where else ''}{', '.join(bad)} cannot normalise an image: the mean must be "
                           "finite and the std finite and above 0 (0–1 scale; --mean 0 --std 1 for a model that takes 0..1)")


def output_fits(output: tuple, size: tuple) -> bool:
    """An output at the input's H×W, or at one integer fraction of both (a stride-2/4/8 head, resized to the labels
    before scoring): the one rule for torch modules, their exports and ONNX files made elsewhere."""
    output, size = tuple(output), tuple(size)
    if output == size:
        return True
    return (len(output) == len(size) == 2
            and all(isinstance(o, int) and 0 < o < s and s % o == 0 for o, s in zip(output, size))
            and size[0] // output[0] == size[1] // output[1])


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if any(not np.isfinite(v) or (what == "std" and v <= 0) for v in values):
        check_normalization(values if what == "mean" else (), values if what == "std" else ())
    if len(values) == channels:
        return values
    if channels == 1 and len(values) == 3:  # an RGB normalisation for a grey model: its luma
        return (float(np.dot(values, GREY_WEIGHTS)),)
    if len(values) == 1:
        return values * channels
    raise SegedgeError(f"--{what} gives {len(values)} values for a model with {channels} input channels")


def resize_scores(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of N×C×h×w scores to ``size`` (align_corners=False, as mmseg's ``resize`` and
    torch's ``interpolate`` do), so a stride-4 head is scored at the label's resolution."""
    n, c, h, w = scores.shape
    height, width = size

    def axis(src: int, dst: int):
        pos = np.clip((np.arange(dst, dtype=np.float64) + 0.5) * src / dst - 0.5, 0, src - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, src - 1)
        return low, high, (pos - low).astype(np.float32)

    y0, y1, wy = axis(h, height)
    x0, x1, wx = axis(w, width)
    rows = scores[:, :, y0, :] * (1 - wy)[None, None, :, None] + scores[:, :, y1, :] * wy[None, None, :, None]
    return (rows[..., x0] * (1 - wx) + rows[..., x1] * wx).astype(np.float32)


def model_io_from_onnx(model, path: str, layout: str | None = None, output: str | None = None,
                       threshold: float = 0.5) -> tuple[ModelIO, tuple[int | None, ...]]:
    """What an ONNX graph takes and gives, read from its input's shape and its last node; ``layout`` and
    ``output`` (the --layout/--output flags) decide where the graph cannot. Returns (io, input dims)."""
    import onnx

    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise SegedgeError(f"{path} has {len(inputs)} inputs and {len(model.graph.output)} outputs; segedge needs "
                           "one image input and one output")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise SegedgeError(f"{path}: input {inputs[0].name} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}; "
                           "segedge feeds float32")
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
    if len(dims) != 4:
        raise SegedgeError(f"{path}: input {inputs[0].name} is shaped {list(dims)}; segedge needs a 4-D image batch "
                           "(N×C×H×W or N×H×W×C)")
    if layout is None:
        nchw, nhwc = dims[1] in (1, 3), dims[3] in (1, 3)
        if nchw == nhwc:
            raise SegedgeError(f"{path}: cannot tell the layout of input {list(dims)}; give --layout nchw or nhwc")
        layout = "NCHW" if nchw else "NHWC"
    layout = layout.upper()
    channels = dims[1] if layout == "NCHW" else dims[3]
    if channels not in (1, 3):
        raise SegedgeError(f"{path}: input {list(dims)} read as {layout} has {channels} channels; segedge feeds 1 or 3")
    last = next((n for n in reversed(model.graph.node) if model.graph.output[0].name in n.output), None)
    if output is None:
        output = "sigmoid" if last is not None and last.op_type == "Sigmoid" else "scores"
    io = ModelIO(input_layout=layout, channels=channels, output_layout=layout, output=output, threshold=threshold)
    return io, dims
