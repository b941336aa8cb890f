"""``--model hf:DIR``: a Hugging Face transformers semantic-segmentation model as ``save_pretrained`` wrote it
(SegFormer, UperNet, DPT, BEiT, MobileViT, whatever ``AutoModelForSemanticSegmentation`` loads), read offline.

The directory describes itself, so nothing is retyped: class names from ``config.json``'s ``id2label``,
normalisation and input size from ``preprocessor_config.json``, each unless the command line says otherwise.
The processor's normalisation is converted to segedge's 0–1 scale (``rescale_factor`` and ``do_rescale`` folded
into mean and std) and checked by running the processor itself; a BGR model (MobileViT's
``do_flip_channel_order``) gets its channel flip inside the exported graph, so images are fed RGB for every model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from segedge.core.artifacts import sha256_file
from segedge.core.errors import CheckpointError, InputSizeError, SegedgeError, brief
from segedge.flows.sources import (Source, SourceOptions, code_fingerprint, default_name, require_library,
                                   torch_source)

PREPROCESSOR = "preprocessor_config.json"
# what from_pretrained loads, in its order of preference: one file, or an index naming the shards
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack")


def hf_source(target: str, options: SourceOptions) -> Source:
    """The FP32 reference of ``hf:DIR``: the model ``AutoModelForSemanticSegmentation`` loads from DIR (never the
    network, never custom code), with DIR's classes, normalisation and size where the user gave none."""
    directory = Path(target).expanduser()
    what = f"hf:{target}"
    config = _read_config(directory, what)
    if options.checkpoint is not None:
        raise CheckpointError(f"{what} loads its weights from the directory; --checkpoint is for segedge's zoo and "
                              f"package.module:function models (save fine-tuned weights with save_pretrained instead)")
    require_library("torch", "export", f"--model {what}")
    with hub_offline():
        transformers = require_library("transformers", "hf", f"--model {what}")
        _require_segmentation(config, what)
        weights = weight_files(directory, what)
        module = _load(transformers, directory, what)
        names = _class_names(config, options, what)
        processor = image_processor(transformers, directory, options, what)
    mean, std, flip = normalization(processor, what) if processor is not None else (None, None, False)
    mean, std = options.mean or mean, options.std or std
    size = options.input_size or (processor_size(processor, what) if processor is not None else None)
    if size is None:
        built = config.get("image_size")
        raise InputSizeError(f"{what} has no {PREPROCESSOR} with an image size: give --input-size HxW"
                             + (f" (config.json's image_size is {built})" if built else ""))
    architecture = type(module).__name__
    if flip:
        module = bgr_input(module)
    digest = hashlib.sha256()
    for file in (directory / "config.json", *weights):
        digest.update(file.name.encode() + b"\0" + sha256_file(file).encode())
    extra = {"library": "transformers", "version": transformers.__version__, "architecture": architecture,
             "preprocessing": type(processor).__name__ if processor is not None else "segedge's defaults where not given",
             **({"channel_order": "BGR (flipped inside the graph)"} if flip else {})}
    try:
        return torch_source(module, default_name(what), what, tuple(size), mean, std, options.num_classes, names,
                            digest.hexdigest(), code_fingerprint(module), output_key=options.output_key, extra=extra)
    except SegedgeError as exc:
        hint = _size_hint(module, tuple(size), config)
        if hint:
            raise InputSizeError(f"{exc}; {hint}") from None
        raise


@contextmanager
def hub_offline():
    """HF_HUB_OFFLINE for the load: huggingface_hub reads it once, at import, so the flag is also set on its
    constants when it is already imported (first imported here, it stays offline for the process: segedge never
    needs the hub). ``local_files_only`` alone already keeps a directory path off the network."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update({key: "1" for key in keys})
    constants = sys.modules.get("huggingface_hub.constants")
    was = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = was


def _read_config(directory: Path, what: str) -> dict:
    if not directory.is_dir():
        raise SegedgeError(f"{what}: no directory {directory} (give the folder save_pretrained wrote)")
    path = directory / "config.json"
    if not path.is_file():
        raise SegedgeError(f"{what}: {directory} has no config.json; give the folder save_pretrained wrote")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SegedgeError(f"{what}: {path} is unreadable ({brief(exc)})") from None
    if not isinstance(config, dict):
        raise SegedgeError(f"{what}: {path} holds no model configuration")
    return config


def weight_files(directory: Path, what: str) -> list[Path]:
    """The files from_pretrained will read: safetensors before a pickle, a sharded index with its shards."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{what}: {path} is not a readable shard index ({brief(exc)})") from None
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{what}: {name} names {len(missing)} missing shard(s), first {missing[0]}")
        return [path, *(directory / s for s in shards)]
    other = [name for name in OTHER_FRAMEWORKS if (directory / name).is_file()]
    if other:
        raise CheckpointError(f"{what} holds {other[0]} only; segedge reads PyTorch weights: save the model from "
                              f"transformers' PyTorch class (model.safetensors)")
    raise CheckpointError(f"{what} has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); "
                          f"save_pretrained writes them beside it")


