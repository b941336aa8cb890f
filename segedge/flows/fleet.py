"""``segedge sweep --ray ADDRESS``: model × precision × profile jobs on a Ray cluster of devices.

Each device joins the cluster advertising one unit of a custom resource named after its profile::

    ray start --address HEAD:6379 --resources '{"jetson-orin-nano": 1}'

and every job asks for that whole unit (``{profile: 1}``), so Ray never runs two jobs on one device at the
same time and no measurement shares its hardware with another. A job runs the ordinary ``run_sweep`` for one
model and one precision on the device (export, engine build and timing all happen there, with the profile's
hardware check), keeps its rows in the device's own store (so a rerun resumes there), and returns them; the
driver merges each job's rows into the local store the moment that job finishes.

Ray is an optional extra (``pip install 'segedge[fleet]'``), imported only here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segedge.core.artifacts import current_umask
from segedge.core.errors import SegedgeError

DEFAULT_DEVICE_DIR = "~/.cache/segedge/fleet"
Log = Callable[[str], None]


class FleetError(SegedgeError):
    """Ray is missing, the cluster cannot be reached, or no device advertises a profile."""


@dataclass(frozen=True)
class Job:
    profile: str
    model: str
    precision: str

    def describe(self) -> str:
        return f"{self.profile} {self.model} {self.precision}"


@dataclass
class JobRecord:
    job: Job
    node_id: str = ""
    hostname: str = ""
    started: float = 0.0  # wall clock on the device (time.time())
    ended: float = 0.0
    rows: list[dict] = field(default_factory=list, repr=False)
    error: str | None = None
    fetched_bytes: int | None = None  # the artifact route: what this job took from the object store
    part: dict | None = field(default=None, repr=False)  # a split evaluation's part (its timing or its image stats)


@dataclass
class FleetResult:
    rows: list[dict] = field(default_factory=list)  # this sweep's rows, as merged into the local store
    jobs: list[JobRecord] = field(default_factory=list)


def import_ray():
    try:
        import ray
    except ImportError:
        raise FleetError("segedge sweep --ray needs Ray: pip install 'segedge[fleet]'") from None
    return ray


def run_job(profile_name: str, profile_toml: bytes, model: str, precision: str, input_size: tuple[int, int] | None,
            eval_images: int, quick: bool, force: bool, checkpoint: tuple[str, bytes] | None,
            device_dir: str) -> dict:
    """On the device: one model × precision of the profile, stored there and returned.

    Module-level so Ray pickles it by reference: the device imports its own installed segedge.
    """
    from segedge.core.hardware import detect_machine
    from segedge.backends.profiles import load_profile_file, require_runnable
    from segedge.core.results import RESUME_KEY, ResultsStore
    from segedge.flows.bench import BenchConfig, run_sweep

    started = time.time()
    info = {"hostname": socket.gethostname(), "started": started, "node_id": _node_id()}
    root = Path(device_dir).expanduser()
    profile_path = _content_addressed(root / "profiles", f"{profile_name}.toml", profile_toml)
    ckpt_path = _content_addressed(root / "checkpoints", checkpoint[0], checkpoint[1]) if checkpoint else None
    try:
        profile = load_profile_file(profile_path)
        machine = detect_machine()
        backend = require_runnable(profile, machine)
        size = tuple(input_size or profile.input_size)
        config = BenchConfig(models=(model,), precisions=(precision,), input_size=size, store=root / "results.sqlite",
                             artifacts=root / "export", eval_images=4 if quick else (eval_images or 8), quick=quick,
                             force=force, checkpoints={model: ckpt_path} if ckpt_path else {})
        run_sweep(profile, backend, machine, config)
        key = dict(machine_id=machine.machine_id, profile=profile.name, model=model, precision=precision,
                   height=size[0], width=size[1], batch=1)
        with ResultsStore(config.store) as store:  # resumed rows too, so a driver that missed them gets them
            rows = [r for r in store.latest_rows() if all(r[k] == key[k] for k in RESUME_KEY)]
    except SegedgeError as exc:
        return {**info, "ended": time.time(), "rows": [], "error": str(exc)}
    return {**info, "ended": time.time(), "rows": rows, "error": None}


def probe_int8_scheme(profile_toml: bytes, device_dir: str) -> str:
    """On a device of the profile: the INT8 scheme its own sweep would build (its backend's choice for its CPU),
    so the graphs exported on the workstation are that one."""
    from segedge.backends.profiles import load_profile_file, require_runnable
    from segedge.core.hardware import detect_machine

    root = Path(device_dir).expanduser()
    profile = load_profile_file(_content_addressed(root / "profiles", "profile.toml", profile_toml))
    machine = detect_machine()
    return profile.int8_scheme_on(require_runnable(profile, machine), machine)


def run_artifact_job(profile_name: str, profile_toml: bytes, name: str, precision: str, artifact_dir: str,
                     places: dict[str, str], blobs: dict, data: dict | None, eval_images: int | None, quick: bool,
                     force: bool, device_dir: str) -> dict:
    """On the device: one model × precision of artifacts exported on the workstation, on its data.

    ``places`` maps each file's path under the device dir to its sha256, ``blobs`` each sha256 to a Ray object
    holding its bytes: a file already on this node (``blobs/<sha256>``) is never fetched again, so the data
    reaches each node once. ``data`` is ``{"arg": "packed:data/…", "label": …, "expect": {"HxW": fingerprint}}``
    (None: the built-in scenes): the sweep refuses, before any row, data that is not what the workstation scored.
    """
    from segedge.core.results import ResultsStore
    from segedge.flows.bench import run_sweep

    info = {"hostname": socket.gethostname(), "started": time.time(), "node_id": _node_id()}
    try:
        fetched, profile, machine, backend, config = _artifact_setup(
            Path(device_dir).expanduser(), places, blobs, profile_name, profile_toml, name, precision, artifact_dir,
            data, eval_images, quick, force)
        run_sweep(profile, backend, machine, config)
        label, expect = config.data_label or config.data, config.expect_data
        with ResultsStore(config.store) as store:  # resumed rows too, so a driver that missed them gets them
            rows = [r for r in store.latest_rows() if r["machine_id"] == machine.machine_id
                    and r["profile"] == profile.name and r["model"] == name and r["precision"] == precision
                    and r.get("data") == label and (not expect or r.get("data_fingerprint") in expect.values()
                                                   or r["status"] == "failed")]
    except SegedgeError as exc:
        return {**info, "ended": time.time(), "rows": [], "error": str(exc), "fetched_bytes": 0}
    return {**info, "ended": time.time(), "rows": rows, "error": None, "fetched_bytes": fetched}


def run_split_part(profile_name: str, profile_toml: bytes, name: str, precision: str, artifact_dir: str,
                   places: dict[str, str], blobs: dict, data: dict | None, eval_images: int | None, quick: bool,
                   force: bool, device_dir: str, images: tuple[int, int] | None, finished: frozenset) -> dict:
    """On the device: one part of a split evaluation (``segedge.flows.bench.split_part``): the row's timing
    (``images`` None), or the per-image stats of evaluation images ``images`` = (start, stop)."""
    from segedge.flows.bench import split_part

    info = {"hostname": socket.gethostname(), "started": time.time(), "node_id": _node_id()}
    try:
        fetched, profile, machine, backend, config = _artifact_setup(
            Path(device_dir).expanduser(), places, blobs, profile_name, profile_toml, name, precision, artifact_dir,
            data, eval_images, quick, force)
        part = split_part(profile, backend, machine, config, precision, images, finished)
    except SegedgeError as exc:
        return {**info, "ended": time.time(), "error": str(exc), "fetched_bytes": 0}
    return {**info, "ended": time.time(), "error": None, "fetched_bytes": fetched, "part": part}


def _artifact_setup(root: Path, places, blobs, profile_name, profile_toml, name, precision, artifact_dir, data,
                    eval_images, quick, force):
    """The files in place, the profile checked against this device, and the one-model config of a job."""
    from segedge.backends.profiles import load_profile_file, require_runnable
    from segedge.core.hardware import detect_machine
    from segedge.flows.bench import BenchConfig, BenchSource

    fetched = _materialize(root, places, blobs)
    profile = load_profile_file(_content_addressed(root / "profiles", f"{profile_name}.toml", profile_toml))
    machine = detect_machine()
    backend = require_runnable(profile, machine)
    expect = {tuple(int(v) for v in k.split("x")): fp for k, fp in (data or {}).get("expect", {}).items()}
    config = BenchConfig(models=(), precisions=(precision,), input_size=None, store=root / "results.sqlite",
                         artifacts=root / "export", eval_images=eval_images, quick=quick, force=force,
                         sources=(BenchSource(name, artifact=root / artifact_dir),),
                         data=f"packed:{root / data['arg'].partition(':')[2]}" if data else "synthetic",
                         expect_data=expect or None, data_label=data["label"] if data else None)
    return fetched, profile, machine, backend, config


def _materialize(root: Path, places: dict[str, str], blobs: dict) -> int:
    """Every file of ``places`` in place under ``root``, fetched from the object store only where this node lacks
    its blob; returns the bytes fetched."""
    import ray

    fetched = 0
    for relative, sha in sorted(places.items()):
        blob = root / "blobs" / sha
        if not blob.is_file():
            data = ray.get(blobs[sha])
            if hashlib.sha256(data).hexdigest() != sha:
                raise FleetError(f"the copy of {relative} that reached {socket.gethostname()} is damaged (its sha256 "
                                 f"differs); rerun")
            _content_addressed(root / "blobs", sha, data, exact=True)
            fetched += len(data)
        target = root / relative
        if not target.is_file() or not os.path.samefile(target, blob):
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.link")
            temporary.unlink(missing_ok=True)
            try:
                os.link(blob, temporary)
            except OSError:  # a file system without hard links
                shutil.copyfile(blob, temporary)
            os.replace(temporary, target)
    return fetched


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (a direct call)
        return ""


def _content_addressed(folder: Path, name: str, data: bytes, exact: bool = False) -> Path:
    """``folder/<sha12>/name`` holding ``data`` (``folder/name`` with ``exact``), written atomically once."""
    path = folder / name if exact else folder / hashlib.sha256(data).hexdigest()[:12] / Path(name).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # the user's umask, not mkstemp's 0600
        os.replace(tmp, path)
    return path


def advertised(resources: dict, profiles: list[str]) -> list[str]:
    """Profiles that no node of the cluster advertises (their jobs would wait for ever)."""
    return [p for p in profiles if resources.get(p, 0) < 1]


def sweep_on_ray(address: str, profile_args: list[str], models: tuple[str, ...], precisions: tuple[str, ...] | None,
                 input_size: tuple[int, int] | None, store: Path, checkpoints: dict[str, Path] | None = None,
                 eval_images: int = 8, quick: bool = False, force: bool = False,
                 device_dir: str = DEFAULT_DEVICE_DIR, timeout_s: float | None = None,
                 log: Log = lambda _: None, own=None, split_eval: bool = False) -> FleetResult:
    """Every model × precision × profile as one job on a device advertising the profile.

    ``own`` (a :class:`~segedge.flows.bench.BenchConfig` with the user's models — ``--onnx``, ``--model``,
    ``--artifact``, library sources — or ``--data KIND:ROOT``): everything is exported and quantized here
    (calibration here, in the scheme a device of the profile says it builds), artifacts and the evaluation split
    go through Ray's object store once and each node keeps them by content, and every job benches the artifact
    there, refusing data that is not what was scored here. Without it, each device exports the zoo models itself.

    ``split_eval``: each row is timed on one device of its profile and its evaluation images are cut in as many
    consecutive slices as the profile has devices, scored in parallel; the per-image stats joined here give the
    mIoU, interval and agreement one device would give (artifacts are then exported here for the zoo too).
    """
    from segedge.backends.profiles import load_profile
    from segedge.core.precision import parse_precisions
    from segedge.models.registry import get_spec

    ray = import_ray()
    profiles = [load_profile(name) for name in profile_args]
    if own is not None and (own.sources or own.data != "synthetic" or split_eval):
        return _sweep_artifacts(ray, address, profiles, own, precisions, store, device_dir, timeout_s, log, split_eval)
    models = tuple(get_spec(m).name for m in models)
    jobs = []
    for profile in profiles:
        wanted = parse_precisions(precisions or profile.precisions)
        size = tuple(input_size or profile.input_size)
        for model in models:
            get_spec(model).check_input_size(*size)
            jobs.extend(Job(profile.name, model, p) for p in wanted)
    checkpoints = checkpoints or {}
    for model, path in checkpoints.items():
        if not path.is_file():
            raise SegedgeError(f"checkpoint {path} for {model} does not exist (it is sent to the devices)")
    blobs = {m: (path.name, path.read_bytes()) for m, path in checkpoints.items() if m in models}
    tomls = {p.name: p.path.read_bytes() for p in profiles}

    with _connected(ray, address, [p.name for p in profiles]):
        task = ray.remote(run_job)
        pending = {}
        for job in jobs:
            ref = task.options(resources={job.profile: 1}, num_cpus=0, name=f"segedge {job.describe()}").remote(
                job.profile, tomls[job.profile], job.model, job.precision, input_size, eval_images, quick, force,
                blobs.get(job.model), device_dir)
            pending[ref] = job
        log(f"dispatched {len(jobs)} jobs to {address}: one at a time per device")
        return _gather(ray, pending, store, timeout_s, log)


class _connected:
    """Ray connected to ``address`` (and shut down after, when connected here), every profile advertised."""

    def __init__(self, ray, address: str, profiles: list[str]) -> None:
        self.ray, self.address, self.profiles = ray, address, profiles

    def __enter__(self):
        ray, address = self.ray, self.address
        self.started_here = not ray.is_initialized()
        if self.started_here:
            _probe(address)
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
            except Exception as exc:  # ConnectionError, RuntimeError... from an unreachable or wrong address
                raise FleetError(f"cannot connect to the Ray cluster at {address} ({str(exc).splitlines()[0]}); "
                                 f"start it with `ray start --head` and pass its address") from None
        try:
            lacking = advertised(ray.cluster_resources(), self.profiles)
            if lacking:
                raise FleetError(
                    f"no node of the Ray cluster at {address} advertises {', '.join(repr(p) for p in lacking)}; on "
                    f"each device run: ray start --address {address} --resources '{{\"{lacking[0]}\": 1}}'")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.started_here:
            self.ray.shutdown()


def _next_done(ray, pending: dict, deadline: float | None, timeout_s: float | None, store: Path, left: list[str]):
    """The next finished job's reference; past the deadline, every pending job cancelled and a one-line error."""
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    done, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
    if not done:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise FleetError(f"{len(pending)} jobs unfinished after {timeout_s:.0f} s ({', '.join(left)}); finished rows "
                         f"are in {store}; rerun to resume")
    return done[0]


def _gather(ray, pending: dict, store: Path, timeout_s: float | None, log: Log) -> FleetResult:
    """Wait for every job, merging each one's rows into ``store`` the moment it finishes."""
    from segedge.core.results import ResultsStore

    result = FleetResult()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with ResultsStore(store) as local:
        while pending:
            ref = _next_done(ray, pending, deadline, timeout_s, store, [j.describe() for j in pending.values()])
            job = pending.pop(ref)
            record = _collect(ray, ref, job)
            result.jobs.append(record)
            if record.error is None:
                merged = _merge_rows(local, record.rows)
                result.rows.extend(record.rows)
                fetched = f", fetched {record.fetched_bytes / 1e6:.1f} MB" if record.fetched_bytes is not None else ""
                log(f"{job.describe()} on {record.hostname}: {len(record.rows)} rows ({merged} new) in "
                    f"{record.ended - record.started:.1f} s{fetched}")
            else:
                log(f"❌ {job.describe()} on {record.hostname or 'the cluster'}: {record.error}")
    failed = [r for r in result.jobs if r.error]
    if failed:
        raise FleetError(f"{len(failed)} of {len(result.jobs)} jobs failed; first: {failed[0].job.describe()} on "
                         f"{failed[0].hostname or 'the cluster'}: {failed[0].error}")
    return result


def _sweep_artifacts(ray, address: str, profiles, own, precisions, store: Path, device_dir: str,
                     timeout_s: float | None, log: Log, split: bool = False) -> FleetResult:
    """``sweep_on_ray`` for the user's models and data: exported here, benched there as artifacts."""
    from dataclasses import replace

    from segedge.core.precision import parse_precisions
    from segedge.flows.remote import Shipment, _export_here, _pack_data

    for source in own.all_sources():
        if source.checkpoint is not None and not source.checkpoint.is_file():
            raise SegedgeError(f"checkpoint {source.checkpoint} for {source.name} does not exist")
    synthetic = own.data == "synthetic"
    eval_images = own.eval_images or (4 if own.quick and synthetic else None)
    with _connected(ray, address, [p.name for p in profiles]), tempfile.TemporaryDirectory(prefix="segedge-fleet-") as scratch:
        scratch = Path(scratch)
        refs: dict[str, object] = {}  # sha256 → the object holding the file's bytes, put once for every job

        def put(shipment: Shipment, places: dict[str, str]) -> dict:
            for sha, path in shipment.sources.items():
                if sha not in refs:
                    refs[sha] = ray.put(path.read_bytes())
            return {sha: refs[sha] for sha in places.values()}

        pending, data_places, data, count = {}, None, None, None
        probe = ray.remote(probe_int8_scheme)
        task, part_task = ray.remote(run_artifact_job), ray.remote(run_split_part)
        for profile in profiles:
            toml = profile.path.read_bytes()
            wanted = parse_precisions(precisions or own.precisions or profile.precisions)
            config = replace(own, precisions=wanted, eval_images=eval_images)
            scheme = ray.get(probe.options(resources={profile.name: 1}, num_cpus=0).remote(toml, device_dir))
            for source in config.all_sources():
                shipment = Shipment()
                try:
                    remote_dir, _, scored = _export_here(profile, source, config, config.artifacts, shipment, scratch,
                                                         log, False, scheme)
                except SegedgeError as exc:
                    log(f"❌ {profile.name} {source.name}: {exc}; not sent")
                    continue
                if remote_dir is None:
                    log(f"❌ {profile.name} {source.name}: nothing could be exported here; not sent")
                    continue
                size, count, fingerprint = scored
                if not synthetic and data_places is None:
                    packed = Shipment()
                    arg = _pack_data(config, count, packed, scratch)
                    data_places, data = packed, {"arg": arg, "label": config.data}
                places = dict(shipment.places)
                if data is not None:
                    places.update(data_places.places)
                    shipment.sources.update(data_places.sources)
                job_data = None if data is None else {**data, "expect": {f"{size[0]}x{size[1]}": fingerprint}}
                blobs = put(shipment, places)
                for precision in wanted:
                    job = Job(profile.name, source.name, precision)
                    args = (profile.name, toml, source.name, precision, remote_dir, places, blobs, job_data,
                            eval_images or count, own.quick, own.force, device_dir)
                    options = dict(resources={profile.name: 1}, num_cpus=0, name=f"segedge {job.describe()}")
                    if split:  # the timing part; with rows of it here, first: its identity says if it is one
                        finished = _finished(store, job, own.quick) if not own.force else frozenset()
                        row_job = SplitJob(job, args, eval_images or count, _devices_of(ray, profile.name))
                        pending[part_task.options(**options).remote(*args, None, finished)] = (row_job, None)
                        if not finished:  # nothing to resume: the slices run beside the timing
                            _dispatch_slices(part_task, row_job, pending)
                    else:
                        pending[task.options(**options).remote(*args)] = job
        if not pending:
            raise FleetError("no model could be exported here: nothing was sent")
        log(f"dispatched {len(pending)} jobs to {address}: one at a time per device"
            + ("; each row's evaluation images are split over its profile's devices" if split else ""))
        if split:
            return _gather_split(ray, part_task, pending, store, timeout_s, log)
        return _gather(ray, pending, store, timeout_s, log)


@dataclass
class SplitJob:
    """One row of a split evaluation: its timing part, then one part per slice of the evaluation images."""

    job: Job
    args: tuple  # run_split_part's arguments before ``images`` and ``finished``
    images: int
    devices: list[str]  # the nodes advertising the profile: the evaluation split is cut in as many slices
    timing: dict | None = None
    parts: list[dict] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    dispatched: bool = False  # its slices are on their way
    failed: bool = False

    def slices(self) -> list[tuple[tuple[int, int], str]]:
        """Consecutive (start, stop) slices, one per device, each with the node it is meant for."""
        n = max(1, len(self.devices))
        cuts = [round(i * self.images / n) for i in range(n + 1)]
        return [((a, b), node) for (a, b), node in zip(zip(cuts, cuts[1:]), self.devices or [""]) if b > a]


def _devices_of(ray, profile: str) -> list[str]:
    """Node ids of the live nodes advertising ``profile``."""
    return sorted(node["NodeID"] for node in ray.nodes()
                  if node.get("Alive") and node.get("Resources", {}).get(profile, 0) >= 1)


def _finished(store: Path, job: Job, quick: bool) -> frozenset:
    """Identities of the rows of ``job`` already measured in the local store (a quick run takes any)."""
    from segedge.core.results import MEASURED, ResultsStore

    if not Path(store).is_file():
        return frozenset()
    with ResultsStore(store) as results:
        return frozenset(r["identity"] for r in results.rows()
                         if (r["profile"], r["model"], r["precision"], r["batch"]) == (job.profile, job.model, job.precision, 1)
                         and r["status"] in MEASURED and r.get("identity")
                         and (quick or not r.get("quick")))


def _gather_split(ray, part_task, pending: dict, store: Path, timeout_s: float | None, log: Log) -> FleetResult:
    """``_gather`` for split evaluations: a row is joined and merged here once its timing part and every image
    slice are in. Slices already dispatched (nothing to resume) run beside the timing; otherwise the timing part,
    when it is not resumed, dispatches them."""
    from segedge.core.results import ResultsStore
    from segedge.flows.bench import joined_split_row

    result = FleetResult()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    errors = []
    with ResultsStore(store) as local:
        while pending:
            ref = _next_done(ray, pending, deadline, timeout_s, store,
                             sorted({split.job.describe() for split, _ in pending.values()}))
            split, images = pending.pop(ref)
            record = _collect(ray, ref, split.job)
            result.jobs.append(record)
            what = "timing" if images is None else f"images {images[0]}-{images[1] - 1}"
            if record.error is not None:
                errors.append(record)
                split.failed = True
                log(f"❌ {split.job.describe()} ({what}) on {record.hostname or 'the cluster'}: {record.error}")
                continue
            fetched = f", fetched {record.fetched_bytes / 1e6:.1f} MB" if record.fetched_bytes is not None else ""
            log(f"{split.job.describe()}: {what} on {record.hostname} in {record.ended - record.started:.1f} s{fetched}")
            part = record.part
            if images is not None:
                split.parts.append(part)
                split.hosts.append(f"{record.hostname}:{record.node_id[:8]}" if record.node_id else record.hostname)
            elif "resumed" in part:
                log(f"{split.job.describe()}: already measured, same model file, data, preprocessing, profile and "
                    f"device (resumed; --force to redo)")
                row = local.finished_row(part["resumed"], quick=True)
                result.rows.extend([row] if row else [])
                continue
            elif part["row"].get("status") == "failed":
                split.failed = True
                _merge_rows(local, [part["row"]])
                result.rows.append(part["row"])
                log(f"❌ {split.job.describe()}: {part['row']['reason']}")
                continue
            else:
                split.timing = part
                if not split.dispatched:
                    _dispatch_slices(part_task, split, pending)
            if split.failed or split.timing is None or len(split.parts) < len(split.slices()):
                continue
            try:
                row = joined_split_row(split.timing, split.parts, split.hosts)
            except SegedgeError as exc:
                errors.append(JobRecord(split.job, error=str(exc)))
                log(f"❌ {split.job.describe()}: {exc}")
                continue
            merged = _merge_rows(local, [row])
            result.rows.append(row)
            log(f"{split.job.describe()}: joined {len(split.parts)} slices of {split.images} images ({merged} new row)")
    if errors:
        first = errors[0]
        raise FleetError(f"{len(errors)} parts of the split evaluation failed; first: {first.job.describe()} on "
                         f"{first.hostname or 'the cluster'}: {first.error}")
    return result


def _dispatch_slices(part_task, split: "SplitJob", pending: dict) -> None:
    """One job per slice of the row's evaluation images, each pinned to its own device of the profile (Ray's
    view of free devices can lag and queue two on one); soft: a device gone since is replaced by another."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    split.dispatched = True
    for images, node in split.slices():
        where = NodeAffinitySchedulingStrategy(node, soft=True) if node else "DEFAULT"
        ref = part_task.options(resources={split.job.profile: 1}, num_cpus=0, scheduling_strategy=where,
                                name=f"segedge {split.job.describe()} {images}").remote(*split.args, images, frozenset())
        pending[ref] = (split, images)


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for ever)."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise FleetError(f"nothing answers at {address} ({exc.strerror or exc}); start the head with "
                         f"`ray start --head` and pass the address it prints") from None


def _collect(ray, ref, job: Job) -> JobRecord:
    try:
        out = ray.get(ref)
    except Exception as exc:  # the task raised (a bug) or its node died
        lines = str(exc).strip().splitlines()
        return JobRecord(job, error=f"{type(exc).__name__}: {lines[-1] if lines else ''}")
    return JobRecord(job, node_id=out["node_id"], hostname=out["hostname"], started=out["started"],
                     ended=out["ended"], rows=out.get("rows", []), error=out["error"], fetched_bytes=out.get("fetched_bytes"),
                     part=out.get("part"))


def _merge_rows(store, rows: list[dict]) -> int:
    """Through a scratch store and ``ResultsStore.merge``, so the duplicate rule is that of ``report --merge``."""
    from segedge.core.results import ResultsStore

    if not rows:
        return 0
    with tempfile.TemporaryDirectory(prefix="segedge-fleet-") as scratch:
        path = Path(scratch) / "job.sqlite"
        with ResultsStore(path) as job_store:
            for row in rows:
                job_store.add({k: v for k, v in row.items() if k != "id"})
        return store.merge(path)
