"""A library's model as the library saved it: ``--model torchvision:NAME --checkpoint FILE.pth`` and
``--model smp:DIR`` (``save_pretrained``), exported and benched by the ``segedge`` of a venv that has the
libraries; the FP32 ONNX must give what the library's own model gives. The main test venv keeps the CPU torch
2.13.0, beside which PyPI's torchvision does not import, so the fixture builds a venv of its own with the pair
built for each other (torch 2.14.1 + torchvision 0.29.1): about 2.5 minutes on 2 cores, once per session."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segedge.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
TORCH_PAIR = ("torch==2.14.1", "torchvision==0.29.1")
BUILDERS = ("deeplabv3_mobilenet_v3_large, deeplabv3_resnet101, deeplabv3_resnet50, fcn_resnet101, fcn_resnet50, "
            "lraspp_mobilenet_v3_large")


@dataclass(frozen=True)
class LibraryVenv:
    python: Path
    segedge: Path
    env: dict


def _pip_error(stderr: str) -> str:
    """pip's own last error line (what a skip reason shows): no network, no disk, no wheel for this Python."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed without a message"])[-1]


@pytest.fixture(scope="session")
def library_venv():
    """torch 2.14.1, torchvision 0.29.1, smp and timm, then segedge[export] editable with torch pinned (so the
    export extra's range cannot move it). Removed at the session's end in the background: its 6 GB in 36,000
    files take as long to delete as to install (105 s on the CI disk), and nothing waits for that."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1")  # nothing of ours may reach the Hub
    tmp = Path(tempfile.mkdtemp(prefix="segedge-library-venv-"))
    try:
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        python = venv / "bin" / "python"
        pins = tmp / "pins.txt"
        pins.write_text("\n".join(TORCH_PAIR) + "\n")
        for what, args in (("torch, torchvision, smp, timm", [*TORCH_PAIR, "segmentation-models-pytorch", "timm"]),
                           ("segedge[export]", ["-c", str(pins), "-e", f"{ROOT}[export]"])):
            try:
                done = subprocess.run([str(python), "-m", "pip", "install", "-q", *args], capture_output=True,
                                      text=True, timeout=1800, env=env)
            except subprocess.TimeoutExpired:
                pytest.skip(f"pip could not install {what} within 30 minutes here")
            if done.returncode != 0:
                pytest.skip(f"pip could not install {what} here: {_pip_error(done.stderr)}")
        yield LibraryVenv(python, venv / "bin" / "segedge", env)
    finally:
        if shutil.which("sh") and shutil.which("rm"):  # the shell returns at once; rm goes on alone
            subprocess.run(["sh", "-c", 'rm -rf "$1" >/dev/null 2>&1 &', "sh", str(tmp)], start_new_session=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


MAKE_MODELS = """
import argparse, sys
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torchvision.models import segmentation

out = Path(sys.argv[1])
torch.manual_seed(0)
x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype(np.float32))
np.save(out / "x.npy", x.numpy())

def save_out(name, model):  # the library's own answer on x, to compare the FP32 ONNX with
    model.eval()
    with torch.inference_mode():
        y = model(x)
    np.save(out / f"{name}.npy", (y["out"] if isinstance(y, dict) else y).numpy())

lraspp = segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights=None, weights_backbone=None)
torch.save(lraspp.state_dict(), out / "lraspp.pth")
save_out("lraspp", lraspp)
deeplab = segmentation.deeplabv3_mobilenet_v3_large(num_classes=3, aux_loss=True, weights=None, weights_backbone=None)
torch.save(deeplab.state_dict(), out / "deeplab.pth")
# as torchvision's references/segmentation/train.py saves it: the weights under "model", its argparse Namespace beside
torch.save({"model": deeplab.state_dict(), "epoch": 29, "args": argparse.Namespace(model="deeplabv3", lr=0.02)},
           out / "deeplab_reference.pth")