def _require_segmentation(config: dict, what: str) -> None:
    """A model of another task (a BERT, an image classifier) is refused by its config, before any weight is read."""
    known = _mapping_names()
    kind = config.get("model_type")
    if known and kind and kind not in known:
        arch = ", ".join(config.get("architectures") or []) or kind
        raise SegedgeError(f"{what} is a {arch} ({kind!r}), not a semantic-segmentation model; hf: reads what "
                           f"AutoModelForSemanticSegmentation loads ({', '.join(sorted(known))})")


def _load(transformers, directory: Path, what: str):
    """``AutoModelForSemanticSegmentation`` with eager attention: the plain MatMul/Softmax every backend and the INT8
    quantizer read (SDPA exports too, at opset 18 decomposed with 18 more Mul/Transpose on a 4-layer BEiT).
    Weights the files lack (a backbone checkpoint under a new head) are refused: a random head scores noise."""
    try:
        with quiet_transformers(transformers):
            module, info = transformers.AutoModelForSemanticSegmentation.from_pretrained(
                str(directory), local_files_only=True, trust_remote_code=False, attn_implementation="eager",
                output_loading_info=True)
    except (ValueError, OSError, RuntimeError, KeyError, TypeError) as exc:  # the library's words, on one line
        raise CheckpointError(f"{what}: transformers {transformers.__version__} cannot load it: {type(exc).__name__}: "
                              f"{brief(exc)}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointError(f"{what}'s weights lack {len(missing)} of the model's tensors (first {missing[0]}): a "
                              f"backbone or another task's checkpoint, whose missing layers would be random")
    return module.eval()


