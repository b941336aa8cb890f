"""The public API: ``import segedge`` is cheap, and every re-exported name resolves."""

import subprocess
import sys

import segedge


def test_import_is_light():
    code = "import sys, segedge; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_every_public_name_resolves():
    for name in segedge.__all__:
        assert getattr(segedge, name) is not None, name
