"""Artifact directories, manifests, content hashes and atomic writes.

Layout: ``<store>/<model>/<config-hash>/`` holding ``model.onnx``, ``model.sim.onnx``, ``model.fp16.onnx``,
``model.int8.onnx``, ``model.int8-nncf.xml`` + ``.bin`` (an OpenVINO IR) and ``manifest.json``. Every file lands by temp file + rename in the same directory,
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


def sidecar_names(file_name: str) -> list[str]:
    """The files a stage file cannot be read without: an OpenVINO IR's ``.xml`` takes its weights from the
    ``.bin`` of the same name, so the two are written, hashed, shipped and checked as one artifact."""
    return [Path(file_name).with_suffix(".bin").name] if file_name.endswith(".xml") else []


def stage_digest(entry: dict[str, Any]) -> str:
    """One sha256 for everything a stage's model is read from: its file's, or, for an IR, a hash over the
    ``.xml``'s and the ``.bin``'s (a new calibration changes only the weights file)."""
    sidecars = entry.get("sidecars") or {}
    if not sidecars:
        return entry["sha256"]
    digest = hashlib.sha256(entry["sha256"].encode())
    for name in sorted(sidecars):
        digest.update(f"\0{name}\0{sidecars[name]}".encode())
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
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would survive the rename: a shared store unreadable
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc, kernel 4.7+): setting it to read
    it back would race with threads creating files meanwhile."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def plain_file_name(name: object, where: str) -> str:
    """``name`` if it is a plain file name (no folder, no ``..``); a manifest is data a user can edit, and a
    name like ``../../.bashrc`` would otherwise be followed out of the artifact dir (and linked on a device)."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
            or Path(name).name != name):
        raise ArtifactError(f"{where} names the file {name!r}, which is not a plain file name inside its "
                            f"directory; the manifest was edited or is corrupt: delete the directory to rebuild it")
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


SCRATCH_PREFIX = "segedge-"


def remove_stale_scratch() -> int:
    """Remove the scratch folders (``segedge-<kind>-<pid>-*`` in the temp dir) of processes that are gone,
    e.g. killed with SIGKILL mid-calibration; returns how many were removed."""
    import shutil

    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*-*"):
        parts = folder.name.split("-")
        pid = next((int(p) for p in parts[2:3] if p.isdigit()), None)
        if pid is None or pid == os.getpid() or _pid_alive(pid) or not folder.is_dir():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A temporary folder named after this process, so a later run can tell it from a live one's."""
    remove_stale_scratch()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-") as work:
        yield Path(work)


@contextlib.contextmanager
def machine_timing_lock(log=lambda _: None) -> Iterator[None]:
    """One segedge measurement at a time on this machine: a second ``bench`` waits rather than timing while
    another shares the cores (measured: 3.3 ms alone, 7.6 ms side by side)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(tempfile.gettempdir()) / ".segedge-timing.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log("another segedge process is measuring on this machine: waiting for it, so the two never share the cores")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


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
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"manifest {self.manifest_path} is unreadable ({exc}); delete {self.path} to rebuild it"
            ) from None
        check_manifest_shape(manifest, self.manifest_path)
        return manifest

    @contextlib.contextmanager
    def locked(self, log=lambda _: None, timeout_s: float = -1) -> Iterator["ArtifactDir"]:
        """Hold this directory's lock (``<store>/.locks/<model>-<hash>.lock``) for a read-modify-write of its
        manifest: two commands on one store take turns instead of overwriting each other's stages."""
        from filelock import FileLock, Timeout

        locks = self.path.parent.parent / ".locks"
        try:
            locks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot write to the artifact store at {self.path.parent.parent}: "
                                f"{exc.strerror or exc}") from None
        lock = FileLock(str(locks / f"{self.path.parent.name}-{self.path.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting for another segedge process writing {self.path}")
            lock.acquire(timeout=timeout_s)
        except OSError as exc:
            raise ArtifactError(f"cannot write to the artifact store at {self.path.parent}: "
                                f"{exc.strerror or exc}") from None
        try:
            yield self
        finally:
            lock.release()

    def remove_leftovers(self) -> None:
        """Candidates and temp files of runs that were killed (only call while holding :meth:`locked`:
        then no live writer owns them)."""
        if not self.path.is_dir():
            return
        for leftover in [*self.path.glob(".candidate.*"), *self.path.glob(".*.tmp"), *self.path.glob(".*.tmp.xml"),
                         *self.path.glob(".*.tmp.bin")]:
            leftover.unlink(missing_ok=True)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)

    def reusable_stage(self, manifest: dict[str, Any], stage: str, stage_config: dict[str, Any]) -> dict | None:
        """The stage's manifest entry if its file is intact and was made with the same config, else None."""
        entry = manifest.get("stages", {}).get(stage)
        # compared as the manifest stores it: JSON turns tuples into lists
        if not entry or entry.get("config") != json.loads(json.dumps(stage_config)):
            return None
        path = self.file(plain_file_name(entry["file"], f"{self.manifest_path} stage {stage}"))
        if not path.exists() or sha256_file(path) != entry.get("sha256"):
            return None
        sidecars = entry.get("sidecars") or {}
        if set(sidecars) != set(sidecar_names(path.name)):
            return None  # an IR recorded without its weights file (or the other way round): build it again
        for name, sha in sidecars.items():
            sidecar = self.file(plain_file_name(name, f"{self.manifest_path} stage {stage}"))
            if not sidecar.exists() or sha256_file(sidecar) != sha:
                return None
        return entry


