"""``--model torchvision:NAME``: one of ``torchvision.models.segmentation``'s builders with the user's weights.

The builder is called with ``weights=None, weights_backbone=None`` (nothing is downloaded), and the head is
sized from the checkpoint itself: the class count is its classifier's last conv, ``aux_loss`` whether it holds
``aux_classifier`` keys. A checkpoint is a raw state dict or the one torchvision's reference training script
writes (``{"model": ..., "args": Namespace, ...}``). The module is named ``tvision`` so that it never shadows
torchvision itself.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from segedge.core.artifacts import sha256_file
from segedge.core.errors import CheckpointError, InputSizeError, SegedgeError, brief
from segedge.flows.sources import (Source, SourceOptions, code_fingerprint, load_state_dict_into, require_library,
                                   torch_source)

EXTRA = "torchvision"


def torchvision_source(target: str, options: SourceOptions) -> Source:
    what = f"torchvision:{target}"
    if options.input_size is None:
        raise InputSizeError(f"--model {what} needs --input-size HxW (torchvision's segmentation models take any size)")
    torchvision = import_torchvision(f"--model {what}")
    from torchvision.models import get_model, list_models, segmentation

    builders = list_models(module=segmentation)
    if target not in builders:
        raise SegedgeError(f"--model {what}: torchvision {torchvision.__version__} has no segmentation builder "
                           f"{target!r}; one of: {', '.join(builders)}")
    builder = getattr(segmentation, target)
    state = read_state_dict(Path(options.checkpoint)) if options.checkpoint is not None else None
    num_classes = _class_count(what, state, options.num_classes, options.checkpoint)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    aux = state is not None and any(k.startswith("aux_classifier.") for k in state)
    if "aux_loss" in inspect.signature(builder).parameters:
        kwargs["aux_loss"] = aux
    module = get_model(target, **kwargs)
    if options.checkpoint is not None:
        with _torchvision_checkpoints():
            load_state_dict_into(module, Path(options.checkpoint))
        weights_id = sha256_file(options.checkpoint)
    else:  # random weights: a smoke test of the chain, named so that no trained artifact is ever served for it
        weights_id = "random-" + hashlib.sha256(f"{what}:{num_classes}".encode()).hexdigest()[:12]
    return torch_source(module, target, what, options.input_size, options.mean, options.std, num_classes,
                        options.class_names, weights_id, code_fingerprint(module, builder), options.checkpoint,
                        options.output_key, extra={"library": "torchvision", "version": torchvision.__version__,
                                                   "builder": target, "aux_loss": aux})


def import_torchvision(what: str):
    """torchvision, or one line naming the extra: absent is an ImportError, but a PyPI build for another torch
    imports and then fails registering its C++ ops ("operator torchvision::nms does not exist"), a RuntimeError."""
    try:
        return require_library("torchvision", EXTRA, what)
    except SegedgeError:
        raise
    except Exception as exc:
        import torch

        raise SegedgeError(f"{what} needs torchvision, which is installed but does not import beside torch "
                           f"{torch.__version__} ({type(exc).__name__}: {brief(exc)}): install the pair built for each "
                           f"other, e.g. pip install 'segedge[{EXTRA}]' torch==2.14.1 torchvision==0.29.1") from None


def _torchvision_checkpoints():
    """torchvision's references/segmentation/train.py saves its argparse Namespace beside the weights; allowing
    that one plain class keeps ``weights_only`` loading (no arbitrary code) for those checkpoints."""
    import argparse

    import torch

    return torch.serialization.safe_globals([argparse.Namespace])


def read_state_dict(path: Path) -> dict:
    """The tensors of a raw state dict or of a ``{"model"|"state_dict": ...}`` wrapper, read without running
    pickled code; a whole pickled model is refused in words."""
    import pickle

    import torch

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with _torchvision_checkpoints():
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {path} holds more than tensors (a pickled model or objects that torch will "
                              "not load safely): save model.state_dict() with torch.save") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__})") from None
    state = payload.get("state_dict", payload.get("model", payload)) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict")
    return state


def head_classes(state: dict) -> tuple[str, int] | None:
    """(key, class count) of the classifier's last conv: the last 4-D ``classifier.*weight`` in the state dict's
    order, which is the order the head registers its layers (FCN's and DeepLabV3's ``classifier.4``, LR-ASPP's
    ``classifier.high_classifier``)."""
    convs = [k for k, v in state.items() if k.startswith("classifier.") and k.endswith(".weight") and v.ndim == 4]
    return (convs[-1], int(state[convs[-1]].shape[0])) if convs else None


def _class_count(what: str, state: dict | None, given: int | None, checkpoint) -> int:
    found = head_classes(state) if state is not None else None
    if found is None:
        if given is None:
            said = f"{checkpoint} has no classifier.* conv to read it from" if state is not None else "no --checkpoint"
            raise SegedgeError(f"--model {what} needs --num-classes N ({said})")
        return given
    key, count = found
    if given is not None and given != count:
        raise CheckpointError(f"checkpoint {checkpoint} is for {count} classes ({key} has {count} outputs), but "
                              f"--num-classes says {given}")
    return count
