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


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (a direct call)
        return ""


def _content_addressed(folder: Path, name: str, data: bytes) -> Path:
    path = folder / hashlib.sha256(data).hexdigest()[:12] / Path(name).name
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
                 log: Log = lambda _: None) -> FleetResult:
    from segedge.backends.profiles import load_profile
    from segedge.core.precision import parse_precisions
    from segedge.models.registry import get_spec
    from segedge.core.results import ResultsStore

    ray = import_ray()
    profiles = [load_profile(name) for name in profile_args]
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

    started_here = not ray.is_initialized()
    if started_here:
        _probe(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, RuntimeError... from an unreachable or wrong address
            raise FleetError(f"cannot connect to the Ray cluster at {address} ({str(exc).splitlines()[0]}); "
                             f"start it with `ray start --head` and pass its address") from None
    result = FleetResult()
    try:
        lacking = advertised(ray.cluster_resources(), [p.name for p in profiles])
        if lacking:
            raise FleetError(
                f"no node of the Ray cluster at {address} advertises {', '.join(repr(p) for p in lacking)}; on each "
                f"device run: ray start --address {address} --resources '{{\"{lacking[0]}\": 1}}'")
        task = ray.remote(run_job)
        pending = {}
        for job in jobs:
            ref = task.options(resources={job.profile: 1}, num_cpus=0, name=f"segedge {job.describe()}").remote(
                job.profile, tomls[job.profile], job.model, job.precision, input_size, eval_images, quick, force,
                blobs.get(job.model), device_dir)
            pending[ref] = job
        log(f"dispatched {len(jobs)} jobs to {address}: one at a time per device")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with ResultsStore(store) as local:
            while pending:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
                if not done:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    left = ", ".join(j.describe() for j in pending.values())
                    raise FleetError(f"{len(pending)} jobs unfinished after {timeout_s:.0f} s ({left}); finished rows "
                                     f"are in {store}; rerun to resume")
                job = pending.pop(done[0])
                record = _collect(ray, done[0], job)
                result.jobs.append(record)
                if record.error is None:
                    merged = _merge_rows(local, record.rows)
                    result.rows.extend(record.rows)
                    log(f"{job.describe()} on {record.hostname}: {len(record.rows)} rows ({merged} new) in "
                        f"{record.ended - record.started:.1f} s")
                else:
                    log(f"❌ {job.describe()} on {record.hostname or 'the cluster'}: {record.error}")
    finally:
        if started_here:
            ray.shutdown()
    failed = [r for r in result.jobs if r.error]
    if failed:
        raise FleetError(f"{len(failed)} of {len(result.jobs)} jobs failed; first: {failed[0].job.describe()} on "
                         f"{failed[0].hostname or 'the cluster'}: {failed[0].error}")
    return result


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
                     ended=out["ended"], rows=out["rows"], error=out["error"])


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
