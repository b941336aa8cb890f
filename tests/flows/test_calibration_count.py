"""How many images calibrate INT8: a training split smaller than the default count calibrates on what it has (said
in the log); only a count the user gave that the split cannot give is an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segedge.cli.main import main

SIZE = 32


def luma_threshold(path: Path) -> Path:
    """A one-channel sigmoid on luma (bright = class 1), as binary segmentation nets ship."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    w = numpy_helper.from_array((10 * luma).reshape(1, 3, 1, 1), "w")
    b = numpy_helper.from_array(np.array([-5.0], np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["prob"])]
    graph = helper.make_graph(nodes, "theirs", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, SIZE, SIZE])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def small_folder(root: Path, train: int = 4, val: int = 3) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("background\nblob\n")
    stems = [f"t{i}" for i in range(train)] + [f"v{i}" for i in range(val)]
    for stem in stems:
        cy, cx, r = rng.integers(8, SIZE - 8, 2).tolist() + [int(rng.integers(4, 9))]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        grey = np.clip(np.where(mask == 1, 190.0, 60.0) + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("".join(f"{s}\n" for s in stems[:train]))
    (root / "splits" / "val.txt").write_text("".join(f"{s}\n" for s in stems[train:]))
    return root


def test_a_small_training_split_calibrates_on_what_it_has_unless_a_count_was_asked_for(tmp_path, capsys):
    root = small_folder(tmp_path / "data")
    model = luma_threshold(tmp_path / "m.onnx")
    store = tmp_path / "store"
    argv = ["export", "--onnx", str(model), "--data", f"folder:{root}", "--mean", "0", "--std", "1", "--int8",
            "--out", str(store), "--quiet", "--threads", "1"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "calibration uses the 4 images" in err and "32" in err
    (manifest_path,) = store.glob("*/*/manifest.json")
    int8 = json.loads(manifest_path.read_text())["stages"]["int8"]
    assert '"calib_images": 4' in json.dumps(int8)  # the count used is the one recorded
    for asked in ("8", "32"):  # 32 given by hand is asked for, as any other count
        assert main([*argv, "--calib-images", asked]) == 1
        err = capsys.readouterr().err.strip()
        assert f"calibration set has 4 images but {asked} were asked for" in err and len(err.splitlines()) == 1


def test_sensitivity_on_a_small_training_split_calibrates_on_what_it_has(tmp_path):
    """Layer sensitivity shared export's refusal of a 4-image split ("32 were asked for") with nobody asking."""
    from segedge.flows.export import ExportConfig
    from segedge.flows.sensitivity import model_sensitivity

    from onnx import version_converter

    root = small_folder(tmp_path / "data")
    model = tmp_path / "m13.onnx"  # opset 13: sensitivity quantizes the graph as it is (no opset conversion there)
    onnx.save(version_converter.convert_version(onnx.load(str(luma_threshold(tmp_path / "m.onnx"))), 13), str(model))
    config = ExportConfig(model="", onnx=model, data=f"folder:{root}", mean=(0.0,),
                          std=(1.0,), store=tmp_path / "store", threads=1)
    said = []
    report = model_sensitivity(config, log=said.append)
    assert any("calibration uses the 4 images" in line for line in said)
    assert report.full_int8.images == 3  # scored on the 3 held-out images


def test_sensitivity_of_an_opset_12_onnx_quantizes_its_converted_copy(tmp_path):
    """Export converts an ONNX below opset 13 before INT8; sensitivity quantized it as it was and onnx's checker
    refused the per-axis DequantizeLinear it wrote ("Unrecognized attribute: axis")."""
    from segedge.flows.export import ExportConfig
    from segedge.flows.sensitivity import model_sensitivity

    root = small_folder(tmp_path / "data")
    config = ExportConfig(model="", onnx=luma_threshold(tmp_path / "m.onnx"), data=f"folder:{root}", mean=(0.0,),
                          std=(1.0,), store=tmp_path / "store", threads=1)
    report = model_sensitivity(config)
    assert report.full_int8.images == 3 and report.full_int8.argmax_agreement > 0.9
