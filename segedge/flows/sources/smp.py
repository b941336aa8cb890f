"""``--model smp:DIR``: a directory segmentation_models_pytorch's ``model.save_pretrained(DIR)`` wrote.

Such a directory describes itself: ``config.json`` holds the model class (``_model_class``) and every argument
it was built with, ``classes`` among them, and ``model.safetensors`` all its weights, the encoder's included.
It is rebuilt by ``smp.from_pretrained(DIR, encoder_weights=None)``: the saved config usually says
``"encoder_weights": "imagenet"`` (smp's default), and building with that would fetch ImageNet weights from the
Hub only for the file's own weights to overwrite them; offline it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from pathlib import Path

from segedge.core.artifacts import sha256_file
from segedge.core.errors import ArtifactError, InputSizeError, SegedgeError, brief
from segedge.flows.sources import Source, SourceOptions, code_fingerprint, default_name, require_library, torch_source

EXTRA = "smp"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def smp_source(target: str, options: SourceOptions) -> Source:
    what = f"smp:{target}"
    directory = Path(target)
    config = read_config(directory, what)
    if options.input_size is None:
        raise InputSizeError(f"--model {what} needs --input-size HxW (a multiple of its encoder's stride, 32 for most)")
    classes = config.get("classes")
    if not isinstance(classes, int) or classes < 2:
        raise SegedgeError(f"{what} has classes={classes!r} in {CONFIG}: segedge reads C >= 2 class scores from a torch "
                           "model; a one-channel (binary) model goes through its ONNX: --onnx FILE --output logit")
    if config.get("in_channels", 3) != 3:
        raise SegedgeError(f"{what} takes in_channels={config['in_channels']}; segedge feeds it RGB images (3 channels)")
    if config.get("activation") in ("argmax", "argmax2d"):
        raise SegedgeError(f"{what} ends in activation={config['activation']!r} (class ids, not scores): save it with "
                           "activation=None")
    if options.num_classes is not None and options.num_classes != classes:
        raise SegedgeError(f"{what} is for {classes} classes ({CONFIG}: classes={classes}), but --num-classes says "
                           f"{options.num_classes}")
    smp = import_smp(f"--model {what}")
    module = load_saved(smp, directory, config, what)
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        digest.update(name.encode() + b"\0" + sha256_file(directory / name).encode())
    extra = {"library": "segmentation_models_pytorch", "version": getattr(smp, "__version__", "unknown"),
             "architecture": config["_model_class"], "encoder": config.get("encoder_name"),
             "encoder_weights": config.get("encoder_weights")}
    return torch_source(module, default_name(what), what, options.input_size, options.mean, options.std, classes,
                        options.class_names, digest.hexdigest(), code_fingerprint(module), None, options.output_key,
                        extra=extra)


def read_config(directory: Path, what: str) -> dict:
    """``config.json``, refused in words where the directory is not one that smp's ``save_pretrained`` wrote."""
    if not directory.is_dir():
        raise ArtifactError(f"--model {what}: {directory} is not a directory (give the folder smp's "
                            "model.save_pretrained(DIR) wrote)")
    missing = [name for name in (CONFIG, WEIGHTS) if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(f"--model {what}: {directory} has no {' and no '.join(missing)}; give the folder smp's "
                            "model.save_pretrained(DIR) wrote")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory / CONFIG} is unreadable ({brief(exc)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("_model_class"), str):
        raise ArtifactError(f"{directory / CONFIG} names no _model_class: not written by smp's save_pretrained "
                            "(a Hugging Face transformers directory is --model hf:DIR)")
    return config


def import_smp(what: str):
    """segmentation_models_pytorch, or one line naming the extra; it imports torchvision and timm, and a
    torchvision built for another torch fails with a RuntimeError, not an ImportError."""
    try:
        smp = require_library("segmentation_models_pytorch", EXTRA, what)
    except SegedgeError:
        raise
    except Exception as exc:
        import torch

        raise SegedgeError(f"{what} needs segmentation_models_pytorch, which does not import beside torch "
                           f"{torch.__version__} ({type(exc).__name__}: {brief(exc)}): pip install 'segedge[{EXTRA}]' "
                           "with the torchvision built for your torch") from None
    if not hasattr(smp, "from_pretrained"):
        raise SegedgeError(f"{what} needs segmentation_models_pytorch >= 0.3.4 (from_pretrained); this one is "
                           f"{getattr(smp, '__version__', 'older')}: pip install -U 'segedge[{EXTRA}]'")
    return smp


def load_saved(smp, directory: Path, config: dict, what: str):
    """The model as smp loads it (strict: every weight must fit), its "Loading weights from local directory"
    kept off segedge's output; a failure is one line: what does not fit, else smp's own words."""
    cls = config["_model_class"]
    if not hasattr(smp, cls):
        raise SegedgeError(f"{what}: segmentation_models_pytorch {getattr(smp, '__version__', '')} has no model class "
                           f"{cls!r} (from {CONFIG}); it was saved by another smp version")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # smp's multi-line "Mismatched keys" banner before it fails; the refusal below says it in one line
            warnings.filterwarnings("ignore", message=r"\s*!+ Mismatched keys")
            return smp.from_pretrained(str(directory), encoder_weights=None)
    except Exception as exc:
        words = " ".join(str(exc).split()) or type(exc).__name__
        why = misfit(smp, directory, config) or f"{type(exc).__name__}: {brief(ValueError(words))}"
        raise SegedgeError(f"smp cannot load {what} ({cls}, encoder {config.get('encoder_name')}): {why}") from None


def misfit(smp, directory: Path, config: dict) -> str | None:
    """Which weights of ``model.safetensors`` do not fit the model ``config.json`` describes (smp itself reports a
    wrong class count as missing keys), read from the file's header; None where that cannot be told."""
    try:
        from safetensors import safe_open

        with safe_open(str(directory / WEIGHTS), framework="pt") as weights:
            saved = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
        kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
        model = getattr(smp, config["_model_class"])(**{**kwargs, "encoder_weights": None})
    except Exception:
        return None
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}

    def show(keys, shapes=False):
        keys = sorted(keys)
        shown = [f"{k} ({'x'.join(map(str, saved[k]))} in the file, {'x'.join(map(str, own[k]))} in the model)"
                 if shapes else k for k in keys[:3]]
        return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    mismatched = [k for k in own if k in saved and saved[k] != own[k]]
    parts = [f"shape mismatches: {show(mismatched, True)}" if mismatched else "",
             f"missing keys: {show(set(own) - set(saved))}" if set(own) - set(saved) else "",
             f"unexpected keys: {show(set(saved) - set(own))}" if set(saved) - set(own) else ""]
    if not any(parts):
        return None
    return f"{WEIGHTS} does not fit the model its {CONFIG} describes: " + "; ".join(p for p in parts if p)
