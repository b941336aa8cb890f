"""Artifact directories, manifests, content hashes and atomic writes.

Layout: ``<store>/<model>/<config-hash>/`` holding ``model.onnx``, ``model.sim.onnx``, ``model.fp16.onnx``,
``model.int8.onnx`` and ``manifest.json``. Every file lands by temp file + rename in the same directory,
so a crash or a failed check never leaves a half-written or unchecked artifact under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator

from segedge.core.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
DEFAULT_STORE = Path("export")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able config: same inputs, same directory, work reused."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it into place only if the block succeeds.

    For writers that insist on a file name (``onnx.save``, onnxruntime's quantizer, ``torch.save``).
    On any exception the temp file is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise ArtifactError(f"writing {final} produced no data")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(final: str | Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def atomic_write_json(final: str | Path, data: Any) -> None:
    atomic_write_text(final, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def tool_versions() -> dict[str, str]:
    """Versions that change numbers: recorded with every artifact and figure."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("segedge", "torch", "onnx", "onnxruntime", "onnxsim", "onnxscript", "numpy", "tensorrt"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return versions


class ArtifactDir:
    """One model configuration's directory and its manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_config(cls, store: str | Path, model: str, config: dict[str, Any]) -> "ArtifactDir":
        return cls(Path(store) / model / config_hash(config))

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def file(self, name: str) -> Path:
        return self.path / name

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(
                f"manifest {self.manifest_path} is unreadable ({exc}); delete {self.path} to rebuild it"
            ) from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)

    def reusable_stage(self, manifest: dict[str, Any], stage: str, stage_config: dict[str, Any]) -> dict | None:
        """The stage's manifest entry if its file is intact and was made with the same config, else None."""
        entry = manifest.get("stages", {}).get(stage)
        # compared as the manifest stores it: JSON turns tuples into lists
        if not entry or entry.get("config") != json.loads(json.dumps(stage_config)):
            return None
        path = self.file(entry["file"])
        if not path.exists() or sha256_file(path) != entry.get("sha256"):
            return None
        return entry
