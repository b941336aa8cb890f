"""A model as its library saved it: a ``torch.export.save`` program (``.pt2``) or a TorchScript module
(``torch.jit.save``: ``.pt``, ``.pth``, ``.ts``, ``.jit``).

The code travels inside the file, so the file's hash covers weights and code alike (``code_id`` stays None). A
file of weights alone (a state dict, what ``torch.save(model.state_dict())`` writes under the same suffixes) is
refused by name: it needs the code that builds the module, ``--model package.module:function --checkpoint FILE``.
Nothing here unpickles code: a whole module pickled by ``torch.save(model)`` is refused too.
"""

from __future__ import annotations

import types
import warnings
import zipfile
from pathlib import Path

from segedge.core.artifacts import sha256_file
from segedge.core.errors import ArtifactError, CheckpointError, InputSizeError, SegedgeError, brief
from segedge.flows.sources import Source, SourceOptions, default_name, torch_source

STATE_DICT_HINT = "use --model package.module:function --checkpoint FILE"
# aten ops that behave differently in training mode, and the position of their training flag: a program exported
# before model.eval() keeps batch statistics and random dropout in its graph, and no eval() can take them out
TRAINING_FLAG = {"batch_norm": 5, "_native_batch_norm_legit": 5, "_native_batch_norm_legit_functional": 5,
                 "dropout": 2, "dropout_": 2, "native_dropout": 2, "feature_dropout": 2, "alpha_dropout": 2}


def saved_module_source(path: Path, options: SourceOptions) -> Source:
    """The module in ``path``, whichever of the two savers wrote it (tried in the order its suffix suggests),
    at the program's own input size for ``torch.export`` unless ``--input-size`` asks for one it can take."""
    path = Path(path)
    _check_file(path)
    if options.checkpoint is not None:
        raise CheckpointError(f"--checkpoint {options.checkpoint} with --model {path}: a saved module carries its "
                              f"weights inside; leave --checkpoint out (a state dict goes with --model "
                              f"package.module:function --checkpoint FILE)")
    loaded, saved_as = _load(path)
    if saved_as == "torch.export":
        module, size = _exported_module(loaded, path, options.input_size)
    else:
        if options.input_size is None:
            raise InputSizeError(f"{path} is a TorchScript module, which does not record its input size: give "
                                 f"--input-size HxW")
        module, size = loaded, tuple(options.input_size)
    return torch_source(module, default_name(str(path)), str(path), size, options.mean, options.std,
                        options.num_classes, options.class_names, sha256_file(path), None,
                        output_key=options.output_key, extra={"saved_as": saved_as})


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; give the file torch.export.save or torch.jit.save wrote")
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ArtifactError(f"model file {path} is empty (0 bytes): a save or a copy that did not finish")


def _load(path: Path):
    """(the loaded object, "torch.export" | "TorchScript"); a file neither reads is said for what it holds."""
    import torch

    from segedge.graph.export import quiet_exporter  # torch.export.load logs a traceback for each failed guess

    def exported():
        with open(path, "rb") as f:  # a file object: torch.export.load takes a path only when it ends in .pt2
            return torch.export.load(f)

    def scripted():
        return torch.jit.load(str(path), map_location="cpu")

    loaders = [("torch.export", exported), ("TorchScript", scripted)]
    for saved_as, load in loaders if path.suffix == ".pt2" else reversed(loaders):
        try:
            with quiet_exporter():
                return load(), saved_as
        except Exception:
            continue
    raise _what_else(path)


