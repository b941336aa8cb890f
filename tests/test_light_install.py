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
