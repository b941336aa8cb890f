"""Bring your own model: an ONNX file made outside segedge, or any nn.Module, through export and eval."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segedge.cli.main import main
from segedge.core.errors import CheckpointError, InputSizeError, SegedgeError
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import Int8Config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.fixtures importable as a package
BUILDER = "tests.fixtures.byo_model:build"


@pytest.fixture(scope="module")
def outside_onnx(tmp_path_factory):
    """An ONNX file exported by plain torch.onnx (not segedge), static 64x128, 10 classes."""
    from tests.fixtures.byo_model import build

    module = build().eval()
    path = tmp_path_factory.mktemp("outside") / "theirs.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 64, 128),), str(path), input_names=["images"], output_names=["out"],
                      opset_version=18, dynamo=True, external_data=False)
    return module, path


def test_outside_onnx_goes_through_int8_with_itself_as_reference(outside_onnx, tmp_path):
    _, path = outside_onnx
    result = export_model(ExportConfig(model="", onnx=path, precisions=("fp16", "int8"), eval_images=2, store=tmp_path,
                                       int8_config=Int8Config(calib_images=4), threads=1))
    manifest = result.manifest
    assert manifest["reference"]["backend"] == "onnxruntime (given ONNX)"
    assert manifest["source_onnx"] == str(path)
    assert manifest["stages"]["onnx"]["parity"]["max_abs_diff"] == 0.0  # the copy is the reference itself
    assert manifest["stages"]["sim"]["parity"]["argmax_agreement"] >= 0.999
    assert set(manifest["stages"]) == {"onnx", "sim", "fp16", "int8"}
    assert manifest["class_names"][:2] == ["class_0", "class_1"]


def test_outside_onnx_size_and_class_mismatches_are_refused(outside_onnx, tmp_path):
    _, path = outside_onnx
    with pytest.raises(InputSizeError, match="takes a fixed 64x128 input, but --input-size asks for 128x128"):
        export_model(ExportConfig(model="", onnx=path, input_size=(128, 128), store=tmp_path))
    with pytest.raises(SegedgeError, match="outputs 10 classes but --num-classes says 19"):
        export_model(ExportConfig(model="", onnx=path, num_classes=19, store=tmp_path))
    assert not any(tmp_path.iterdir())


def test_module_reference_exports_with_its_state_dict(tmp_path):
    from tests.fixtures.byo_model import build

    state = tmp_path / "weights.pt"
    torch.save(build().state_dict(), state)
    result = export_model(ExportConfig(model=BUILDER, checkpoint=state, input_size=(32, 64), eval_images=2, store=tmp_path))
    assert result.manifest["reference"]["backend"] == "torch"
    assert result.manifest["stages"]["sim"]["parity"]["argmax_agreement"] >= 0.999


def test_module_checkpoint_mismatch_lists_keys(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"body.0.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match=r"missing keys: body.0.bias, .*unexpected keys: head.weight"):
        export_model(ExportConfig(model=BUILDER, checkpoint=bad, input_size=(32, 64), store=tmp_path))


@pytest.mark.parametrize("model, message", [
    ("tests.fixtures.byo_model:nope", "has no 'nope'"),
    ("tests.fixtures.nothere:build", "cannot import 'tests.fixtures.nothere'"),
    ("tests.fixtures.byo_model:not_a_module", "returned int, not a torch.nn.Module"),
])
def test_bad_module_references_are_clear(tmp_path, model, message):
    with pytest.raises(SegedgeError, match=message):
        export_model(ExportConfig(model=model, input_size=(32, 64), store=tmp_path))


def test_module_reference_needs_an_input_size(tmp_path):
    with pytest.raises(InputSizeError, match="needs --input-size"):
        export_model(ExportConfig(model=BUILDER, store=tmp_path))


def test_cli_export_onnx_then_eval_matches_manifest(outside_onnx, tmp_path, capsys):
    _, path = outside_onnx
    assert main(["export", "--onnx", str(path), "--int8", "--calib-images", "4", "--eval-images", "3",
                 "--out", str(tmp_path), "--quiet"]) == 0
    directory = next(tmp_path.glob("theirs/*"))
    manifest = json.loads((directory / "manifest.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--onnx", str(directory / "model.int8.onnx"), "--images", "3", "--json", "--quiet"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 3 and scores["backend"] == "onnxruntime"
    assert scores["mean_iou"] == pytest.approx(manifest["stages"]["int8"]["parity"]["miou"], abs=1e-9)


def test_cli_eval_table_for_a_zoo_checkpoint(tiny_checkpoint, capsys):
    assert main(["eval", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
                 "--images", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "torch on 2 synthetic val images" in out
    assert "| road " in out and "| **mean** " in out and "frequency-weighted IoU" in out


def test_cli_eval_crf_scores_the_refined_and_the_raw_output_of_one_inference(tiny_checkpoint, capsys):
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed (pip install \"segedge[crf]\")")
    args = ["eval", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
            "--images", "2", "--json", "--quiet"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(args + ["--crf", "--crf-iterations", "3"]) == 0
    refined = json.loads(capsys.readouterr().out)
    assert "crf" not in plain and refined["crf"]["iterations"] == 3
    assert refined["crf"]["without_crf"]["miou"] == pytest.approx(plain["mean_iou"], abs=1e-12)
    assert refined["mean_iou"] != plain["mean_iou"]  # the CRF changed labels
    with pytest.raises(SystemExit):
        main(args + ["--crf", "--crf-iterations", "0"])
    assert "--crf-iterations: '0' must be >= 1" in capsys.readouterr().err


def test_cli_needs_exactly_one_source(capsys):
    assert main(["eval"]) == 1
    assert "give exactly one of --model NAME, --onnx FILE, --engine FILE" in capsys.readouterr().err
    assert main(["export", "--model", "unet", "--onnx", "x.onnx"]) == 1
    assert "either --model" in capsys.readouterr().err
