"""A model as its library saved it (issue 28): a ``torch.export.save`` program (``.pt2``) and a TorchScript module
(``torch.jit.save``, scripted or traced) go through export, INT8 and bench like any module; a file that holds no
module (a state dict, another pickle, damage) or a size the program cannot take is one line naming the fix. The
expected outputs are the saved modules' own, run in this file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from segedge.cli.main import main
from segedge.core.results import ResultsStore

SIZE = (32, 64)


class Net(nn.Module):
    """Two classes, bright blob against dark ground; batch norm in eval mode, as a trained net is saved."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.1, 0.1)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))))


class AsDict(Net):
    """torchvision's convention, scripted: the scores under "out", an auxiliary head beside them."""

    def forward(self, x):
        return {"out": self.head(torch.relu(self.norm(self.conv(x)))), "aux": self.conv(x)}


class NoOnnxOp(Net):
    """An op the ONNX exporters have no translation for: the export must fail in one line."""

    def forward(self, x):
        return torch.cummax(self.head(torch.relu(self.norm(self.conv(x)))), 1)[0]


def save(path: Path, how: str, net: nn.Module | None = None) -> Path:
    net = (net or Net()).eval()
    example = torch.zeros(1, 3, *SIZE)
    if how == "export":
        torch.export.save(torch.export.export(net, (example,)), str(path))
    elif how == "export-dynamic":
        dims = {2: torch.export.Dim("height", min=16, max=64), 3: torch.export.Dim("width", min=16, max=128)}
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=(dims,)), str(path))
    elif how == "script":
        torch.jit.save(torch.jit.script(net), str(path))
    elif how == "trace":
        torch.jit.save(torch.jit.trace(net, example), str(path))
    return path


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """images/, masks/, classes.txt, splits/: 4 training and 3 evaluation scenes of one bright blob each."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir()
    (root / "classes.txt").write_text("background\nblob\n")
    stems = [f"t{i}" for i in range(4)] + [f"v{i}" for i in range(3)]
    for stem in stems:
        cy, cx, r = int(rng.integers(8, SIZE[0] - 8)), int(rng.integers(8, SIZE[1] - 8)), int(rng.integers(4, 8))
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        grey = np.clip(np.where(mask == 1, 190.0, 60.0) + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("".join(f"{s}\n" for s in stems[:4]))
    (root / "splits" / "val.txt").write_text("".join(f"{s}\n" for s in stems[4:]))
    return root


def export(tmp_path: Path, blobs: Path, model: Path, *extra: str) -> tuple[int, dict, Path]:
    code = main(["export", "--model", str(model), "--int8", "--data", f"folder:{blobs}", "--calib-images", "4",
                 "--threads", "1", "--out", str(tmp_path / "export"), "--quiet", *extra])
    found = list((tmp_path / "export" / model.stem).glob("*/manifest.json"))  # the row name is the file's stem
    return code, (json.loads(found[0].read_text()) if found else {}), (found[0].parent if found else tmp_path)


def onnx_equals_module(directory: Path, module, key: str | None = None) -> None:
    """The FP32 ONNX and the saved module (loaded here, as its library loads it) agree on a random input."""
    x = np.random.default_rng(1).standard_normal((1, 3, *SIZE)).astype(np.float32)
    got = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.inference_mode():
        want = module(torch.from_numpy(x))
    want = (want[key] if key else want).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_torch_export_program_runs_at_its_own_size_to_int8_and_its_onnx_is_the_program(blobs, tmp_path, capsys):
    model = save(tmp_path / "blob.pt2", "export")
    code, manifest, directory = export(tmp_path, blobs, model)
    assert code == 0, capsys.readouterr().err
    assert manifest["model"] == "blob" and manifest["config"]["input_size"] == [*SIZE]  # read from the program
    assert manifest["config"]["weights"] == hashlib.sha256(model.read_bytes()).hexdigest()  # weights and code
    assert "code" not in manifest["config"]
    assert {"onnx", "int8"} <= set(manifest["stages"])
    onnx_equals_module(directory, torch.export.load(str(model)).module())


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_module_exports_to_int8_through_the_torchscript_exporter(how, blobs, tmp_path, capsys):
    model = save(tmp_path / f"{how}.pt", how)
    code, manifest, directory = export(tmp_path, blobs, model, "--input-size", f"{SIZE[0]}x{SIZE[1]}")
    assert code == 0, capsys.readouterr().err
    assert manifest["config"]["weights"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert {"onnx", "int8"} <= set(manifest["stages"])
    onnx_equals_module(directory, torch.jit.load(str(model)))


def test_a_scripted_mapping_exports_its_out_as_the_one_output(blobs, tmp_path, capsys):
    model = save(tmp_path / "mapping.ts", "script", AsDict())
    code, manifest, directory = export(tmp_path, blobs, model, "--input-size", f"{SIZE[0]}x{SIZE[1]}")
    assert code == 0, capsys.readouterr().err
    assert manifest["torch_output"] == {"returns": "dict", "scores": "out", "stride": 1}
    assert [o.name for o in onnx.load(str(directory / "model.onnx")).graph.output] == ["out"]
    onnx_equals_module(directory, torch.jit.load(str(model)), key="out")


def test_bench_quick_gives_fp32_and_int8_rows_for_a_torchscript_module(blobs, tmp_path, capsys):
    model = save(tmp_path / "saved.pt", "script")
    store = tmp_path / "r.sqlite"
    code = main(["bench", "--profile", "cpu", "--precisions", "fp32,int8", "--quick", "--model", str(model),
                 "--input-size", f"{SIZE[0]}x{SIZE[1]}", "--data", f"folder:{blobs}", "--calib-images", "4",
                 "--quiet", "--results", str(store), "--out", str(tmp_path / "export")])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, err
    with ResultsStore(store) as results:
        rows = {r["precision"]: r for r in results.rows()}
    assert set(rows) == {"fp32", "int8"} and all(r["model"] == "saved" for r in rows.values())
    assert rows["fp32"]["miou"] == pytest.approx(rows["fp32"]["reference_miou"], abs=1e-6)


def test_bench_runs_a_fixed_program_at_its_own_size_and_names_it_when_asked_another(blobs, tmp_path, capsys):
    """Without --input-size a torch.export program runs at the size it was exported for, not the profile's
    512x1024; --input-size for another size fails the row saying which size to give."""
    model = save(tmp_path / "fixed.pt2", "export")
    store = tmp_path / "r.sqlite"
    args = ["bench", "--profile", "cpu", "--precisions", "fp32", "--quick", "--model", str(model), "--data",
            f"folder:{blobs}", "--results", str(store), "--out", str(tmp_path / "export")]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, err
    with ResultsStore(store) as results:
        (row,) = results.rows()
    assert (row["height"], row["width"]) == SIZE, row
    main(args[:-4] + ["--input-size", "64x64", "--results", str(tmp_path / "r2.sqlite"), "--out",
                      str(tmp_path / "export2")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "fixed.pt2 was exported for a 1x3x32x64 input and cannot run at 64x64: give --input-size 32x64" in out + err


def test_files_that_hold_no_module_are_refused_by_what_they_hold(blobs, tmp_path, capsys):
    torch.save(Net().state_dict(), tmp_path / "weights.pt")
    torch.save({"state_dict": Net().state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "notes.pt")
    (tmp_path / "broken.pt2").write_bytes(save(tmp_path / "whole.pt2", "export").read_bytes()[:500])
    (tmp_path / "empty.jit").write_bytes(b"")
    (tmp_path / "folder.pt").mkdir()
    cases = {
        "weights.pt": "weights.pt holds a state dict, not a module: use --model package.module:function --checkpoint FILE",
        "wrapped.pth": "wrapped.pth holds a state dict, not a module: use --model package.module:function --checkpoint",
        "notes.pt": "notes.pt holds a dict saved with torch.save, not a module: save the model with torch.jit.save",
        "broken.pt2": "broken.pt2 is neither a TorchScript nor a torch.export file, nor a torch.save one: corrupt",
        "empty.jit": "empty.jit is empty (0 bytes)",
        "folder.pt": "folder.pt is a directory",
        "missing.pt": "missing.pt does not exist",
    }
    for name, words in cases.items():
        code, _, _ = export(tmp_path, blobs, tmp_path / name, "--input-size", f"{SIZE[0]}x{SIZE[1]}")
        assert code == 1 and words in one_line_error(capsys), name


def test_a_module_pickled_whole_is_refused_without_unpickling_its_code(tmp_path, capsys):
    """``torch.save(model)`` needs the class to load, i.e. running pickled code: refused, with the savers named."""
    torch.save(Net(), tmp_path / "whole.pt")
    code = main(["export", "--model", str(tmp_path / "whole.pt"), "--input-size", "32x64", "--out", str(tmp_path / "x"),
                 "--quiet"])
    err = one_line_error(capsys)
    assert code == 1 and "segedge unpickles no code: save it with torch.jit.save or torch.export.save" in err


def test_sizes_and_flags_a_saved_module_cannot_take_are_one_line_each(blobs, tmp_path, capsys):
    fixed = save(tmp_path / "fixed.pt2", "export")
    code, _, _ = export(tmp_path, blobs, fixed, "--input-size", "64x64")
    assert code == 1 and ("fixed.pt2 was exported for a 1x3x32x64 input and cannot run at 64x64: give --input-size "
                          "32x64, or export it with dynamic_shapes for H and W") in one_line_error(capsys)

    dynamic = save(tmp_path / "dynamic.pt2", "export-dynamic")  # H in 16..64, W in 16..128
    code, _, _ = export(tmp_path, blobs, dynamic)
    assert code == 1 and "was exported with a dynamic input size (1x3x?x?): give --input-size HxW" in one_line_error(capsys)
    code, _, _ = export(tmp_path, blobs, dynamic, "--input-size", "128x64")
    assert code == 1 and "dynamic.pt2 (exported for 1x3x?x?) cannot take --input-size 128x64: " in one_line_error(capsys)
    code, manifest, _ = export(tmp_path, blobs, dynamic, "--input-size", "48x96")  # within its ranges: taken
    err = capsys.readouterr().err
    assert code == 0 and manifest["config"]["input_size"] == [48, 96], err
    code, _, _ = export(tmp_path, blobs, fixed, "--dynamic")  # the graph exports; torch's guard refuses 33x66
    assert code == 1 and ("fixed fails in torch at 1x3x33x66, where the exported graph is checked (AssertionError: "
                          "Guard failed") in one_line_error(capsys)

    script = save(tmp_path / "script.pt", "script")
    code, _, _ = export(tmp_path, blobs, script)
    assert code == 1 and "is a TorchScript module, which does not record its input size: give --input-size HxW" in \
        one_line_error(capsys)
    torch.save(Net().state_dict(), tmp_path / "weights.pt")
    code, _, _ = export(tmp_path, blobs, script, "--input-size", "32x64", "--checkpoint", str(tmp_path / "weights.pt"))
    assert code == 1 and "a saved module carries its weights inside; leave --checkpoint out" in one_line_error(capsys)


def test_a_program_exported_in_training_mode_is_refused(blobs, tmp_path, capsys):
    """Batch statistics and random dropout are baked into such a graph: no eval() can take them out."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.2), nn.Conv2d(4, 2, 1)).train()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 3, *SIZE),)), str(tmp_path / "train.pt2"))
    code, _, _ = export(tmp_path, blobs, tmp_path / "train.pt2")
    err = one_line_error(capsys)
    assert code == 1 and "was exported in training mode (batch_norm, dropout with training=True" in err
    assert err.endswith("call model.eval() before torch.export.export and save again")


def test_a_program_whose_input_segedge_cannot_feed_is_refused(blobs, tmp_path, capsys):
    grey = nn.Conv2d(1, 2, 3, padding=1).eval()
    torch.export.save(torch.export.export(grey, (torch.zeros(1, 1, *SIZE),)), str(tmp_path / "grey.pt2"))
    code, _, _ = export(tmp_path, blobs, tmp_path / "grey.pt2")
    assert code == 1 and ("grey.pt2 takes a torch.float32 input of shape 1x1x32x64; segedge feeds one N×3×H×W float "
                          "image batch") in one_line_error(capsys)


def test_a_saved_module_the_exporter_cannot_translate_fails_in_one_line(blobs, tmp_path, capsys):
    model = save(tmp_path / "cummax.pt", "script", NoOnnxOp())
    code, _, _ = export(tmp_path, blobs, model, "--input-size", f"{SIZE[0]}x{SIZE[1]}")
    err = one_line_error(capsys)
    assert code == 1 and "torch.onnx cannot export cummax: UnsupportedOperatorError: Exporting the operator " \
                         "'aten::cummax'" in err
