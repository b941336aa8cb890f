"""The run path needs no torch: `segedge predict` and `segedge bench --onnx` work on the base install
(numpy, onnx, onnxruntime, Pillow, matplotlib), and a zoo model asks for the [export] extra in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "flows"))

from test_own_data import blobs, stride4  # noqa: E402,F401  (blobs is a fixture)

# a Python that behaves as if torch, onnxsim and onnxscript were not installed
NO_TORCH = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnxsim", "onnxscript"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
from segedge.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def artifact(blobs, tmp_path_factory):  # noqa: F811
    from segedge.flows.export import ExportConfig, export_model

    work = tmp_path_factory.mktemp("light")
    onnx_path = stride4(work / "s.onnx")
    result = export_model(ExportConfig(model="", onnx=onnx_path, data=f"folder:{blobs}", mean=(0.0,), std=(1.0,),
                                       store=work / "export", threads=1))
    return work, onnx_path, result.directory


def _commands(segedge: list[str], work: Path, onnx_path: Path, directory: Path, data: Path) -> list[list[str]]:
    image = next((data / "images").iterdir())
    return [
        [*segedge, "predict", str(directory), "--source", str(image), "--out", str(work / "masks"), "--quiet"],
        [*segedge, "bench", "--profile", "cpu", "--onnx", f"s={onnx_path}", "--data", f"folder:{data}", "--mean", "0",
         "--std", "1", "--precisions", "fp32,int8", "--calib-images", "4", "--quick", "--quiet",
         "--results", str(work / "r.sqlite"), "--out", str(work / "bench-export")],
    ]


def test_predict_and_bench_onnx_run_where_torch_cannot_be_imported(artifact, blobs, tmp_path):  # noqa: F811
    work, onnx_path, directory = artifact
    launcher = tmp_path / "no_torch.py"
    launcher.write_text(NO_TORCH)
    segedge = [sys.executable, str(launcher)]
    for argv in _commands(segedge, tmp_path, onnx_path, directory, blobs):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    zoo = subprocess.run([*segedge, "bench", "--profile", "cpu", "--models", "unet"], capture_output=True, text=True)
    assert zoo.returncode == 1 and zoo.stderr.strip().count("\n") == 0
    assert "pip install 'segedge[export]'" in zoo.stderr


@pytest.mark.slow
def test_a_fresh_virtual_environment_without_torch_runs_predict_and_bench(artifact, blobs, tmp_path):  # noqa: F811
    """pip installs the base package into a new venv (no torch there), then its `segedge` runs both commands."""
    work, onnx_path, directory = artifact
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=900, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if install.returncode != 0:
        pytest.skip(f"pip could not install the base package here: {install.stderr.strip().splitlines()[-1:]}")
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0  # truly absent
    segedge = [str(venv / "bin" / "segedge")]
    for argv in _commands(segedge, tmp_path, onnx_path, directory, blobs):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert list((tmp_path / "masks").glob("*.png"))


def test_a_zoo_models_artifact_is_benched_as_exported_where_torch_cannot_be_imported(tiny_checkpoint, tmp_path):
    """`bench --artifact` (what `--remote` runs on the device): the workstation's export, nothing rebuilt, no torch."""
    import sqlite3

    from segedge.flows.export import ExportConfig, export_model
    from segedge.graph.int8 import Int8Config

    exported = export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=(64, 128),
                                         eval_images=2, precisions=("int8",), int8_config=Int8Config(calib_images=4),
                                         store=tmp_path / "workstation", threads=1))
    before = sorted(p.name for p in exported.directory.iterdir())
    launcher = tmp_path / "no_torch.py"
    launcher.write_text(NO_TORCH)
    store = tmp_path / "device.sqlite"
    done = subprocess.run([sys.executable, str(launcher), "bench", "--profile", "cpu", "--artifact",
                           f"unet={exported.directory}", "--precisions", "fp32,int8", "--eval-images", "2", "--quick",
                           "--quiet", "--results", str(store), "--out", str(tmp_path / "device-export")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r[0]: r[1:] for r in sqlite3.connect(store).execute(
        "SELECT precision, model, status, height, width, artifact_sha256 FROM measurements")}
    assert set(rows) == {"fp32", "int8"}
    assert all(r[0] == "unet" and r[1] != "failed" and r[2:4] == (64, 128) for r in rows.values())
    assert rows["int8"][4] == exported.manifest["stages"]["int8"]["sha256"]  # the very file exported, not a rebuild
    assert not (tmp_path / "device-export").exists() or not any((tmp_path / "device-export").rglob("*.onnx"))
    assert sorted(p.name for p in exported.directory.iterdir()) == before
    missing = subprocess.run([sys.executable, str(launcher), "bench", "--profile", "cpu", "--artifact",
                              f"unet={exported.directory}", "--precisions", "fp16", "--quick", "--quiet",
                              "--results", str(store)], capture_output=True, text=True, timeout=300)
    assert "has no fp16 stage (model.fp16.onnx); export it where torch is installed" in missing.stdout + missing.stderr
