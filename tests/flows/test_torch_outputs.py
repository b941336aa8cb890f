"""Torch models' outputs as libraries return them: a tensor, torchvision's ``{"out", "aux"}``, Hugging Face's
object with ``.logits`` at 1/4 of the input, a tuple. Each is exported with the chosen scores as its one output at
the model's own stride, and scored against the labels after a bilinear resize; the expectations here are
computed with numpy written in this file, not with segedge's helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from segedge.cli.main import main
from segedge.core.errors import SegedgeError

NETS = '''
import torch
from torch import nn


class Logits:
    """What transformers returns: an object whose scores are .logits (and no tensor to index)."""

    def __init__(self, logits):
        self.logits = logits


class Body(nn.Module):
    def __init__(self, stride=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 10, 3, padding=1, stride=stride)
        self.aux = nn.Conv2d(3, 10, 1)

    def features(self, x):
        return self.conv(x)


class AsDict(Body):
    def forward(self, x):
        return {"out": self.features(x), "aux": self.aux(x)}


class AsObject(Body):
    def __init__(self):
        super().__init__(stride=4)

    def forward(self, x):
        return Logits(self.features(x))


class AsTuple(Body):
    def forward(self, x):
        return self.features(x), self.aux(x)


class TwoKeys(Body):
    def forward(self, x):
        return {"seg": self.features(x), "edges": self.aux(x)}


def as_dict():
    return AsDict()


def as_object():
    return AsObject()


def as_tuple():
    return AsTuple()


def two_keys():
    return TwoKeys()
'''
SIZE = (64, 128)


@pytest.fixture
def nets(tmp_path, monkeypatch):
    package = tmp_path / "libnets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("libnets.nets", "libnets"):
        sys.modules.pop(name, None)
    import importlib

    return importlib.import_module("libnets.nets")


def export(tmp_path, builder: str, *extra: str) -> tuple[int, dict, Path]:
    code = main(["export", "--model", f"libnets.nets:{builder}", "--input-size", f"{SIZE[0]}x{SIZE[1]}",
                 "--eval-images", "2", "--threads", "1", "--out", str(tmp_path / "export"), "--quiet", *extra])
    found = list((tmp_path / "export").glob("*/*/manifest.json"))
    return code, (json.loads(found[0].read_text()) if found else {}), (found[0].parent if found else tmp_path)


def bilinear(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """C×h×w → C×H×W, half-pixel centres (align_corners=False), edges clamped: torch's F.interpolate."""
    c, h, w = scores.shape

    def weights(src, dst):
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        low = np.floor(pos).astype(int)
        return low, np.minimum(low + 1, src - 1), pos - low

    y0, y1, fy = weights(h, size[0])
    x0, x1, fx = weights(w, size[1])
    out = np.empty((c, *size))
    for i in range(size[0]):
        row = scores[:, y0[i]] * (1 - fy[i]) + scores[:, y1[i]] * fy[i]
        out[:, i] = row[:, x0] * (1 - fx) + row[:, x1] * fx
    return out


def test_a_torchvision_style_mapping_exports_out_and_drops_aux(nets, tmp_path):
    code, manifest, directory = export(tmp_path, "as_dict")
    assert code == 0
    assert manifest["torch_output"] == {"returns": "dict", "scores": "out", "stride": 1}
    graph = onnx.load(str(directory / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["out"]  # one output, named after the key
    x = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
    got = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    import torch

    with torch.inference_mode():
        want = nets.as_dict()(torch.from_numpy(x))["out"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_an_object_with_logits_at_a_quarter_is_exported_there_and_scored_at_full_size(nets, tmp_path):
    code, manifest, directory = export(tmp_path, "as_object")
    assert code == 0
    assert manifest["torch_output"] == {"returns": "Logits", "scores": "logits", "stride": 4}
    graph = onnx.load(str(directory / "model.onnx"))
    dims = [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 10, SIZE[0] // 4, SIZE[1] // 4]  # the model's own stride, not resized inside the graph
    # the reference mIoU, computed here: the module's scores resized by hand, argmax, IoU over the 2 held-out scenes
    import torch

    from segedge.data.synthetic import SyntheticScenes

    scenes = SyntheticScenes("val", 2, size=SIZE, seed=0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    inter, union = np.zeros(10), np.zeros(10)
    model = nets.as_object().eval()
    for i in range(2):
        image, mask = scenes[i]
        x = ((image / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        with torch.inference_mode():
            low = model(torch.from_numpy(x)).logits[0].numpy()
        pred = bilinear(low, SIZE).argmax(0)
        for c in range(10):
            keep = mask != 255
            inter[c] += np.sum((pred == c) & (mask == c) & keep)
            union[c] += np.sum(((pred == c) | (mask == c)) & keep)
    present = union > 0
    assert manifest["reference"]["miou"] == pytest.approx(float((inter[present] / union[present]).mean()), abs=1e-6)


def test_a_tuple_exports_its_first_item(nets, tmp_path):
    code, manifest, _ = export(tmp_path, "as_tuple")
    assert code == 0 and manifest["torch_output"] == {"returns": "tuple", "scores": "0", "stride": 1}


def test_a_mapping_without_out_needs_its_key_and_takes_it(nets, tmp_path, capsys):
    code, _, _ = export(tmp_path, "two_keys")
    err = capsys.readouterr().err
    assert code == 1 and "--output-key" in err and "seg" in err and "Traceback" not in err
    code, manifest, directory = export(tmp_path, "two_keys", "--output-key", "seg")
    assert code == 0 and manifest["torch_output"]["scores"] == "seg"
    assert [o.name for o in onnx.load(str(directory / "model.onnx")).graph.output] == ["seg"]
    code, _, _ = export(tmp_path, "two_keys", "--output-key", "nope")
    assert code == 1 and "is not among the model's outputs (seg, edges)" in capsys.readouterr().err


def test_the_key_picks_nothing_from_a_tensor():
    import torch

    from segedge.flows.sources.outputs import output_key_of

    assert output_key_of(torch.zeros(1)) is None
    with pytest.raises(SegedgeError, match="one tensor"):
        output_key_of(torch.zeros(1), "out")
    with pytest.raises(SegedgeError, match="segedge reads a tensor"):
        output_key_of("scores")