def check_manifest_shape(manifest: Any, where: Path | str) -> None:
    """A manifest is a JSON object whose ``stages`` map names to objects with a plain ``file`` name; anything
    else (hand-edited, truncated by another tool) is refused before any work rather than half-way through."""
    def refuse(what: str) -> None:
        raise ArtifactError(f"manifest {where} is malformed ({what}); delete its directory to rebuild it")

    if not isinstance(manifest, dict):
        refuse(f"a JSON {type(manifest).__name__}, not an object")
    stages = manifest.get("stages", {})
    if not isinstance(stages, dict):
        refuse("'stages' is not an object")
    for name, entry in stages.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("parity", {}), dict):
            refuse(f"stage {name!r} is not an object")
        if "file" not in entry:
            refuse(f"stage {name!r} names no file")
        plain_file_name(entry["file"], f"manifest {where} stage {name}")
        sidecars = entry.get("sidecars", {})
        if not isinstance(sidecars, dict):
            refuse(f"stage {name!r} has sidecars that are not an object")
        for sidecar in sidecars:
            plain_file_name(sidecar, f"manifest {where} stage {name}")
    config = manifest.get("config", {})
    if not isinstance(config, dict):
        refuse("'config' is not an object")
    size = config.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        refuse(f"config input_size is {size!r}, not [height, width] in pixels")
    io = manifest.get("io")
    if io is not None and not isinstance(io, dict):
        refuse(f"'io' is {io!r}, not an object")
    norm = manifest.get("normalization", {})
    if not isinstance(norm, dict):
        refuse("'normalization' is not an object")
    for key in ("mean", "std"):
        values = norm.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            refuse(f"normalization {key} is {values!r}, not a list of numbers")


_VERIFIED: dict[tuple, str] = {}  # (path, inode, size, mtime, ctime) → sha256: a file is hashed once per process


def sha256_cached(path: str | Path) -> str:
    """sha256 of ``path``, hashed once per process while the file stays the same (inode, size, mtime, ctime)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def verified_stage_file(directory: str | Path, stage: str, entry: dict[str, Any]) -> Path:
    """The stage's file, after checking that it (and its sidecars) still hash as the manifest recorded: a graph
    copied or linked over ``model.sim.onnx`` would otherwise run under the figures of the one that was checked.
    Called whenever a stage file is about to run, not only at export."""
    directory = Path(directory)
    where = f"{directory / MANIFEST_NAME} stage {stage}"
    files = {plain_file_name(entry.get("file"), where): entry.get("sha256")}
    for name, sha in (entry.get("sidecars") or {}).items():
        files[plain_file_name(name, where)] = sha
    for name, recorded in files.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the {stage} stage its manifest records is gone; export it again")
        if not isinstance(recorded, str):
            raise ArtifactError(f"{where} records no sha256 for {name}: the manifest was edited; delete {directory} "
                                f"and export again")
        actual = sha256_cached(path)
        if actual != recorded:
            raise ArtifactError(f"{path} is not the {stage} file its manifest checked (sha256 {actual[:12]}…, recorded "
                                f"{recorded[:12]}…): it was replaced or edited after export, so no figure of that stage "
                                f"holds for it; nothing was run. Restore it, or delete {directory} and export again")
    return directory / plain_file_name(entry.get("file"), where)
