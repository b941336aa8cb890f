"""Run segedge on a device from the workstation over the system OpenSSH client (``--remote user@host``).

The protocol is the segedge command line itself: the workstation checks ``segedge --version`` on the device,
exports the ONNX artifacts here, copies the files the device lacks into a content-addressed cache there
(``<remote-dir>/blobs/<sha256>``: a file whose hash is already there is never sent again), links them into
the layout segedge expects, runs ``segedge bench --results results.sqlite ...`` *on the device* (so the
profile's hardware check and the TensorRT engine build happen there), then fetches the device's SQLite store
and merges it into the local one.

Why plain ``ssh`` with ``cat`` rather than scp or rsync: it needs nothing on the device but a POSIX shell
(no SFTP subsystem, no rsync), honours ``~/.ssh/config``, keys and jump hosts like any ssh call, and each
file lands by temp name + checksum + rename, so a dropped upload never leaves a truncated file under a hash.

A dropped connection loses no finished row: the device commits each row to its own store as it finishes,
whatever could be fetched is merged, and a rerun resumes there (its store knows what it finished) and
fetches the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from segedge.core.artifacts import MANIFEST_NAME, sha256_file
from segedge.core.errors import SegedgeError

DEFAULT_REMOTE_DIR = "~/.cache/segedge/remote"
SSH_CONFIG_ENV = "SEGEDGE_SSH_CONFIG"
CONTROL_TIMEOUT_S = 120.0  # version checks, listings, fetches: anything that should take seconds
ERROR_PREFIX = "segedge: error: "
Log = Callable[[str], None]


class RemoteError(SegedgeError):
    """The device could not be reached, lacks segedge, or refused the command."""


@dataclass(frozen=True)
class SshTarget:
    """A device reached as ``ssh [-F config] host``; every path on it is relative to ``remote_dir``."""

    host: str
    segedge: str = "segedge"  # the command that runs segedge on the device (a venv's bin/segedge, say)
    remote_dir: str = DEFAULT_REMOTE_DIR
    ssh_config: Path | None = None
    connect_timeout_s: int = 10

    @classmethod
    def from_options(cls, host: str, segedge: str | None = None, remote_dir: str | None = None,
                     ssh_config: str | None = None) -> "SshTarget":
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise RemoteError(f"--remote takes user@host or a Host from ~/.ssh/config, got {host!r}")
        if shutil.which("ssh") is None:
            raise RemoteError("--remote needs the OpenSSH client (`ssh`) on this machine: apt install openssh-client")
        config = ssh_config or os.environ.get(SSH_CONFIG_ENV) or None
        if config and not Path(config).is_file():
            raise RemoteError(f"ssh config {config} does not exist (from --ssh-config or ${SSH_CONFIG_ENV})")
        return cls(host=host, segedge=segedge or "segedge", remote_dir=remote_dir or DEFAULT_REMOTE_DIR,
                   ssh_config=Path(config) if config else None)

    def ssh_argv(self, command: str) -> list[str]:
        argv = ["ssh"]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        # BatchMode: never prompt (a prompt would hang a sweep); keep-alives detect a dropped link in ~15 s
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-T", self.host, command]
        return argv

    def in_dir(self, command: str) -> str:
        """``command`` run inside the remote cache directory (created on first use)."""
        root = remote_path(self.remote_dir)
        return f"mkdir -p {root} && cd {root} && {command}"

    def run(self, command: str, stdin: bytes | None = None, timeout: float | None = CONTROL_TIMEOUT_S,
            what: str = "the command") -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(self.ssh_argv(command), input=stdin if stdin is not None else b"",
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host} did not answer {what} within {timeout:.0f} s") from None
        if done.returncode == 255:
            raise RemoteError(connection_failure(self.host, done.stderr.decode(errors="replace")))
        return done


def remote_path(path: str) -> str:
    """Shell-quote a remote path, keeping a leading ``~/`` as ``"$HOME"/`` so the device's shell expands it."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def remote_command(command: str) -> str:
    """``--remote-segedge`` for the device's shell: one path (spaces allowed), quoted as :func:`remote_path`
    quotes ``--remote-dir``, so ``~/segedge/bin/segedge`` expands to the device user's home."""
    return remote_path(command)