@contextmanager
def quiet_transformers(transformers):
    """No loading bar or warnings on the CLI while the model loads: what matters is checked and said here."""
    logging = transformers.utils.logging
    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _mapping_names() -> list[str]:
    """The model types AutoModelForSemanticSegmentation loads, for the refusal of any other."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
    except ImportError:
        return []
    return list(MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES)


def _class_names(config: dict, options: SourceOptions, what: str) -> tuple[str, ...] | None:
    """The user's class names, else ``id2label`` ordered by id (ids 0..n-1, as the logits' channels are)."""
    labels = config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in labels.items()}
    except (AttributeError, ValueError):
        raise SegedgeError(f"{what}: config.json's id2label is not a mapping of class ids to names") from None
    if by_id and sorted(by_id) != list(range(len(by_id))):
        raise SegedgeError(f"{what}: config.json's id2label ids are not 0..{len(by_id) - 1}; give --class-names")
    if options.num_classes is not None and by_id and options.num_classes != len(by_id):
        raise SegedgeError(f"{what} has {len(by_id)} classes (config.json id2label) but --num-classes says "
                           f"{options.num_classes}")
    if options.class_names:
        return tuple(options.class_names)
    return tuple(by_id[i] for i in range(len(by_id))) or None


def image_processor(transformers, directory: Path, options: SourceOptions, what: str):
    """The image processor ``preprocessor_config.json`` describes, as ``AutoImageProcessor`` builds it: its class
    defaults count as much as the saved keys (MobileViT saves an image_mean it never applies). None without the
    file, or when it does not load and the command line gives everything it would have said."""
    if not (directory / PREPROCESSOR).is_file():
        return None
    try:
        with quiet_transformers(transformers):
            return transformers.AutoImageProcessor.from_pretrained(str(directory), local_files_only=True,
                                                                   trust_remote_code=False)
    except Exception as exc:  # a processor class this transformers lacks, a broken file: one line either way
        if options.mean and options.std and options.input_size:
            return None
        raise SegedgeError(f"{what}: {PREPROCESSOR} does not load in transformers {transformers.__version__} "
                           f"({type(exc).__name__}: {brief(exc)}); give --mean, --std and --input-size") from None


def normalization(processor, what: str) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """(mean, std, flip to BGR) on segedge's scale, the image as 0–1 RGB then (x - mean) / std, checked by running
    the processor itself on two plain colours: a processor that computes anything else is refused by name.

    A processor computes ``(pixel * r - m) / s`` on 0–255 pixels, ``r`` its rescale_factor (1 when it does not
    rescale), ``m``/``s`` 0 and 1 when it does not normalise; with ``x = pixel / 255`` that is
    ``(x - m / 255r) / (s / 255r)``, the same network input. MobileViT then flips RGB to BGR.
    """
    rescale = float(getattr(processor, "rescale_factor", None) or 1 / 255) if getattr(processor, "do_rescale", True) else 1.0
    if getattr(processor, "do_normalize", False):
        mean = _per_channel(getattr(processor, "image_mean", None), what, "image_mean")
        std = _per_channel(getattr(processor, "image_std", None), what, "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if not rescale > 0 or any(not v > 0 for v in std):
        raise SegedgeError(f"{what}: {PREPROCESSOR} has rescale_factor {rescale} and image_std {list(std)}, which "
                           f"cannot normalise an image: give --mean and --std (0–1 scale)")
    scale = 255.0 * rescale
    mean, std = tuple(round(m / scale, 8) for m in mean), tuple(round(v / scale, 8) for v in std)
    flip = bool(getattr(processor, "do_flip_channel_order", False))
    _check_processor(processor, mean, std, flip, what)
    return mean, std, flip


def _check_processor(processor, mean, std, flip: bool, what: str) -> None:
    """The processor's own output on two plain colours (unchanged by any resize, crop or pad at their centre)
    against what segedge feeds with ``mean``/``std``: the conversion is measured, not assumed."""
    import numpy as np

    colours = np.array([[12, 128, 250], [240, 70, 3]], np.uint8)
    images = [np.broadcast_to(c, (64, 64, 3)).copy() for c in colours]
    try:
        out = np.asarray(processor(images=images, return_tensors="np")["pixel_values"], np.float32)
        got = out[:, :, out.shape[2] // 2, out.shape[3] // 2]
    except Exception as exc:
        raise SegedgeError(f"{what}: its {type(processor).__name__} fails on a 64x64 RGB image ({type(exc).__name__}: "
                           f"{brief(exc)}); give --mean, --std and --input-size") from None
    want = (colours / 255.0 - np.array(mean)) / np.array(std)
    want = want[:, ::-1] if flip else want
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-3):
        raise SegedgeError(f"{what}: its {type(processor).__name__} does not compute (x - mean) / std per RGB channel "
                           f"from its settings (mean {list(mean)}, std {list(std)} on the 0–1 scale); give --mean "
                           f"and --std for the input the model was trained on")


def _per_channel(value, what: str, key: str) -> tuple[float, ...]:
    if value is None:
        raise SegedgeError(f"{what}: {PREPROCESSOR} normalises but gives no {key}; give --mean and --std (0–1 scale)")
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise SegedgeError(f"{what}: {PREPROCESSOR}'s {key} {value!r} is not one number per RGB channel")
    return tuple(float(v) for v in values)


def processor_size(processor, what: str) -> tuple[int, int] | None:
    """The H×W the processor hands the model: its centre crop when it crops, else its ``size`` ({height, width},
    a square ``shortest_edge``, or one number), rounded up to ``ensure_multiple_of``/``size_divisor``."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or getattr(processor, "size", None)
    if size is None:
        return None
    height, width, edge = (_field(size, key) for key in ("height", "width", "shortest_edge"))
    if isinstance(size, (int, float)):
        hw = (int(size), int(size))
    elif height and width:
        hw = (int(height), int(width))
    elif edge:
        hw = (int(edge), int(edge))
    else:
        raise InputSizeError(f"{what}: {PREPROCESSOR}'s size {size!r} names no height and width; give --input-size HxW")
    multiple = int(getattr(processor, "ensure_multiple_of", None) or getattr(processor, "size_divisor", None) or 1)
    return tuple(-(-v // multiple) * multiple for v in hw)


def _field(size, key: str):
    """A size's field: a dict in transformers 4, a SizeDict (attributes and items) in 5."""
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _size_hint(module, size: tuple[int, int], config: dict) -> str:
    """Why the model refused ``size``, as the size to ask for: the image size its config was built for (ViTs
    without interpolated position embeddings), or the nearest multiple of the stride it scores at."""
    import torch

    built = config.get("image_size")
    built = (built, built) if isinstance(built, int) else tuple(built) if isinstance(built, (list, tuple)) else None
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, 3, *size))
    except Exception:
        if built and tuple(built) != tuple(size):
            return f"config.json says image_size {built[0]}x{built[1]}: try --input-size {built[0]}x{built[1]}"
        return ""
    scores = getattr(out, "logits", out)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 4:
        return ""
    stride = max(1, round(size[0] / int(scores.shape[2])))
    nearest = tuple(max(stride, round(v / stride) * stride) for v in size)
    if nearest == tuple(size):
        return ""
    return f"it scores at 1/{stride} of the input: try --input-size {nearest[0]}x{nearest[1]}"


def bgr_input(module):
    """``module`` behind a channel flip: a model trained on BGR (MobileViT's processor flips RGB→BGR after
    rescaling) takes RGB images like every other, and the flip is part of the exported graph."""
    import torch

    class FlipChannels(torch.nn.Module):
        """The wrapped model, fed its channels in reverse order."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.flip(1))

    return FlipChannels(module).eval()
