"""``segedge ship``: which model × input size × precision to deploy on a profile under a latency budget and a
drop limit, searched cheap first, and the pick handed over as a bundle the :class:`~segedge.Predictor` loads.

Every candidate's drop is measured against the user's model **at its own size in FP32**: a smaller input is fed
the evaluation images resized to it, and its scores are resized back to the labels' full resolution before
scoring, so the drop includes what the lower resolution costs.

Cheap first, and said:
1. **time** every candidate with a few quick runs (smallest inputs first). One whose fastest quick run is over
   the budget is dropped; so is one whose FP32 time at its size, divided by the best speed-up this precision has
   shown so far on this backend, is still over it (it is never exported); and every larger size of a model whose
   smaller size cannot meet the budget at any precision measured so far.
2. **score** the survivors, fastest first, on a growing number of evaluation images (8, 32, then all): one whose
   drop interval's *lower* end is already over the limit is dropped; one whose quick time is slower than the pick
   so far cannot win and is not scored.
3. **measure** the rest fully (the profile's runs) and keep the fastest whose median is within the budget and
   whose interval's *upper* end is within the limit: the rule of ``segedge report --budget-ms --max-drop``.
Each candidate's fate and why go to the results store (measured rows as ``bench`` stores them; dropped ones as
``pruned`` rows) and to the bundle's report. A rerun reuses every row already measured under the same identity.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from segedge.backends.profiles import Profile
from segedge.backends.registry import get_backend
from segedge.core.artifacts import atomic_write_json, atomic_write_text, machine_timing_lock, stage_digest
from segedge.core.errors import SegedgeError
from segedge.core.hardware import Machine
from segedge.core.results import ResultsStore
from segedge.flows.bench import (BenchConfig, BenchSource, _reason, _reference, _size_of, _what_is_scored,
                                 export_config_for, row_identity)
from segedge.flows.export import export_model
from segedge.verify.compare import Reference, accuracy_on_active_runner
from segedge.verify.timing import PeakMemory, measure_latency

SCORE_STEPS = (8, 32)  # evaluation images scored before all of them
QUICK_RUNS = 3


@dataclass(frozen=True)
class ShipConfig:
    bench: BenchConfig  # the models, precisions, data, stores and own-model options, as `bench` takes them
    budget_ms: float
    max_drop: float
    sizes: tuple[tuple[int, int], ...] = ()  # explicit input sizes (rounded to each model's stride)
    scales: tuple[float, ...] = ()  # else fractions of each model's own size; () with no sizes: its own size only
    time_limit_s: float | None = None
    out: Path = Path("ship")
    steps: tuple[int, ...] = SCORE_STEPS
    exhaustive: bool = False  # the grid ship is measured against: every candidate timed and scored fully, none dropped


@dataclass
class Candidate:
    source: BenchSource
    size: tuple[int, int]
    full: tuple[int, int]  # the model's own size: its FP32 there is every candidate's reference
    precision: str
    fate: str = "waiting"  # picked, feasible, over budget, over drop, uncertain, slower than the pick, failed, not reached
    why: str = ""
    quick_ms: float | None = None  # the fastest of a few quick runs
    row: dict | None = None
    artifact: Path | None = None
    stage: str | None = None
    export: object = None  # its ExportConfig
    manifest: dict | None = None  # its artifact's manifest

    @property
    def label(self) -> str:
        return f"{self.source.name} {self.size[0]}x{self.size[1]} {self.precision}"

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


@dataclass
class ShipResult:
    pick: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)
    stopped: str = ""  # why the search stopped early (the time limit), else ""

    def answer(self, budget_ms: float, max_drop: float) -> str:
        """One line when nothing meets both limits: the fastest within the drop, the most accurate within the budget."""
        scored = [c for c in self.candidates if c.row is not None and c.row.get("drop_high") is not None]
        within_drop = [c for c in scored if c.row["drop_high"] <= max_drop]
        timed = [c for c in self.candidates if c.quick_ms is not None and c.quick_ms <= budget_ms and c.row is not None]
        parts = [f"nothing meets both {budget_ms:g} ms and a drop of {max_drop:g} points"]
        if within_drop:
            best = min(within_drop, key=lambda c: c.row["median_ms"])
            parts.append(f"the fastest within the drop is {best.label} ({best.row['median_ms']:.1f} ms)")
        if timed:
            best = min(timed, key=lambda c: c.row["drop_high"])
            parts.append(f"the most accurate within the budget is {best.label} (drop {best.row['miou_drop']:+.2f}, "
                         f"upper end {best.row['drop_high']:+.2f})")
        if not within_drop and not timed:
            parts.append("no candidate was scored within either limit; widen the search (--sizes, --scales, "
                         "--precisions) or the limits")
        return "; ".join(parts) + (f" ({self.stopped})" if self.stopped else "")


def candidate_sizes(source: BenchSource, full: tuple[int, int], spec, config: ShipConfig, log) -> list[tuple[int, int]]:
    """The input sizes searched for one model: ``--sizes`` or ``--scales`` of its own size, rounded to what it
    takes; a model with a fixed input (an outside ONNX, an artifact) runs at that size only."""
    if source.fixed_size and (config.sizes or config.scales):
        log(f"{source.name}: a fixed {full[0]}x{full[1]} input; searched at that size only")
        return [tuple(full)]
    wanted = list(config.sizes) or [(max(1, round(full[0] * s)), max(1, round(full[1] * s))) for s in config.scales]
    sizes = []
    for height, width in wanted or [tuple(full)]:
        size = tuple(spec.nearest_valid_size(height, width))
        if size not in sizes:
            sizes.append(size)
    return sorted(sizes, key=lambda s: s[0] * s[1])


def ship_search(profile: Profile, backend_name: str, machine: Machine, config: ShipConfig,
                log: Callable[[str], None] = lambda _: None, progress: bool = False) -> ShipResult:
    """Search, measure and pick (nothing written besides the store's rows; :func:`write_bundle` hands over)."""
    from tqdm import tqdm

    started = time.monotonic()
    bench = config.bench
    threads = profile.threads or os.cpu_count() or 1
    scheme = profile.int8_scheme_on(backend_name, machine)
    backend = get_backend(backend_name)
    for precision in bench.precisions:
        refusal = backend.refuses(precision, profile, machine)
        if refusal:
            raise SegedgeError(refusal)
    references: dict = {}
    candidates: list[Candidate] = []
    for source in bench.all_sources():
        full_export = export_config_for(profile, source, "fp32", bench.input_size, bench, threads, scheme)
        full = tuple(full_export.input_size or _size_of(source, full_export, profile))
        from segedge.flows.export import resolve_source

        spec = resolve_source(replace(full_export, input_size=full)).spec
        for size in candidate_sizes(source, full, spec, config, log):
            candidates += [Candidate(source, size, full, p) for p in ("fp32", *[q for q in bench.precisions if q != "fp32"])]
    result = ShipResult(None, candidates)

    def out_of_time() -> bool:
        if config.time_limit_s is not None and time.monotonic() - started > config.time_limit_s:
            result.stopped = f"stopped at the time limit of {config.time_limit_s:g} s"
            return True
        return False

    bar = tqdm(total=len(candidates), desc=f"ship {profile.name}", unit="cand", disable=not progress)

    def settle(candidate: Candidate, fate: str, why: str) -> None:
        candidate.fate, candidate.why = fate, why
        bar.update(1)
        best = result.pick
        bar.set_postfix_str(f"best {best.label} {best.row['median_ms']:.1f} ms" if best else "no pick yet")
        log(f"{candidate.label}: {fate} ({why})")

    # 1. time, smallest inputs first ---------------------------------------------------------------------------
    speedup: dict[str, float] = {}  # precision → the best FP32/precision time ratio seen on this backend
    fp32_ms: dict[tuple, float] = {}
    too_slow: dict[str, tuple[int, int]] = {}  # model → a size at which nothing could meet the budget
    for candidate in sorted(candidates, key=lambda c: (c.pixels, c.precision != "fp32")):
        if out_of_time():
            break
        name, key = candidate.source.name, (candidate.source.name, candidate.size)
        smaller = too_slow.get(name)
        if smaller and not config.exhaustive and smaller[0] <= candidate.size[0] and smaller[1] <= candidate.size[1]:
            settle(candidate, "over budget", f"{smaller[0]}x{smaller[1]} could not meet {config.budget_ms:g} ms at any "
                                             f"precision measured so far, and this input is no smaller")
            continue
        if not config.exhaustive and candidate.precision != "fp32" and key in fp32_ms and candidate.precision in speedup:
            estimate = fp32_ms[key] / speedup[candidate.precision]
            if estimate > config.budget_ms:
                settle(candidate, "over budget", f"FP32 takes {fp32_ms[key]:.1f} ms here; even at the best "
                       f"{candidate.precision} speed-up measured so far ({speedup[candidate.precision]:.2f}x) that is "
                       f"{estimate:.1f} ms")
                continue
        try:
            candidate.quick_ms = _quick_time(candidate, profile, backend, bench, threads, scheme)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            settle(candidate, "failed", _reason(exc))
            continue
        if candidate.precision == "fp32":
            fp32_ms[key] = candidate.quick_ms
        elif key in fp32_ms:
            speedup[candidate.precision] = max(speedup.get(candidate.precision, 0.0), fp32_ms[key] / candidate.quick_ms)
        if candidate.quick_ms > config.budget_ms and not config.exhaustive:
            settle(candidate, "over budget", f"its fastest quick run took {candidate.quick_ms:.1f} ms")
        same = [c for c in candidates if (c.source.name, c.size) == key]
        if all(c.fate == "over budget" for c in same):  # every precision at this size: no larger one can do better
            too_slow.setdefault(name, candidate.size)

    # 2. and 3. score the survivors fastest first, then measure them fully ----------------------------------
    survivors = sorted((c for c in candidates if c.fate == "waiting" and c.quick_ms is not None), key=lambda c: c.quick_ms)
    with ResultsStore(bench.store) as store:
        for candidate in survivors:
            if out_of_time():
                break
            found = None
            try:
                found = _measured_before(candidate, profile, bench, threads, scheme, machine, references, store)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                settle(candidate, "failed", _reason(exc))
                continue
            if found is not None:
                log(f"{candidate.label}: measured before under the same identity (reused)")
                candidate.row = found
                if found.get("reason"):
                    candidate.fate, candidate.why = "over drop", found["reason"]
            elif not config.exhaustive and result.pick is not None and candidate.quick_ms > result.pick.row["median_ms"]:
                settle(candidate, "slower than the pick", f"its fastest quick run ({candidate.quick_ms:.1f} ms) is slower "
                       f"than {result.pick.label}'s median ({result.pick.row['median_ms']:.1f} ms)")
                continue
            if found is None:
                try:
                    _score_and_measure(candidate, profile, backend, machine, bench, config, threads, scheme,
                                       references, store, log)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    settle(candidate, "failed", _reason(exc))
                    continue
            row = candidate.row
            if candidate.fate == "over drop" or row.get("median_ms") is None:
                settle(candidate, "over drop", candidate.why or row.get("reason") or "its drop is over the limit")
            elif row["drop_high"] > config.max_drop:
                settle(candidate, "uncertain", f"drop {row['miou_drop']:+.2f} [{row['drop_low']:+.2f}, "
                       f"{row['drop_high']:+.2f}] straddles the limit of {config.max_drop:g} on {row['eval_images']} "
                       f"images")
            elif row["median_ms"] > config.budget_ms:
                settle(candidate, "over budget", f"its median is {row['median_ms']:.1f} ms")
            else:
                if result.pick is None or row["median_ms"] < result.pick.row["median_ms"]:
                    if result.pick is not None:
                        result.pick.fate, result.pick.why = "feasible", f"slower than {candidate.label}"
                    result.pick = candidate
                    fate = "picked"
                else:
                    fate = "feasible"
                settle(candidate, fate, f"{row['median_ms']:.1f} ms, drop {row['miou_drop']:+.2f} [{row['drop_low']:+.2f}, "
                                        f"{row['drop_high']:+.2f}] on {row['eval_images']} images")
        for candidate in candidates:
            if candidate.fate == "waiting":
                candidate.fate = "not reached"
                candidate.why = result.stopped or "the search ended first"
            if candidate.fate not in ("picked", "feasible") and candidate.row is None:
                store.add(_pruned_row(candidate, profile, machine, backend_name))
    if result.pick is not None:
        result.pick.fate = "picked"
        result.pick.why = (f"the fastest within {config.budget_ms:g} ms whose drop interval's upper end is within "
                           f"{config.max_drop:g}: " + result.pick.why)
    bar.close()
    return result


def _runner_for(candidate: Candidate, profile: Profile, backend, bench: BenchConfig, threads: int, scheme: str):
    """Export (or reuse) the candidate's artifact and open its runner."""
    export = export_config_for(profile, candidate.source, candidate.precision, candidate.size, bench, threads, scheme)
    result = export_model(export)
    stage = export.stage_of(candidate.precision)
    candidate.artifact, candidate.stage, candidate.export = result.file(stage), stage, export
    candidate.manifest = result.manifest
    prepared = backend.prepare(candidate.artifact, profile, candidate.size, precision=candidate.precision)
    return backend.runner(prepared, precision=candidate.precision, threads=threads, profile=profile,
                          manifest=result.manifest)


def _quick_time(candidate: Candidate, profile: Profile, backend, bench: BenchConfig, threads: int, scheme: str) -> float:
    runner = _runner_for(candidate, profile, backend, bench, threads, scheme)
    manifest = candidate.manifest
    io = _io_of(manifest)
    image = np.zeros((1, *candidate.size, 3), np.uint8)
    batch = io.feed(image, manifest["normalization"]["mean"], manifest["normalization"]["std"])
    with machine_timing_lock(), runner:
        return measure_latency(runner, batch, warmup=1, min_runs=QUICK_RUNS, min_seconds=0.0).min_ms


def _io_of(manifest: dict):
    from segedge.data.model_io import ModelIO

    return ModelIO.from_dict(manifest.get("io"))


def resized_reference(reference: Reference, size: tuple[int, int], manifest: dict, count: int) -> Reference:
    """``reference`` (FP32 at the model's own size) for a candidate at ``size``: its first ``count`` images resized
    to ``size`` and fed as the candidate takes them; masks and reference scores stay at full resolution, so the
    candidate's scores are resized to the labels before scoring (:meth:`ModelIO.scores`)."""
    from segedge.data.transforms import resize_bilinear

    images = reference.images[:count]
    if tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([resize_bilinear(np.asarray(image, np.uint8), size) for image in images]).astype(np.uint8)
    norm = manifest["normalization"]
    inputs = _io_of(manifest).feed(images, norm["mean"], norm["std"])
    return replace(reference, inputs=inputs, masks=reference.masks[:count], logits=reference.logits[:count],
                   images=images)


def _scored(candidate: Candidate, full_export, references: dict) -> tuple[int, dict]:
    """What decides the candidate's figures besides the build (the model's fingerprints), once per model."""
    what = ("scored", candidate.source.name, candidate.full)
    if what not in references:
        references[what] = _what_is_scored(full_export, candidate.full)
    return references[what]


def _identity(candidate: Candidate, profile: Profile, threads: int, machine: Machine, count: int, scored: dict) -> str:
    return row_identity(profile, replace(candidate.export, input_size=candidate.size), candidate.precision, scored,
                        count, threads, machine) + f"-ship@{candidate.full[0]}x{candidate.full[1]}"


def _measured_before(candidate: Candidate, profile: Profile, bench: BenchConfig, threads: int, scheme: str,
                     machine: Machine, references: dict, store: ResultsStore) -> dict | None:
    """The finished row of this candidate under the same identity, if a run before measured it. Looked up before
    any pruning, so a rerun reuses what it measured whatever the noise in this run's quick times."""
    if bench.force:
        return None
    full_export = export_config_for(profile, candidate.source, "fp32", candidate.full, bench, threads, scheme)
    count, scored = _scored(candidate, full_export, references)
    return store.finished_row(_identity(candidate, profile, threads, machine, count, scored))


def _score_and_measure(candidate: Candidate, profile: Profile, backend, machine: Machine, bench: BenchConfig,
                       config: ShipConfig, threads: int, scheme: str, references: dict, store: ResultsStore,
                       log) -> None:
    """Score on 8, 32, then all images (dropping it once the interval's lower end is over the limit), then time
    it with the profile's runs; the row goes to the store. A row already measured under the same identity is reused."""
    full_export = export_config_for(profile, candidate.source, "fp32", candidate.full, bench, threads, scheme)
    reference = _reference(full_export, references, threads, log)
    count, scored = _scored(candidate, full_export, references)
    identity = _identity(candidate, profile, threads, machine, count, scored)
    key = dict(machine_id=machine.machine_id, profile=profile.name, model=candidate.source.name,
               precision=candidate.precision, height=candidate.size[0], width=candidate.size[1], batch=1)
    runner = _runner_for(candidate, profile, backend, bench, threads, scheme)
    total = len(reference.inputs)
    with runner:
        for step in [s for s in config.steps if s < total] + [total]:
            accuracy = accuracy_on_active_runner(runner, resized_reference(reference, candidate.size, candidate.manifest,
                                                                           step))
            interval = accuracy.interval
            if interval.low > config.max_drop:
                candidate.fate = "over drop"
                candidate.why = (f"drop {accuracy.report.miou_drop:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] on "
                                 f"{step} images: even its lower end is over {config.max_drop:g}")
                break
        latency = memory = None
        if candidate.fate != "over drop" or config.exhaustive:  # timed fully only when it may still be the pick
            timing = resized_reference(reference, candidate.size, candidate.manifest, 1).inputs
            runs = dict(warmup=1, min_runs=3, min_seconds=0.0) if bench.quick else dict(
                warmup=profile.warmup_runs, min_runs=profile.min_runs, min_seconds=profile.min_seconds)
            with machine_timing_lock(), PeakMemory() as memory:
                latency = measure_latency(runner, timing, **runs)
    report = accuracy.report
    timed = {} if latency is None else {
        "median_ms": latency.median_ms, "p90_ms": latency.p90_ms, "p99_ms": latency.p99_ms, "min_ms": latency.min_ms,
        "runs": latency.runs, "fps": latency.fps, "throughput": latency.fps, "peak_rss_mb": memory.peak_mb}
    row = {**key, "machine": machine.fingerprint(), "backend": backend.name, "threads": threads,
           "tolerance": config.max_drop, "quick": int(bench.quick), "data": bench.data, "identity": identity,
           "data_fingerprint": scored["data"], "model_fingerprint": scored["model"],
           **timed, "miou": report.miou, "reference_miou": report.reference_miou, "miou_drop": report.miou_drop,
           "drop_low": interval.low, "drop_high": interval.high, "argmax_agreement": report.argmax_agreement,
           "eval_images": report.images, "artifact": str(candidate.artifact),
           "artifact_sha256": stage_digest(candidate.manifest["stages"][candidate.stage]),
           "classes": json.dumps(list(candidate.manifest.get("class_names") or [])),
           "variant": f"ship: scored at {candidate.full[0]}x{candidate.full[1]} against FP32 there",
           "status": "drop" if interval.low > config.max_drop else ("ok" if interval.high <= config.max_drop else "uncertain")}
    if candidate.fate == "over drop":
        row["reason"] = candidate.why
    store.add(row)
    candidate.row = row


def _pruned_row(candidate: Candidate, profile: Profile, machine: Machine, backend: str) -> dict:
    """A dropped candidate as the store keeps it: no figure but its quick time, its fate and why."""
    return {"machine_id": machine.machine_id, "machine": machine.fingerprint(), "profile": profile.name,
            "backend": backend, "model": candidate.source.name, "precision": candidate.precision,
            "height": candidate.size[0], "width": candidate.size[1], "batch": 1, "status": "pruned",
            "reason": f"ship: {candidate.fate}: {candidate.why}", "min_ms": candidate.quick_ms}


# the hand-over ---------------------------------------------------------------------------------------------

RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt",)}


def bundle_name(candidate: Candidate, backend: str) -> str:
    return f"{candidate.source.name}-{candidate.size[0]}x{candidate.size[1]}-{candidate.precision}-{backend}"


def write_bundle(result: ShipResult, config: ShipConfig, profile: Profile, backend: str) -> Path:
    """``out/<model>-<size>-<precision>-<backend>/``: the pick's model file(s) and a manifest holding their hashes
    and the decision, the search's HTML report and the runtime's pinned requirements. Built beside, then renamed
    into place: a killed run leaves no half bundle, and an existing one is replaced only by a whole one."""
    import importlib.metadata as md

    from segedge.flows.html_report import write_html

    pick = result.pick
    if pick is None:
        raise SegedgeError(result.answer(config.budget_ms, config.max_drop))
    final = Path(config.out) / bundle_name(pick, backend)
    if final.exists() and not (final / "manifest.json").is_file():
        raise SegedgeError(f"{final} exists and is not a segedge bundle; move it away or give --out elsewhere")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        manifest = json.loads(json.dumps(pick.manifest))
        entry = manifest["stages"][pick.stage]
        for name in (entry["file"], *(entry.get("sidecars") or {})):
            shutil.copyfile(pick.artifact.parent / name, work / name)
        manifest["stages"] = {pick.stage: entry}
        manifest["ship"] = {
            "backend": backend, "profile": profile.name, "precision": pick.precision,
            "input_size": list(pick.size), "reference_size": list(pick.full),
            "budget_ms": config.budget_ms, "max_drop": config.max_drop, "why": pick.why,
            "row": {k: pick.row.get(k) for k in ("median_ms", "p90_ms", "p99_ms", "fps", "miou", "reference_miou",
                                                "miou_drop", "drop_low", "drop_high", "argmax_agreement",
                                                "eval_images", "data", "data_fingerprint", "identity")},
            "candidates": [{"model": c.source.name, "size": list(c.size), "precision": c.precision, "fate": c.fate,
                            "why": c.why, "quick_ms": c.quick_ms} for c in result.candidates],
            "source_artifact": str(pick.artifact.parent),
        }
        atomic_write_json(work / "manifest.json", manifest)
        pins = []
        for package in ("segedge", "numpy", "opencv-python-headless", "pillow", *RUNTIME_PACKAGES.get(backend, ())):
            try:
                pins.append(f"{package}=={md.version(package)}")
            except md.PackageNotFoundError:
                continue
        atomic_write_text(work / "requirements.txt", "# the runtime this bundle was measured with\n" + "\n".join(pins) + "\n")
        rows = [c.row for c in result.candidates if c.row is not None]
        rows += [{**_pruned_row(c, profile, _NoMachine(), backend), "machine": pick.row.get("machine")}
                 for c in result.candidates if c.row is None]
        write_html(rows, work / "report.html", budget_ms=config.budget_ms, max_drop=config.max_drop, overlays=[])
        if final.exists():
            old = final.parent / f".{final.name}.{os.getpid()}.old"
            os.replace(final, old)
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


class _NoMachine:
    machine_id = ""

    @staticmethod
    def fingerprint() -> dict:
        return {}