def connection_failure(host: str, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    reason = lines[-1] if lines else "ssh exited with status 255"
    return (f"cannot reach {host} over ssh ({reason}); check that `ssh {host} true` works without a prompt "
            f"(keys, ~/.ssh/config)")


# version ------------------------------------------------------------------------------------------

def compatible_versions(local: str, remote: str) -> bool:
    """Same major.minor: the CLI flags and the results-store columns the protocol relies on match."""

    def major_minor(text: str) -> tuple[str, ...]:
        return tuple(re.findall(r"\d+", text)[:2])

    return bool(major_minor(local)) and major_minor(local) == major_minor(remote)


def install_hint(version: str) -> str:
    return (f"install it there: `python3 -m pip install segedge=={version}` (on JetPack, in a venv created with "
            f"--system-site-packages so it sees JetPack's TensorRT), or pass --remote-segedge "
            f"/path/to/venv/bin/segedge if it is installed but not on the PATH of a non-interactive ssh session")


def check_remote_version(target: SshTarget) -> str:
    """The device's segedge version; raises with an install hint when it is missing or incompatible."""
    from segedge import __version__

    done = target.run(f"{remote_command(target.segedge)} --version", what="`segedge --version`")
    out = (done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")).strip()
    match = re.match(r"segedge (\S+)", done.stdout.decode(errors="replace").strip())
    if done.returncode != 0 or match is None:
        said = out.splitlines()[-1] if out else f"exit status {done.returncode}"
        raise RemoteError(f"segedge is not installed on {target.host} as `{target.segedge}` ({said}); "
                          f"{install_hint(__version__)}")
    version = match.group(1)
    if not compatible_versions(__version__, version):
        raise RemoteError(f"{target.host} has segedge {version} but this machine has {__version__}; "
                          f"{install_hint(__version__)}")
    return version


# content-addressed copies -------------------------------------------------------------------------

@dataclass
class Shipment:
    """Files for the device: where each lands (relative to the remote dir) and the blob it is."""

    places: dict[str, str] = field(default_factory=dict)  # remote relative path → sha256
    sources: dict[str, Path] = field(default_factory=dict)  # sha256 → local file
    copied: int = 0
    copied_bytes: int = 0

    def add_file(self, local: Path, remote_rel: str, sha: str | None = None) -> str:
        sha = sha or sha256_file(local)
        self.places[remote_rel] = sha
        self.sources.setdefault(sha, local)
        return remote_rel

    def add_content_addressed(self, local: Path, folder: str) -> str:
        """``folder/<sha12>/<name>``: the name is kept (some readers care about the suffix)."""
        sha = sha256_file(local)
        return self.add_file(local, f"{folder}/{sha[:12]}/{local.name}", sha)

    def add_bytes(self, data: bytes, remote_rel: str, scratch: Path) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = scratch / sha
        if not path.exists():
            path.write_bytes(data)
        return self.add_file(path, remote_rel, sha)


def ship(target: SshTarget, shipment: Shipment, log: Log) -> None:
    """Copy the blobs the device lacks (checked by hash first), then hard-link every file into place."""
    if not shipment.places:
        return
    hashes = sorted(shipment.sources)
    listing = target.run(target.in_dir("mkdir -p blobs && cd blobs && for h in " + " ".join(hashes)
                                       + '; do [ -f "$h" ] || echo "$h"; done'), what="the blob listing")
    if listing.returncode != 0:
        raise RemoteError(f"cannot use {target.remote_dir} on {target.host}: {_last_line(listing.stderr)}")
    missing = [h for h in listing.stdout.decode().split() if h in shipment.sources]
    needed = sum(shipment.sources[sha].stat().st_size for sha in missing)
    free = free_bytes(target) if missing else None
    if free is not None and needed > free:
        raise RemoteError(f"{target.host} has {free / 1e6:.1f} MB free under {target.remote_dir} but the files to copy "
                          f"take {needed / 1e6:.1f} MB; nothing was copied: free space there, or give --remote-dir on "
                          f"a larger disk")
    for sha in missing:
        local = shipment.sources[sha]
        size = local.stat().st_size
        # temp name, checksum, rename: a dropped upload never leaves a wrong file under a hash
        command = target.in_dir(f"cat > blobs/.{sha}.part && echo '{sha}  blobs/.{sha}.part' | "
                                f"(sha256sum -c --status 2>/dev/null || shasum -a 256 -c -s) && mv blobs/.{sha}.part blobs/{sha}")
        done = target.run(command, stdin=local.read_bytes(), timeout=CONTROL_TIMEOUT_S + size / 1e6,
                          what=f"the upload of {local.name}")
        if done.returncode != 0:
            raise RemoteError(f"copying {local} to {target.host} failed: {_last_line(done.stderr)}")
        shipment.copied += 1
        shipment.copied_bytes += size
    links = sorted({str(Path(rel).parent) for rel in shipment.places})
    script = ["mkdir -p " + " ".join(shlex.quote(d) for d in links)]
    script += [f"ln -f blobs/{sha} {shlex.quote(rel)}" for rel, sha in sorted(shipment.places.items())]
    done = target.run(target.in_dir(" && ".join(script)), what="linking the copied files")
    if done.returncode != 0:
        raise RemoteError(f"placing files on {target.host} failed: {_last_line(done.stderr)}")
    total = len(shipment.sources)
    log(f"{target.host}: copied {shipment.copied} of {total} files ({shipment.copied_bytes / 1e6:.1f} MB); "
        f"{total - shipment.copied} were already there")


def free_bytes(target: SshTarget) -> int | None:
    """Bytes free on the device's disk under the remote dir (POSIX ``df -Pk``); None when it cannot say."""
    done = target.run(target.in_dir("df -Pk ."), what="the free-space check")
    lines = done.stdout.decode(errors="replace").split("\n")
    try:
        return int(lines[1].split()[3]) * 1024 if done.returncode == 0 else None
    except (IndexError, ValueError):
        return None


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"


# running segedge on the device --------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteRun:
    code: int  # the device's exit status; 255: the connection dropped
    error: str | None  # the device's one-line `segedge: error:` message, without the prefix


def run_segedge(target: SshTarget, args: Iterable[str], log: Log, stdout: Callable[[str], None] | None = None) -> RemoteRun:
    """``segedge ARGS`` on the device inside the remote dir, its log lines streamed here as they come.

    Not bounded by a timeout: a sweep on a Jetson takes as long as it takes; a dead link is detected by
    ssh's keep-alives (ServerAliveInterval) and ends the call with status 255.
    """
    command = target.in_dir("exec " + " ".join([remote_command(target.segedge), *(shlex.quote(a) for a in args)]))
    process = subprocess.Popen(target.ssh_argv(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace")
    out_lines: list[str] = []

    def pump_stdout() -> None:
        for line in process.stdout:
            (stdout or out_lines.append)(line.rstrip("\n"))

    reader = threading.Thread(target=pump_stdout, daemon=True)
    reader.start()
    error, ssh_lines = None, []
    try:
        for line in process.stderr:
            line = line.rstrip("\n")
            if line.startswith(ERROR_PREFIX):
                error = line[len(ERROR_PREFIX):]
            elif line.startswith(("ssh:", "Warning: Permanently added", "Connection to ", "client_loop:")):
                ssh_lines.append(line)
            elif line.strip():
                log(f"[{target.host}] {line}")
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    reader.join(timeout=5)
    if code == 255 and error is None and ssh_lines:
        log(f"{target.host}: {ssh_lines[-1]}")
    return RemoteRun(code, error)


def fetch_file(target: SshTarget, remote_rel: str, local: Path) -> bool:
    """Copy one file back; False when the device has no such file."""
    done = target.run(target.in_dir(f"if [ -f {shlex.quote(remote_rel)} ]; then cat {shlex.quote(remote_rel)}; "
                                    f"else exit 3; fi"), what=f"fetching {remote_rel}")
    if done.returncode == 3:
        return False
    if done.returncode != 0:
        raise RemoteError(f"fetching {remote_rel} from {target.host} failed: {_last_line(done.stderr)}")
    local.write_bytes(done.stdout)
    return True


def profile_file_for(name_or_path: str) -> Path:
    """The local TOML of a profile: the device gets this exact file, so both sides mean the same profile."""
    from segedge.backends.profiles import GENERIC_JETSON, list_profiles, load_profile

    if name_or_path == GENERIC_JETSON:
        jetsons = [p.name for p in list_profiles() if p.requires.jetson_module]
        raise RemoteError(f"with --remote name the device's profile instead of {GENERIC_JETSON!r} (one of: "
                          f"{', '.join(jetsons)}), so the artifacts can be exported here for it")
    profile = load_profile(name_or_path)
    assert profile.path is not None
    return profile.path


# bench --------------------------------------------------------------------------------------------

REMOTE_STORE = "results.sqlite"
REMOTE_EXPORT = "export"


def bench_on_device(target: SshTarget, profile_arg: str, config, log: Log, progress: bool = False,
                    device_data: str | None = None) -> tuple[list[dict], int]:
    """``segedge bench`` on the device for every model of ``config`` (a :class:`~segedge.flows.bench.BenchConfig`:
    zoo names, ``--onnx``, ``--model``, ``--artifact``, library sources) on its data; returns (this sweep's rows
    from the merged local store, exit status).

    Everything is exported and quantized here (calibration from the training split here, in the device's INT8
    scheme) and runs there as ``bench --artifact``. Real data travels as a packed split (``--data packed:DIR``, :class:`segedge.data.datasets.PackedSplit`),
    content-addressed, so a second run sends no data bytes; ``device_data`` (KIND:ROOT on the device) names a copy
    already there instead. Either way the device refuses, before any row, data whose fingerprint is not the one
    scored here. Raises :class:`RemoteError` with the device's own one-line message on a refusal, and after a
    dropped connection (having merged whatever could be fetched).
    """
    from segedge.backends.profiles import load_profile_file
    from segedge.core.precision import parse_precisions

    profile_path = profile_file_for(profile_arg)
    profile = load_profile_file(profile_path)
    precisions = parse_precisions(config.precisions or profile.precisions)
    synthetic = config.data == "synthetic"
    if device_data is not None and synthetic:
        raise SegedgeError("--device-data names the device's copy of --data KIND:ROOT: give --data as well")
    eval_images = config.eval_images or (4 if config.quick and synthetic else None)
    config = replace(config, precisions=precisions, eval_images=eval_images)
    for source in config.all_sources():
        if source.checkpoint is not None and not source.checkpoint.is_file():
            raise SegedgeError(f"checkpoint {source.checkpoint} for {source.name} does not exist")

    check_remote_version(target)
    with tempfile.TemporaryDirectory(prefix="segedge-remote-") as scratch:
        scratch = Path(scratch)
        first = Shipment()
        remote_profile = first.add_content_addressed(profile_path, "profiles")
        ship(target, first, log=lambda _: None)
        # the hardware check runs on the device before anything is exported here
        said: list[str] = []
        dry = run_segedge(target, ["bench", "--profile", remote_profile, "--dry-run"], log=lambda _: None,
                          stdout=said.append)
        _raise_for(target, dry, before_rows=True)
        int8_scheme = device_int8_scheme(said, profile)

        remote_args = ["bench", "--profile", remote_profile, "--precisions", ",".join(precisions),
                       "--results", REMOTE_STORE, "--out", REMOTE_EXPORT, "--quiet"]
        remote_args += ["--quick"] if config.quick else []
        remote_args += ["--force"] if config.force else []
        shipment, data_shipment = Shipment(), Shipment()
        rebuild, expected, not_sent, count = [], {}, {}, None
        for source in config.all_sources():
            try:
                remote_dir, remote_ckpt, scored = _export_here(profile, source, config, artifacts=config.artifacts,
                                                               shipment=shipment, scratch=scratch, log=log,
                                                               progress=progress, int8_scheme=int8_scheme)
            except SegedgeError as exc:  # this model cannot be measured anywhere: said, the others go on
                not_sent[source.name] = str(exc)
                log(f"❌ {source.name}: {exc}; not sent to {target.host}")
                continue
            if remote_dir:  # run as exported: the device needs only the light install (no torch)
                remote_args += ["--artifact", f"{source.name}={remote_dir}"]
                (size, count, fingerprint) = scored
                expected[size] = fingerprint
            elif source.zoo and synthetic:  # the device tries a zoo model itself (it needs torch for that)
                rebuild.append(source.model)
                if remote_ckpt:
                    remote_args += ["--checkpoint", f"{source.model}={remote_ckpt}"]
            else:
                not_sent[source.name] = "nothing could be exported here"
        if rebuild:
            size = config.input_size or profile.input_size
            remote_args += ["--models", ",".join(rebuild), "--input-size", f"{size[0]}x{size[1]}"]
        if not synthetic and expected:  # the built-in scenes are generated there from the seed
            data_arg = device_data or _pack_data(config, count, data_shipment, scratch)
            remote_args += ["--data", data_arg, "--data-label", config.data, "--expect-data-fingerprint",
                            ",".join(f"{h}x{w}={fp}" for (h, w), fp in sorted(expected.items()))]
        if eval_images or count:
            remote_args += ["--eval-images", str(eval_images or count)]
        if not remote_args.count("--artifact") and not rebuild:
            raise SegedgeError("no model could be sent to " + target.host + ": "
                               + "; ".join(f"{n}: {why}" for n, why in not_sent.items()))
        ship(target, shipment, log)
        if data_shipment.places:
            ship(target, data_shipment, lambda line: log(line.replace("files", "data files", 1)))
        log(f"{target.host}: segedge bench --profile {profile.name} (engines are built and timed on the device)")
        run = run_segedge(target, remote_args, log)
        merged, fetch_error = _fetch_and_merge(target, store := config.store, scratch)
    log(f"merged {merged} new rows from {target.host} into {store}")
    names = {s.name for s in config.all_sources()}
    sizes = set(expected) | ({tuple(config.input_size or profile.input_size)} if rebuild else set())
    rows = [r for r in _rows_of(store, profile.name, names, precisions, config.data)
            if r.get("data_fingerprint") in expected.values()
            or (r.get("data_fingerprint") is None or r["model"] in rebuild) and (r["height"], r["width"]) in sizes]
    if run.code == 255 or fetch_error:
        kept = "its finished rows were merged" if not fetch_error else "finished rows stay in its store"
        raise RemoteError(f"lost the connection to {target.host} during the sweep; {kept}: rerun the same command "
                          f"to resume there and fetch the rest")
    _raise_for(target, run, before_rows=False)
    return rows, 1 if not_sent else run.code


def _pack_data(config, count: int, shipment: Shipment, scratch: Path) -> str:
    """Add the evaluation split's first ``count`` files and its index to ``shipment``; the device's --data."""
    from segedge.data.datasets import PACKED_INDEX, pack_index
    from segedge.flows.export import evaluation_sets

    eval_set, _, _ = evaluation_sets(config.data, None, 0, calib_data=config.calib_data)
    index, files = pack_index(eval_set, count, config.data)
    text = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    folder = f"data/{hashlib.sha256(text).hexdigest()[:16]}"
    for local, relative in files:
        shipment.add_file(local, f"{folder}/{relative}")
    shipment.add_bytes(text, f"{folder}/{PACKED_INDEX}", scratch)
    return f"packed:{folder}"


def _raise_for(target: SshTarget, run: RemoteRun, before_rows: bool) -> None:
    if run.code == 255 and run.error is None:
        raise RemoteError(f"lost the connection to {target.host}" + ("" if before_rows else "; rerun to resume"))
    if run.error is not None:
        raise RemoteError(f"{target.host}: {run.error}")
    if before_rows and run.code != 0:
        raise RemoteError(f"`segedge` on {target.host} failed with exit status {run.code}")


def device_int8_scheme(dry_run_stdout: list[str], profile) -> str:
    """The INT8 scheme the device's dry run names (its backend's choice for its CPU, or the profile's), so the
    artifacts exported here are the ones the device's own sweep would build. Older devices do not say: then
    the profile's scheme, else the backend's default."""
    import re

    from segedge.backends.registry import get_backend

    for line in dry_run_stdout:
        found = re.search(r"INT8 scheme ([\w-]+)", line)
        if found:
            return found.group(1)
    return profile.int8_scheme or get_backend(profile.backend).int8_scheme(None)


def _export_here(profile, source, config, artifacts: Path, shipment: Shipment, scratch: Path, log: Log, progress: bool,
                 int8_scheme: str) -> tuple[str | None, str | None, tuple | None]:
    """Export (or reuse) one model's ONNX artifacts here and add them to the shipment.

    The device benches the directory as it is (``bench --artifact``): no torch there, nothing rebuilt. Returns
    (the artifact directory on the device, or None when a zoo model could not be exported here; its checkpoint
    there; (the input size, the evaluation image count, the data fingerprint) the device's rows must be scored
    at, computed as the device's bench computes them for that artifact). A backend that races INT8 graphs
    (OpenVINO: NNCF's and segedge's own) gets each exported here. A model that is not in the zoo and cannot be
    exported here raises: nothing else could build it.
    """
    from segedge.backends.registry import get_backend
    from segedge.flows.bench import BenchSource, _size_of, _what_is_scored, export_config_for
    from segedge.flows.export import export_model

    name = source.name
    remote_ckpt = (shipment.add_content_addressed(source.checkpoint, "checkpoints")
                   if source.checkpoint and source.zoo else None)
    remote_dir, scored = None, None
    schemes = dict.fromkeys((int8_scheme, *(() if profile.int8_scheme else
                                           get_backend(profile.backend).int8_candidates(None))))
    jobs = [(p, s) for p in config.precisions for s in (schemes if p == "int8" else (int8_scheme,))]
    threads = profile.threads or os.cpu_count() or 1
    for precision, scheme in jobs:
        export = export_config_for(profile, source, precision, config.input_size, config, threads, scheme)
        try:
            result = export_model(export, log=lambda line: log(f"{name} {line}"), progress=progress)
        except SegedgeError as exc:
            if not source.zoo or config.data != "synthetic":
                raise SegedgeError(f"{precision} export here failed ({exc})") from None
            log(f"{name} {precision}: export here failed ({exc}); the device will try and record the reason")
            continue
        manifest = result.manifest
        if remote_ckpt is None and source.zoo and manifest.get("checkpoint"):  # cached trained weights: the same file
            remote_ckpt = shipment.add_content_addressed(Path(manifest["checkpoint"]), "checkpoints")
        remote_dir = f"{REMOTE_EXPORT}/{result.directory.relative_to(artifacts).as_posix()}"
        for stage in dict.fromkeys(("onnx", "sim", export.stage_of(precision))):
            entry = manifest["stages"][stage]
            shipment.add_file(result.directory / entry["file"], f"{remote_dir}/{entry['file']}", entry["sha256"])
            for file, sha in entry.get("sidecars", {}).items():  # an IR's weights
                shipment.add_file(result.directory / file, f"{remote_dir}/{file}", sha)
        on_device = {**manifest, "checkpoint": remote_ckpt}  # the device loads weights from its own copy
        shipment.add_bytes((json.dumps(on_device, indent=2) + "\n").encode(), f"{remote_dir}/{MANIFEST_NAME}", scratch)
        if scored is None:  # what the device's bench computes for this artifact: its size, image count, data
            as_artifact = BenchSource(name, artifact=result.directory)
            there = export_config_for(profile, as_artifact, precision, None, config, threads, scheme)
            size = tuple(there.input_size or _size_of(as_artifact, there, profile))
            count, seen = _what_is_scored(there, size)
            scored = (size, count, seen["data"])
    return remote_dir, remote_ckpt, scored


def _fetch_and_merge(target: SshTarget, store: Path, scratch: Path) -> tuple[int, str | None]:
    from segedge.core.results import ResultsStore

    fetched = scratch / "device.sqlite"
    try:
        if not fetch_file(target, REMOTE_STORE, fetched):
            return 0, None
    except RemoteError as exc:
        return 0, str(exc)
    with ResultsStore(store) as local:
        return local.merge(fetched), None


def _rows_of(store: Path, profile: str, models, precisions, data: str) -> list[dict]:
    """The rows of the merged store of these models and precisions on this data."""
    from segedge.core.results import ResultsStore

    if not store.is_file():
        return []
    with ResultsStore(store, read_only=True) as local:
        return [r for r in local.latest_rows() if r["profile"] == profile and r["model"] in models
                and r["precision"] in precisions and r.get("data") == data]


# export and check: the same command on the device, with its input files copied there ----------------

def passthrough(target: SshTarget, args: list[str], files: dict[str, Path], log: Log,
                stdout: Callable[[str], None] = print) -> int:
    """``segedge ARGS`` on the device, where an argument equal to a key of ``files`` becomes that file's device path."""
    check_remote_version(target)
    shipment = Shipment()
    remote = {token: shipment.add_content_addressed(path, "inputs") for token, path in files.items()}
    ship(target, shipment, log)
    run = run_segedge(target, [remote.get(a, a) for a in args], log, stdout=stdout)
    _raise_for(target, run, before_rows=False)
    return run.code
