"""A zoo model's code fingerprint (part of its artifact key) covers every segedge file the network is built from,
not only its builder's: an edit to a shared block must change the key, or a stale ONNX is served from the cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import segedge

# runs in a fresh interpreter on a copy of the package: fingerprints, then a comment appended to one file, again
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import segedge
    from segedge.flows.export import ExportConfig, resolve_source

    root = Path(segedge.__file__).parent
    assert str(root).startswith(sys.argv[1]), f"imported {root}, not the copy"

    def keys():
        return {name: resolve_source(ExportConfig(model=name, untrained=True, width=0.25, input_size=(64, 64))).code_id
                for name in ("unet", "bisenet", "deeplabv3plus", "enet")}

    seen = {"before": keys()}
    for edited in ("models/segformer.py", "models/blocks.py", "models/backbones.py"):
        with open(root / edited, "a") as f:
            f.write("\\n# an edit to this file\\n")
        seen[edited] = keys()
    print(json.dumps(seen))
""")


def test_editing_a_shared_block_changes_the_fingerprint_of_the_models_built_from_it(tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(Path(segedge.__file__).parent, copy / "segedge", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    # -P: the copy, not the checkout in the working directory nor the editable install, is the one imported
    done = subprocess.run([sys.executable, "-P", "-c", SCRIPT, str(copy)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin",
                                             "SEGEDGE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    before = seen["before"]
    assert len(set(before.values())) == 4 and all(len(key) == 16 for key in before.values())
    # a file none of the three is built from: no key changes (the cache survives unrelated edits)
    assert seen["models/segformer.py"] == before
    # blocks.py (ConvBNReLU, resize_to; ENet only calls its make_divisible): every one of them is built from it
    after_blocks = seen["models/blocks.py"]
    assert all(after_blocks[name] != before[name] for name in before), (before, after_blocks)
    # backbones.py (ResNet, MobileNetV2, XceptionLite): DeepLab's encoder, not U-Net's nor BiSeNet's own ResNet-18
    after_backbones = seen["models/backbones.py"]
    assert after_backbones["deeplabv3plus"] != after_blocks["deeplabv3plus"]
    assert after_backbones["unet"] == after_blocks["unet"] and after_backbones["bisenet"] == after_blocks["bisenet"]
