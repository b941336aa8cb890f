"""Each zoo model exported once per test session, the way the deployment chain exports it.

The torch → ONNX export is the slow part of the model tests (10–40 s a model on 2 cores): the registry
contract and the family tests that inspect a graph's ops share one export per model instead of making
their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from segedge.models.registry import ModelSpec, get_spec

NUM_CLASSES = 10
WIDTH = 0.25


def valid_size(spec: ModelSpec, extra_strides: int = 0) -> tuple[int, int]:
    """The smallest valid height by twice the smallest valid width (a landscape frame), grown by
    ``extra_strides`` strides on each axis.

    Odd multiples of the stride (``extra_strides=1`` from an even start) catch a model that needs a
    larger stride than its spec declares.
    """
    s = spec.size_multiple
    h = math.ceil(spec.min_input_size[0] / s) * s
    w = 2 * math.ceil(spec.min_input_size[1] / s) * s
    return h + extra_strides * s, w + extra_strides * s


def export_dynamic_hw(model: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    """Export as the deployment chain does: opset 18, dynamo, H and W dynamic (batch stays 1).

    torch 2.13's ONNX exporter quietly specialises a named ``Dim`` to the example's size when the model
    code forces it (it applies torch.export's suggested fix instead of raising), so the caller must
    check the graph's dims and run it at a second size.
    """
    height = torch.export.Dim("height", min=spec.min_input_size[0], max=4096)
    width = torch.export.Dim("width", min=spec.min_input_size[1], max=4096)
    dynamic_shapes = ({2: height, 3: width},) if spec.dynamic_hw else None
    torch.onnx.export(
        model,
        (torch.randn(1, 3, *valid_size(spec)),),
        path,
        input_names=["input"],
        output_names=["logits"],
        opset_version=18,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
    )


def with_settled_batchnorm(model: torch.nn.Module, size: tuple[int, int]) -> torch.nn.Module:
    """Give every BatchNorm the statistics of one real batch, then return the model in eval mode.

    Fresh BN statistics (mean 0, var 1) make eval-mode BN nearly the identity, which hides BN-folding
    bugs in the exporter and lets activations shrink layer by layer until any parity tolerance passes.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics outright
    with torch.no_grad():
        model.train()(torch.randn(2, 3, *size))
    return model.eval()


@dataclass
class Exported:
    spec: ModelSpec
    model: torch.nn.Module  # in eval mode, BatchNorm settled; NUM_CLASSES classes at WIDTH
    path: Path
    messages: list[str]  # exporter progress lines, warnings and log records


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def export_zoo_model(name: str, directory: Path) -> Exported:
    """Build ``name`` at WIDTH (seed 0, BatchNorm settled) and export it to ``directory/model.onnx``,
    keeping every message the exporter printed or logged."""
    spec = get_spec(name)
    torch.manual_seed(0)
    model = with_settled_batchnorm(spec.build(num_classes=NUM_CLASSES, width=WIDTH), valid_size(spec))
    path = directory / "model.onnx"
    messages: list[str] = []
    handler = _ListHandler(messages)
    onnx_logger = logging.getLogger("torch.onnx")
    onnx_logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as progress, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            export_dynamic_hw(model, spec, path)
    finally:
        onnx_logger.removeHandler(handler)
    messages += progress.getvalue().splitlines() + [str(w.message) for w in caught]
    return Exported(spec, model, path, messages)


def shared_zoo_export(name: str, root: Path) -> Exported:
    """``export_zoo_model`` once per ``root``, whichever process asks first (a file lock per model); the others
    load what it wrote: the graph, its messages and the exported model's weights (so every process tests the
    very model that was exported, not a rebuild that a thread count could make differ)."""
    root.mkdir(parents=True, exist_ok=True)
    directory = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (directory / "done").is_file():
            building = root / f"{name}.building"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            exported = export_zoo_model(name, building)
            (building / "messages.json").write_text(json.dumps(exported.messages))
            torch.save(exported.model.state_dict(), building / "weights.pt")
            (building / "done").touch()
            os.replace(building, directory)
            exported.path = directory / "model.onnx"
            return exported
    spec = get_spec(name)
    model = spec.build(num_classes=NUM_CLASSES, width=WIDTH)
    model.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
    messages = json.loads((directory / "messages.json").read_text())
    return Exported(spec, model.eval(), directory / "model.onnx", messages)