save_out("deeplab", deeplab)
unet = smp.Unet("resnet18", encoder_weights=None, classes=3)
unet.save_pretrained(out / "unet")
save_out("unet", unet)
"""


def _blocks(root: Path) -> Path:
    """3 classes in 64x64 images: a band (1) and a lower block (2) on background (0), coloured apart, shifted."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "splits"):
        (root / folder).mkdir(parents=True)
    for i in range(12):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        left = int(rng.integers(4, 30))
        mask[:, left:left + 16] = 1
        mask[int(rng.integers(36, 52)):, :] = 2
        colours = np.array([[40, 40, 40], [200, 60, 60], [60, 60, 200]], np.float32)
        rgb = np.clip(colours[mask] + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"b{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"b{i:02d}.png")
    (root / "classes.txt").write_text("background\nband\nblock\n")
    (root / "splits" / "train.txt").write_text("\n".join(f"b{i:02d}" for i in range(8)) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(f"b{i:02d}" for i in range(8, 12)) + "\n")
    return root


@pytest.fixture(scope="module")
def saved(library_venv, tmp_path_factory):
    """The libraries' files (two torchvision state dicts, one in the reference script's format, and an smp
    save_pretrained directory) with each model's own output on a random input, and a 3-class folder dataset."""
    work = tmp_path_factory.mktemp("library-models")
    done = subprocess.run([str(library_venv.python), "-c", MAKE_MODELS, str(work)], capture_output=True, text=True,
                          timeout=600, env=library_venv.env)
    assert done.returncode == 0, done.stderr
    return work, _blocks(work / "data")


CASES = {
    "lraspp": ("torchvision:lraspp_mobilenet_v3_large", "lraspp.pth", ["--num-classes", "3"]),
    # no --num-classes: read from the checkpoint's head, and aux_loss from its aux_classifier keys
    "deeplab": ("torchvision:deeplabv3_mobilenet_v3_large", "deeplab_reference.pth", []),
    "unet": ("smp:{work}/unet", None, []),
}


def _run(venv: LibraryVenv, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv.segedge), *argv], capture_output=True, text=True, timeout=900, cwd=cwd,
                          env=venv.env)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_library_model_exports_and_benches_and_its_onnx_gives_the_librarys_output(case, library_venv, saved,
                                                                                       tmp_path):
    import onnxruntime as ort

    work, data = saved
    model, checkpoint, flags = CASES[case]
    model = model.format(work=work)
    name = model.partition(":")[2].rstrip("/").split("/")[-1]
    given = ["--checkpoint", str(work / checkpoint)] if checkpoint else []
    common = ["--input-size", f"{SIZE}x{SIZE}", "--data", f"folder:{data}", "--out", str(tmp_path / "export"),
              "--quiet", *flags]
    exported = _run(library_venv, ["export", "--model", model, *given, "--int8", *common], tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "Traceback" not in exported.stderr
    bench_checkpoint = ["--checkpoint", f"{name}={work / checkpoint}"] if checkpoint else []
    store = tmp_path / "results.sqlite"
    benched = _run(library_venv, ["bench", "--profile", "cpu", "--precisions", "fp32,int8", "--quick", "--model", model,
                                  *bench_checkpoint, "--results", str(store), *common], tmp_path)
    assert benched.returncode == 0, benched.stderr
    assert "Traceback" not in benched.stderr
    rows = {r[0]: r[1:] for r in sqlite3.connect(store).execute(
        "SELECT precision, model, status, reason, height, width FROM measurements")}
    assert set(rows) == {"fp32", "int8"}
    for model_name, status, reason, height, width in rows.values():
        assert (model_name, height, width) == (name, SIZE, SIZE)
        assert status != "failed" and "Traceback" not in (reason or ""), reason

    onnx_files = list((tmp_path / "export" / name).glob("*/model.onnx"))
    assert len(onnx_files) == 1  # bench measured the very artifact export wrote
    session = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    assert len(session.get_outputs()) == 1  # "out" only: torchvision's aux head is not exported
    x = np.load(work / "x.npy")
    expected = np.load(work / f"{case}.npy")
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (1, 3, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


CALL_MAIN = """
import contextlib, io, json, sys
from segedge.cli.main import main

answers = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    answers.append([rc, err.getvalue()])
print("ANSWERS " + json.dumps(answers))
"""


@pytest.mark.slow
def test_library_model_mistakes_are_one_line_each(library_venv, saved, tmp_path):
    """All in one process of the venv (one torch import): each command's stderr is its one error line."""
    work, data = saved
    misfit = tmp_path / "unet4"
    shutil.copytree(work / "unet", misfit)
    config = json.loads((misfit / "config.json").read_text())
    (misfit / "config.json").write_text(json.dumps({**config, "classes": 4}))  # the weights' head has 3
    common = ["--input-size", f"{SIZE}x{SIZE}", "--data", f"folder:{data}", "--out", str(tmp_path / "export")]
    commands = {
        "an unknown builder, with the valid ones": (
            ["--model", "torchvision:fcn_resnet5", "--num-classes", "3"],
            f"has no segmentation builder 'fcn_resnet5'; one of: {BUILDERS}"),
        "a checkpoint for another class count": (
            ["--model", "torchvision:lraspp_mobilenet_v3_large", "--checkpoint", str(work / "lraspp.pth"),
             "--num-classes", "5"],
            f"checkpoint {work / 'lraspp.pth'} is for 3 classes (classifier.high_classifier.weight has 3 outputs), "
            "but --num-classes says 5"),
        "another builder's checkpoint": (
            ["--model", "torchvision:fcn_resnet50", "--checkpoint", str(work / "deeplab.pth")],
            f"checkpoint {work / 'deeplab.pth'} does not fit the model: missing keys:"),
        "no class count from anywhere": (
            ["--model", "torchvision:lraspp_mobilenet_v3_large"],
            "--model torchvision:lraspp_mobilenet_v3_large needs --num-classes N (no --checkpoint)"),
        "smp weights that do not fit their config": (
            ["--model", f"smp:{misfit}"],
            f"smp cannot load smp:{misfit} (Unet, encoder resnet18): model.safetensors does not fit the model its "
            "config.json describes: shape mismatches: segmentation_head.0.bias (3 in the file, 4 in the model), "
            "segmentation_head.0.weight (3x16x3x3 in the file, 4x16x3x3 in the model)"),
    }
    argvs = [["export", *argv, *common] for argv, _ in commands.values()]
    done = subprocess.run([str(library_venv.python), "-c", CALL_MAIN, json.dumps(argvs)], capture_output=True,
                          text=True, timeout=600, env=library_venv.env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.split("ANSWERS ", 1)[1])
    for (what, (_, message)), (rc, stderr) in zip(commands.items(), answers):
        assert rc == 1, what
        assert stderr.startswith("segedge: error: ") and stderr.count("\n") == 1, (what, stderr)
        assert message in stderr, (what, stderr)
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").rglob("*.onnx"))


# where the libraries are missing: the main venv, in-process ------------------------------------------------

def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("segedge: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("failure", ["absent", "built for another torch"])
def test_torchvision_missing_or_broken_is_one_line_naming_the_extra(failure, monkeypatch, capsys, tmp_path):
    if failure == "absent":
        monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises ImportError
    else:  # what PyPI's torchvision does beside the CPU torch 2.13.0
        class Broken:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torchvision":
                    raise RuntimeError("operator torchvision::nms does not exist")
                return None

        for module in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            monkeypatch.delitem(sys.modules, module)
        monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    err = _one_line_error(capsys, ["export", "--model", "torchvision:fcn_resnet50", "--num-classes", "3",
                                   "--input-size", "64x64", "--out", str(tmp_path)])
    assert "--model torchvision:fcn_resnet50 needs torchvision" in err
    assert "pip install 'segedge[torchvision]'" in err
    if failure != "absent":
        assert "operator torchvision::nms does not exist" in err and "torch==2.14.1 torchvision==0.29.1" in err


def _smp_dir(path: Path, **config) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"_model_class": "Unet", "encoder_name": "resnet18", "classes": 3,
                                                  **config}))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_smp_missing_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    directory = _smp_dir(tmp_path / "unet")
    err = _one_line_error(capsys, ["export", "--model", f"smp:{directory}", "--input-size", "64x64",
                                   "--out", str(tmp_path / "export")])
    assert f"--model smp:{directory} needs segmentation_models_pytorch" in err and "pip install 'segedge[smp]'" in err