def _what_else(path: Path) -> SegedgeError:
    """Why a file is no saved module: a state dict, another torch.save payload, a pickled module, or damage."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        if zipfile.is_zipfile(path):
            return SegedgeError(f"{path} is a torch.save pickle that needs code to read (a whole module saved with "
                                f"torch.save(model)?), and segedge unpickles no code: save it with torch.jit.save or "
                                f"torch.export.save, or save its state_dict() and {STATE_DICT_HINT}")
        return ArtifactError(f"{path} is neither a TorchScript nor a torch.export file, nor a torch.save one: "
                             f"corrupt or truncated?")
    if _is_state_dict(payload):
        return CheckpointError(f"{path} holds a state dict, not a module: {STATE_DICT_HINT}")
    return SegedgeError(f"{path} holds a {type(payload).__name__} saved with torch.save, not a module: save the model "
                        f"with torch.jit.save or torch.export.save (for a state dict, {STATE_DICT_HINT})")


def _is_state_dict(payload) -> bool:
    """Tensors by name, bare or under ``state_dict`` / ``model`` as training loops wrap them."""
    import torch

    if isinstance(payload, dict) and isinstance(payload.get("state_dict", payload.get("model")), dict):
        payload = payload.get("state_dict", payload.get("model"))
    return isinstance(payload, dict) and bool(payload) and all(isinstance(v, torch.Tensor) for v in payload.values())


def _exported_module(program, path: Path, asked: tuple[int, int] | None):
    """The program's module and the size to run it at: its example input's H×W, or ``asked`` where the program
    takes it (a fixed dimension must match; a dynamic one is tried)."""
    import torch

    (val,) = _user_inputs(program, path)
    shape = tuple(val.shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(shape) != 4 or not val.dtype.is_floating_point or fixed[1] != 3 or fixed[0] not in (1, None):
        raise SegedgeError(f"{path} takes a {val.dtype} input of shape {_dims(shape)}; segedge feeds one N×3×H×W float "
                           f"image batch (batch 1, or dynamic)")
    _refuse_training_mode(program, path)
    module = program.module()
    # the graph's train/eval behaviour was fixed when it was exported (checked above): eval() is a no-op here
    # rather than the NotImplementedError ExportedProgram.module() installs
    module.train = types.MethodType(lambda self, mode=True: self, module)
    module.eval = types.MethodType(lambda self: self, module)
    height, width = fixed[2:]
    if asked is None:
        if height is None or width is None:
            raise InputSizeError(f"{path} was exported with a dynamic input size ({_dims(shape)}): give --input-size HxW")
        return module, (height, width)
    asked = tuple(asked)
    if (height is not None and height != asked[0]) or (width is not None and width != asked[1]):
        # bench asks for its profile's size when --input-size is not given: name the size that works
        fits = f"{height or asked[0]}x{width or asked[1]}"
        raise InputSizeError(f"{path} was exported for a {_dims(shape)} input and cannot run at {asked[0]}x{asked[1]}: "
                             f"give --input-size {fits}, or export it with dynamic_shapes for H and W")
    if height is None or width is None:
        try:
            with torch.inference_mode():
                module(torch.zeros(1, 3, *asked))
        except Exception as exc:
            raise InputSizeError(f"{path} (exported for {_dims(shape)}) cannot take --input-size {asked[0]}x{asked[1]}: "
                                 f"{brief(exc)}") from None
    return module, asked


def _user_inputs(program, path: Path) -> list:
    """The example values of the program's user inputs (parameters and buffers left out)."""
    names = list(program.graph_signature.user_inputs)
    values = [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    if len(values) != 1 or not hasattr(values[0], "shape"):
        raise SegedgeError(f"{path} takes the inputs ({', '.join(map(str, names))}); segedge feeds exactly one, an "
                           f"N×3×H×W image batch")
    return values


def _refuse_training_mode(program, path: Path) -> None:
    found = sorted({n.target._opname for n in program.graph.nodes if n.op == "call_function"
                    and getattr(n.target, "_opname", None) in TRAINING_FLAG
                    and len(n.args) > TRAINING_FLAG[n.target._opname] and n.args[TRAINING_FLAG[n.target._opname]] is True})
    if found:
        raise SegedgeError(f"{path} was exported in training mode ({', '.join(found)} with training=True: batch "
                           f"statistics, random drops); call model.eval() before torch.export.export and save again")


def _dims(shape) -> str:
    """1x3x?x? for a program with dynamic H and W (torch's own symbols, s53, say nothing to a user)."""
    return "x".join(str(d) if isinstance(d, int) else "?" for d in shape)