def test_smp_directories_it_cannot_use_are_refused_in_words_before_smp_is_imported(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # each refusal comes first
    size = ["--input-size", "64x64", "--out", str(tmp_path / "export")]
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _one_line_error(capsys, ["export", "--model", f"smp:{empty}", *size])
    assert f"{empty} has no config.json and no model.safetensors; give the folder smp's model.save_pretrained" in err
    hf = _smp_dir(tmp_path / "hf", _model_class=None)
    assert "names no _model_class" in _one_line_error(capsys, ["export", "--model", f"smp:{hf}", *size])
    binary = _smp_dir(tmp_path / "binary", classes=1)
    assert "has classes=1 in config.json" in _one_line_error(capsys, ["export", "--model", f"smp:{binary}", *size])
    unet = _smp_dir(tmp_path / "unet")
    err = _one_line_error(capsys, ["export", "--model", f"smp:{unet}", "--num-classes", "5", *size])
    assert "is for 3 classes (config.json: classes=3), but --num-classes says 5" in err
    err = _one_line_error(capsys, ["export", "--model", f"smp:{unet}", "--out", str(tmp_path / "export")])
    assert f"--model smp:{unet} needs --input-size HxW" in err


def test_the_head_is_read_from_a_raw_or_a_reference_script_checkpoint(tmp_path):
    """The class count is the classifier's last conv in registration order, whatever the head: FCN's and
    DeepLabV3's ``classifier.4``, LR-ASPP's ``classifier.high_classifier`` (not its low_classifier)."""
    import argparse

    import torch

    from segedge.core.errors import CheckpointError
    from segedge.flows.sources.tvision import head_classes, read_state_dict

    fcn = {"classifier.0.weight": torch.zeros(16, 64, 3, 3), "classifier.1.weight": torch.zeros(16),
           "classifier.4.weight": torch.zeros(7, 16, 1, 1), "classifier.4.bias": torch.zeros(7),
           "aux_classifier.4.weight": torch.zeros(7, 16, 1, 1)}
    lraspp = {"classifier.cbr.0.weight": torch.zeros(128, 960, 1, 1), "classifier.low_classifier.weight":
              torch.zeros(5, 40, 1, 1), "classifier.high_classifier.weight": torch.zeros(5, 128, 1, 1)}
    assert head_classes(fcn) == ("classifier.4.weight", 7)
    assert head_classes(lraspp) == ("classifier.high_classifier.weight", 5)
    assert head_classes({"backbone.conv.weight": torch.zeros(8, 3, 3, 3)}) is None
    reference = tmp_path / "model_29.pth"  # torchvision's references/segmentation/train.py checkpoint
    torch.save({"model": fcn, "optimizer": {}, "epoch": 29, "args": argparse.Namespace(lr=0.02)}, reference)
    assert head_classes(read_state_dict(reference)) == ("classifier.4.weight", 7)
    pickled = tmp_path / "whole.pth"
    torch.save(torch.nn.Conv2d(3, 2, 1), pickled)
    with pytest.raises(CheckpointError, match="holds more than tensors .*save model.state_dict\\(\\) with torch.save"):
        read_state_dict(pickled)
