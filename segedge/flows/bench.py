"""``segedge bench``: for each model × precision of a profile, reuse or build the artifacts, then measure.

Latency after warm-up (median, p90, p99, min; FPS at batch 1), pre- and post-processing apart from
inference, peak memory, and accuracy *on the runner that was timed*: the evaluation images go through that
very runner (engine, provider, precision, batch) and its mIoU, its drop against the FP32 reference with a 95 %
paired bootstrap interval, and its argmax agreement with the reference are stored. The export-time parity
check (ONNX Runtime on the CPU) is stored apart, as ``parity_*``. Each row gets a status: ✅ the whole interval
within the profile's tolerance, ❎ the whole interval beyond it, ❔ uncertain (it straddles: more images decide),
❌ failed (with the reason). One failing row never stops the sweep; every row is committed as it finishes.

Models come as ``export`` takes them: zoo names, ``package.module:function`` with a state dict, or an ONNX file
made elsewhere; data is the built-in scenes or the user's labelled set (``--data KIND:ROOT``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from segedge.backends.isolate import probe
from segedge.backends.profiles import Profile
from segedge.backends.registry import get_backend
from segedge.core.artifacts import machine_timing_lock, stage_digest
from segedge.core.errors import ArtifactError, SegedgeError, brief
from segedge.core.hardware import Machine
from segedge.core.results import STATUS_MARK, ResultsStore
from segedge.data.transforms import class_map
from segedge.data.fingerprint import data_fingerprint
from segedge.flows.export import (ExportConfig, data_name, eval_count_for, evaluation_sets, export_model, exported_artifact,
                                  reference_for, resolve_source)
from segedge.flows.sources import is_zoo_name
from segedge.graph.int8 import Int8Config
from segedge.models.registry import get_spec
from segedge.verify.compare import (ImageStats, Reference, RunnerAccuracy, accuracy_on_active_runner, image_stats,
                                    require_same_classes)
from segedge.verify.timing import PeakMemory, measure_latency, median_ms


@dataclass(frozen=True)
class BenchSource:
    """One model of a sweep: its row name and what defines it (as ``segedge export`` takes it)."""

    name: str
    model: str = ""  # a zoo name or package.module:function
    onnx: Path | None = None
    checkpoint: Path | None = None
    artifact: Path | None = None  # a directory `segedge export` wrote, run as it is (no torch, nothing rebuilt)

    @property
    def zoo(self) -> bool:
        return self.onnx is None and self.artifact is None and is_zoo_name(self.model)

    @property
    def fixed_size(self) -> bool:
        """Its own input size rules (an outside ONNX's, an artifact's, a ``torch.export`` program's, a Hugging Face
        image processor's), not the profile's."""
        return (self.onnx is not None or self.artifact is not None or self.model.endswith(".pt2")
                or self.model.startswith("hf:"))  # a Hugging Face processor's size


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]  # zoo names (each with its --checkpoint MODEL=PATH, if given)
    precisions: tuple[str, ...]
    input_size: tuple[int, int] | None  # None: each model's own (an ONNX's fixed size), else the profile's
    store: Path
    artifacts: Path
    eval_images: int | None = None  # None: 8 synthetic images, or the whole evaluation split of real data
    quick: bool = False
    force: bool = False
    checkpoints: dict[str, Path] = field(default_factory=dict)  # model → checkpoint; default: cached trained weights
    sources: tuple[BenchSource, ...] = ()  # models beyond the zoo names: --onnx, --model package.module:function
    data: str = "synthetic"
    calib_data: str | None = None
    calib_images: int | None = None
    quantize_classifier: bool = False  # INT8 rows: quantize the classifier too (default: it stays float)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    layout: str | None = None
    output: str | None = None
    threshold: float = 0.5
    output_key: str | None = None
    # set by the workstation of a --remote bench: the data fingerprint it scored at each input size (the device
    # refuses, before measuring, data that is not the same), and how its rows name the data
    expect_data: dict[tuple[int, int], str] | None = None
    data_label: str | None = None

    def all_sources(self) -> tuple[BenchSource, ...]:
        zoo = tuple(BenchSource(get_spec(m).name, model=get_spec(m).name, checkpoint=self.checkpoints.get(get_spec(m).name))
                    for m in self.models)
        return zoo + self.sources


def run_sweep(
    profile: Profile,
    backend: str,
    machine: Machine,
    config: BenchConfig,
    log: Callable[[str], None] = lambda _: None,
    progress: bool = False,
) -> list[dict]:
    from tqdm import tqdm

    scheme = profile.int8_scheme_on(backend, machine)
    threads = profile.threads or os.cpu_count() or 1
    sources = config.all_sources()
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise SegedgeError(f"two models are named {max(names, key=names.count)!r}: name each --onnx NAME=PATH")
    size = config.input_size
    for source in sources:
        if source.zoo:
            get_spec(source.model).check_input_size(*(size or profile.input_size))  # refuse bad input before any work
    batches = tuple(sorted(set(profile.batch_sizes) | {1}))
    jobs = [(s, p, b) for s in sources for p in config.precisions for b in batches]
    references: dict[str, Reference] = {}
    sizes: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    seen: dict[str, dict] = {}  # per model: what its rows are scored on (model file, data, preprocessing)
    refused: dict[str, str] = {}  # per model: why none of its rows can be measured (its classes, its file)
    rows = []
    with ResultsStore(config.store) as store:
        bar = tqdm(jobs, desc=f"bench {profile.name}", unit="row", disable=not progress)
        for source, precision, batch in bar:
            bar.set_postfix_str(f"{source.name} {precision}")
            export = export_config_for(profile, source, precision, size, config, threads, scheme)
            if source.name not in sizes:  # an outside ONNX is read (and probed) once per sweep, not per row
                try:
                    sizes[source.name] = tuple(export.input_size or _size_of(source, export, profile))
                    counts[source.name], seen[source.name] = _what_is_scored(export, sizes[source.name])
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # this model's rows fail with the reason; the sweep goes on
                    sizes[source.name] = tuple(export.input_size or profile.input_size)
                    refused[source.name] = _reason(exc)
                if source.name not in refused and config.expect_data is not None:
                    require_expected_data(config, sizes[source.name], seen[source.name]["data"])
            height, width = sizes[source.name]
            key = dict(machine_id=machine.machine_id, profile=profile.name, model=source.name,
                       precision=precision, height=height, width=width, batch=batch)
            if source.name in refused:  # never resumed, never scored: a failed row that says why
                row = {**key, "machine": machine.fingerprint(), "backend": backend, "threads": threads,
                       "quick": int(config.quick), "data": config.data_label or config.data, "status": "failed",
                       "reason": refused[source.name]}
                _save(store, row, rows, config, log)
                continue
            identity = row_identity(profile, export, precision, seen[source.name], counts[source.name], threads,
                                    machine)
            how = dict(quick=config.quick, eval_images=counts[source.name], identity=identity)
            if not config.force and store.has_finished(**key, **how):
                log(f"{source.name} {precision} batch {batch}: already measured on this machine, same model file, data, "
                    f"preprocessing and profile (resumed; --force to redo)")
                continue
            row = {**key, "machine": machine.fingerprint(), "backend": backend, "threads": threads,
                   "tolerance": profile.tolerance[precision], "eval_images": config.eval_images,
                   "quick": int(config.quick), "data": config.data_label or config.data, "identity": identity,
                   "data_fingerprint": seen[source.name]["data"], "model_fingerprint": seen[source.name]["model"]}
            with machine_timing_lock(log):
                if not config.force and store.has_finished(**key, **how):  # measured while we waited
                    log(f"{source.name} {precision} batch {batch}: measured meanwhile by another segedge process")
                    continue
                try:
                    row.update(_measure(profile, export, precision, config, threads, backend, batch, references, machine, log))
                    row["status"] = _status(row, profile.tolerance[precision])
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # a bug in one row must not stop the sweep; keep its reason and where
                    row.update(status="failed", reason=_reason(exc))
            _save(store, row, rows, config, log)
    return rows


def require_expected_data(config: BenchConfig, size: tuple[int, int], fingerprint: str) -> None:
    """Refuse, before any row, evaluation data that is not what the workstation scored (another copy, a changed
    file, another split or class list): its figures would be filed under the workstation's data."""
    expected = config.expect_data.get(tuple(size))
    if expected != fingerprint:
        said = f"fingerprint {expected}" if expected else "no fingerprint at that size"
        raise SegedgeError(f"the evaluation data here ({config.data}, read at {size[0]}x{size[1]}) is not the data the "
                           f"workstation scored ({config.data_label or 'its own'}: {said}; here {fingerprint}): nothing "
                           f"was measured; send the data again or give --device-data a copy of the same files")


def _reason(exc: Exception) -> str:
    """A failed row's reason: a user mistake's own words, or a bug's type, message and where it happened."""
    if isinstance(exc, SegedgeError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {brief(exc)} (at {Path(frame.filename).name}:{frame.lineno})"


def _save(store: ResultsStore, row: dict, rows: list, config: BenchConfig, log) -> None:
    """Commit the row now; a full disk must not lose the figure nor stop the sweep."""
    try:
        store.add(row)
    except (OSError, ArtifactError) as exc:
        row["unsaved"] = f"not saved in {config.store}: {exc}"
        log(f"❌ {row['model']} {row['precision']}: the row below could not be saved in {config.store} ({exc}); "
            f"the sweep goes on")
    rows.append(row)
    log(_describe(row))


def _size_of(source: BenchSource, export: ExportConfig, profile: Profile) -> tuple[int, int]:
    """An outside ONNX with a fixed input size runs at that size; anything else at the profile's."""
    if source.fixed_size:
        return tuple(resolve_source(export).spec.default_input_size)
    return tuple(profile.input_size)


def _status(row: dict, tolerance: float) -> str:
    low, high = row.get("drop_low"), row.get("drop_high")
    if low is None or high is None:
        return "ok" if row["miou_drop"] <= tolerance else "drop"
    return "ok" if high <= tolerance else ("drop" if low > tolerance else "uncertain")


def export_config_for(profile: Profile, source: BenchSource, precision: str, input_size: tuple[int, int] | None,
                      config: BenchConfig, threads: int, int8_scheme: str) -> ExportConfig:
    """The export a bench row measures; ``--remote`` builds the same one here so the device reuses it.

    Profiles with batch sizes above 1 get a batch-dynamic graph, so every batch size times one artifact.
    """
    if input_size is not None or source.fixed_size:
        size = input_size
    else:  # a zoo checkpoint's training size, else the profile's
        size = (trained_size(source.checkpoint) if source.zoo and source.checkpoint else None) or tuple(profile.input_size)
    own = not source.zoo
    icfg = Int8Config(scheme=int8_scheme, quantize_classifier=config.quantize_classifier,
                      **({"calib_images": config.calib_images} if config.calib_images else {}))
    return ExportConfig(
        dynamic_batch=max(profile.batch_sizes) > 1,
        model=source.model,
        onnx=source.onnx,
        artifact=source.artifact,
        checkpoint=source.checkpoint,
        input_size=size,
        precisions=(precision,),
        int8_config=icfg,
        eval_images=config.eval_images,
        store=config.artifacts,
        threads=threads,
        data=config.data,
        calib_data=config.calib_data,
        mean=config.mean if own else None,
        std=config.std if own else None,
        num_classes=config.num_classes if own else None,
        class_names=config.class_names if own else None,
        layout=config.layout,
        output=config.output,
        threshold=config.threshold,
        output_key=config.output_key if own else None,
    )


def trained_size(checkpoint: Path) -> tuple[int, int] | None:
    """The size a zoo checkpoint records it was trained at: its rows run there unless --input-size says otherwise
    (a scale the network never saw can cost most of its accuracy), else the profile's."""
    try:
        stamp = Path(checkpoint).stat().st_mtime_ns
    except OSError:
        return None  # the row itself refuses the file, by name
    return _trained_size(str(checkpoint), stamp)


@functools.lru_cache(maxsize=32)
def _trained_size(checkpoint: str, stamp: int) -> tuple[int, int] | None:
    from segedge.core.errors import CheckpointError
    from segedge.models.checkpoint import load_checkpoint

    try:
        trained = (load_checkpoint(checkpoint).train_info.get("config") or {}).get("scene_size")
    except CheckpointError:
        return None
    return tuple(trained) if trained else None


def _what_is_scored(export: ExportConfig, size: tuple[int, int]) -> tuple[int, dict]:
    """(how many evaluation images a row of ``export`` scores, what decides its figures besides the profile: the
    model's file or weights and code, the evaluation files, the preprocessing). A model whose classes are not the
    data's is refused here, before any row is resumed or measured."""
    source = resolve_source(export)
    eval_set, _, _ = evaluation_sets(export.data, size, export.seed, calib_data=export.calib_data)
    require_same_classes(source.name, source.num_classes, data_name(eval_set), eval_set.num_classes)
    count = eval_count_for(export, eval_set)
    model = {"weights": source.weights_id, "code": source.code_id}
    if export.artifact is not None:  # every stage file as its manifest records it (a re-export changes them)
        manifest = exported_artifact(replace(export, precisions=())).manifest
        model["stages"] = {name: stage_digest(entry) for name, entry in sorted(manifest["stages"].items())}
    fingerprint = {
        "model": hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16],
        "data": data_fingerprint(eval_set, count),
        "preprocessing": {"mean": list(source.spec.mean), "std": list(source.spec.std), "io": source.io.as_dict()},
    }
    return count, fingerprint


def row_identity(profile: Profile, export: ExportConfig, precision: str, scored: dict, count: int, threads: int,
                 machine: Machine) -> str:
    """Everything that decides a row's figures, as one hash: a finished row is resumed only under the same one.
    The model file (or weights and code), the evaluation data's bytes, the preprocessing, how the artifact is
    built, the profile's content (not its name: a custom TOML may say ``name = "cpu"``) and the machine."""
    build = {"precision": precision, "dynamic_batch": export.dynamic_batch, "size": list(export.input_size or ()),
             "output_key": export.output_key}
    if precision == "int8":
        build.update(int8=export.int8_config.as_dict(), calib_data=export.calib_data)
    profile_content = {k: v for k, v in asdict(profile).items() if k not in ("path", "description")}
    identity = {"model": scored["model"], "data": scored["data"], "images": count,
                "preprocessing": scored["preprocessing"], "build": build, "threads": threads,
                "profile": profile_content, "machine": machine.machine_id}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _reference(export: ExportConfig, references: dict, threads: int, log) -> Reference:
    """The FP32 reference's scores on the evaluation images, computed once per model in a sweep."""
    key = (export.model, str(export.onnx), str(export.checkpoint), export.input_size, export.data, export.eval_images)
    if key not in references:
        source = resolve_source(export, log)
        size = tuple(export.input_size or source.spec.default_input_size)
        eval_set, _, _ = evaluation_sets(export.data, size, export.seed, calib_data=export.calib_data)
        references[key] = reference_for(source, eval_set, eval_count_for(export, eval_set), threads)
    return references[key]


def _measure(profile: Profile, export: ExportConfig, precision: str, config: BenchConfig, threads: int,
             backend_name: str, batch_size: int, references: dict, machine: Machine | None = None,
             warn: Callable[[str], None] = lambda _: None) -> dict:
    """One row. A backend that runs more than one INT8 placement well (OpenVINO: NNCF's and segedge's own)
    gets each measured, and the row keeps the fastest within the tolerance, saying which and what the others gave."""
    backend = get_backend(backend_name)
    refusal = backend.refuses(precision, profile, machine)
    if refusal:
        raise SegedgeError(refusal)
    row = _race(profile, export, precision, config, threads, backend, batch_size, references, machine, warn)
    reference = _reference(export, references, threads, lambda line: None)
    if batch_size == 1 and reference.images is not None:  # once, for the row kept (not for each raced graph)
        row.update(_end_to_end(Path(row["artifact"]), backend, precision, threads, profile, reference,
                               row["median_ms"], frames=3 if config.quick else 10))
    return row


def _race(profile: Profile, export: ExportConfig, precision: str, config: BenchConfig, threads: int, backend,
          batch_size: int, references: dict, machine: Machine | None, warn: Callable[[str], None]) -> dict:
    """The row of the one graph the backend runs, or of the best of the INT8 graphs it races."""
    schemes = backend.int8_candidates(machine) if precision == "int8" and not profile.int8_scheme else ()
    if len(schemes) < 2:
        row = _measure_one(profile, export, precision, config, threads, backend, batch_size, references, warn)
        if precision == "int8":
            row["variant"] = "; ".join(filter(None, (row["variant"], f"INT8 graph: {row.pop('int8_graph')}")))
        return row
    tolerance = profile.tolerance[precision]
    measured, errors = [], []
    for scheme in schemes:
        candidate = replace(export, int8_config=replace(export.int8_config, scheme=scheme, activation=None))
        try:
            measured.append(_measure_one(profile, candidate, precision, config, threads, backend, batch_size,
                                         references, warn))
        except SegedgeError as exc:
            errors.append(f"{_int8_graph(candidate)} failed: {exc}")
    if not measured:
        raise SegedgeError("; ".join(errors))
    within = [m for m in measured if _status(m, tolerance) == "ok"]
    worst_case = lambda m: m["drop_high"] if m.get("drop_high") is not None else m["miou_drop"]  # noqa: E731
    if within:  # the fastest; candidates within TIE of it are a tie that the smaller drop (upper end) breaks
        fastest = min(m["median_ms"] for m in within)
        best = min((m for m in within if m["median_ms"] <= fastest * (1 + TIE)), key=lambda m: (worst_case(m), m["median_ms"]))
    else:
        best = min(measured, key=worst_case)
    tried = [f"{m['int8_graph']} {m['median_ms']:.1f} ms, drop {m['miou_drop']:+.2f}" for m in measured] + errors
    why = ("fastest within the tolerance (within 3 %: the smaller drop)" if within
           else "none within the tolerance: the smallest drop")
    chosen = f"INT8 graph: {best.pop('int8_graph')} ({why}; tried {'; '.join(tried)})"
    best["variant"] = "; ".join(filter(None, (best["variant"], chosen)))
    return best


TIE = 0.03  # latencies within 3 % are one speed on a shared machine: the INT8 race then keeps the more accurate graph


def _int8_graph(export: ExportConfig) -> str:
    scheme = export.int8_config.scheme
    return "NNCF" if scheme.quantizer == "nncf" else f"segedge {scheme.name}"


def _measure_one(profile: Profile, export: ExportConfig, precision: str, config: BenchConfig, threads: int,
                 backend, batch_size: int, references: dict, warn: Callable[[str], None],
                 reference: Reference | None = None, accuracy: bool = True) -> dict:
    """One graph's row. ``reference`` given (the first image only) and ``accuracy`` off: the timing half of a
    split evaluation, whose accuracy comes from the devices that scored the images."""
    name = export.model or (export.onnx.stem if export.onnx else "?")
    result = export_model(export, log=lambda line: warn(f"{name} {precision}: {line}")
                          if "warning:" in line or "grey" in line or "holdout" in line else None)
    stage_name = export.stage_of(precision)
    stage = result.manifest["stages"][stage_name]
    artifact = result.file(stage_name)
    reference = reference or _reference(export, references, threads, lambda line: None)
    io = reference.io
    count = len(reference.inputs)
    timing_batch = reference.inputs[np.arange(batch_size) % count]
    mean, std = result.manifest["normalization"]["mean"], result.manifest["normalization"]["std"]
    runs = dict(warmup=1, min_runs=3, min_seconds=0.0) if config.quick else dict(
        warmup=profile.warmup_runs, min_runs=profile.min_runs, min_seconds=profile.min_seconds)
    input_size = tuple(result.manifest["config"]["input_size"])
    if backend.isolate:  # a native crash here would end the sweep: let a child process meet it first
        probe(backend.name, artifact, profile, input_size, precision, threads, result.manifest)
    prepared = backend.prepare(artifact, profile, input_size, precision=precision)
    runner = backend.runner(prepared, precision=precision, threads=threads, profile=profile, manifest=result.manifest)
    with runner:
        with PeakMemory() as memory:
            latency = measure_latency(runner, timing_batch, **runs)
        scored = accuracy_on_active_runner(runner, reference, batch=batch_size) if accuracy else None
        output = runner.infer(timing_batch)
    image = reference.images[:1]
    pre = median_ms(lambda: io.feed(image, mean, std))
    post = median_ms(lambda: class_map(io.scores(output[:1], reference.size)))  # per image, as pre is
    parity = stage["parity"]
    return {
        "median_ms": latency.median_ms, "p90_ms": latency.p90_ms, "p99_ms": latency.p99_ms, "min_ms": latency.min_ms,
        "runs": latency.runs, "fps": batch_size * latency.fps, "throughput": batch_size * latency.fps, "pre_ms": pre,
        "post_ms": post, "peak_rss_mb": memory.peak_mb, **(accuracy_fields(scored) if scored else {}),
        "parity_miou": parity["miou"], "parity_drop": parity["miou_drop_points"],
        "parity_agreement": parity["argmax_agreement"],
        "artifact": str(artifact), "artifact_sha256": stage_digest(stage),
        "classes": json.dumps(list(result.manifest.get("class_names") or [])),
        "variant": backend.variant(precision, profile) or None,
        **({"int8_graph": _int8_graph(export)} if precision == "int8" else {}),
    }


def accuracy_fields(accuracy: RunnerAccuracy) -> dict:
    """A row's accuracy columns, from one pass or from the joined parts of a split evaluation alike."""
    report, interval = accuracy.report, accuracy.interval
    return {"miou": report.miou, "reference_miou": report.reference_miou, "miou_drop": report.miou_drop,
            "drop_low": interval.low, "drop_high": interval.high, "argmax_agreement": report.argmax_agreement,
            "eval_images": report.images}


# split evaluation: one device times a row, the profile's devices score slices of the evaluation split -------------

def split_part(profile: Profile, backend_name: str, machine: Machine, config: BenchConfig, precision: str,
               images: tuple[int, int] | None, finished: frozenset = frozenset()) -> dict:
    """One part of a split evaluation of ``config``'s one model, on this device, at batch 1.

    ``images`` None: the row's timing (latency, memory, pre/post, end to end) without its accuracy, or
    ``{"resumed": identity}`` when ``finished`` holds the row's identity. ``images`` (start, stop): the per-image
    stats of those evaluation images on the same artifact and runner (:class:`ImageStats`). Every part says what
    it scored (model file, data fingerprint, artifact hash, image count), so the parts are joined only when they
    agree."""
    (source,) = config.all_sources()
    threads = profile.threads or os.cpu_count() or 1
    export = export_config_for(profile, source, precision, config.input_size, config, threads,
                               profile.int8_scheme_on(backend_name, machine))
    size = tuple(export.input_size or _size_of(source, export, profile))
    count, seen = _what_is_scored(export, size)
    if config.expect_data is not None:
        require_expected_data(config, size, seen["data"])
    identity = row_identity(profile, export, precision, seen, count, threads, machine)
    scored = {"identity": identity, "data_fingerprint": seen["data"], "model_fingerprint": seen["model"],
              "count": count}
    key = dict(machine_id=machine.machine_id, profile=profile.name, model=source.name, precision=precision,
               height=size[0], width=size[1], batch=1)
    if images is None and not config.force and identity in finished:
        return {"resumed": identity, **scored}
    backend = get_backend(backend_name)
    refusal = backend.refuses(precision, profile, machine)
    source_model = resolve_source(export)
    eval_set, _, _ = evaluation_sets(export.data, size, export.seed, calib_data=export.calib_data)
    if images is not None:
        start, stop = images
        if not 0 <= start < stop <= count:
            raise SegedgeError(f"images {start}..{stop} are not within the {count} evaluation images")
        if refusal:
            raise SegedgeError(refusal)
        result = export_model(export)
        stage = result.manifest["stages"][export.stage_of(precision)]
        artifact = result.file(export.stage_of(precision))
        reference = reference_for(source_model, eval_set, stop, threads, first=start)
        if backend.isolate:
            probe(backend.name, artifact, profile, size, precision, threads, result.manifest)
        runner = backend.runner(backend.prepare(artifact, profile, size, precision=precision), precision=precision,
                                threads=threads, profile=profile, manifest=result.manifest)
        with runner:
            stats = image_stats(runner, reference, batch=1)
        return {"stats": stats, "images": [start, stop], "artifact_sha256": stage_digest(stage), **scored}
    row = {**key, "machine": machine.fingerprint(), "backend": backend_name, "threads": threads,
           "tolerance": profile.tolerance[precision], "eval_images": config.eval_images, "quick": int(config.quick),
           "data": config.data_label or config.data, "identity": identity, "data_fingerprint": seen["data"],
           "model_fingerprint": seen["model"]}
    try:
        if refusal:
            raise SegedgeError(refusal)
        first = reference_for(source_model, eval_set, 1, threads)  # timing needs one image, not the split
        with machine_timing_lock():
            row.update(_measure_one(profile, export, precision, config, threads, backend, 1, {}, lambda _: None,
                                    reference=first, accuracy=False))
            if first.images is not None:
                row.update(_end_to_end(Path(row["artifact"]), backend, precision, threads, profile, first,
                                       row["median_ms"], frames=3 if config.quick else 10))
        if precision == "int8":
            row["variant"] = "; ".join(filter(None, (row["variant"], f"INT8 graph: {row.pop('int8_graph')}")))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row.update(status="failed", reason=_reason(exc))
    return {"row": row, **scored}


def joined_split_row(timing: dict, parts: list[dict], where: list[str]) -> dict:
    """The row of a split evaluation: the timing part's figures, the accuracy of every image's stats joined in
    order. Refused unless every part scored the same model file, artifact, data and images as the row."""
    row = dict(timing["row"])
    parts, where = zip(*sorted(zip(parts, where), key=lambda pair: pair[0]["images"][0]))
    covered = [i for part in parts for i in range(*part["images"])]
    if covered != list(range(timing["count"])):
        raise SegedgeError(f"the split evaluation of {row['model']} {row['precision']} scored images {covered}, not "
                           f"each of the {timing['count']} once")
    for part, host in zip(parts, where):
        for field_name in ("data_fingerprint", "model_fingerprint", "count"):
            if part[field_name] != timing[field_name]:
                raise SegedgeError(f"{host} scored {row['model']} {row['precision']} on another {field_name.split('_')[0]} "
                                   f"({part[field_name]}) than the row's ({timing[field_name]}): nothing was joined")
        if part["artifact_sha256"] != row["artifact_sha256"]:
            raise SegedgeError(f"{host} ran another {row['precision']} artifact of {row['model']} than the one timed "
                               f"(sha256 {part['artifact_sha256'][:12]} against {row['artifact_sha256'][:12]}): nothing "
                               f"was joined")
    row.update(accuracy_fields(ImageStats.joined([part["stats"] for part in parts]).accuracy()))
    row["status"] = _status(row, row["tolerance"])
    hosts = sorted(set(where))
    said = f"accuracy: {timing['count']} images split over {len(parts)} parts on {', '.join(hosts)}"
    row["variant"] = "; ".join(filter(None, (row.get("variant"), said)))
    return row


def _end_to_end(artifact: Path, backend, precision: str, threads: int, profile: Profile, reference: Reference,
                infer_ms: float, frames: int) -> dict:
    """What the application pays per camera frame with the runner it ships: :class:`segedge.Predictor` on a
    frame at the profile's camera size (resize and normalise, then the mask back at the frame's size), its
    pre- and post-processing medians added to the row's median inference."""
    from segedge.data.transforms import resize_bilinear
    from segedge.flows.predict import Predictor

    camera = tuple(profile.camera_size) or tuple(reference.size)
    frame = np.ascontiguousarray(resize_bilinear(np.asarray(reference.images[0], dtype=np.uint8), camera))
    pre, post = [], []
    with Predictor(artifact, backend=backend.name, precision=precision, threads=threads, profile=profile) as predictor:
        for _ in range(frames + 1):  # the first frame warms the resizers up
            before = replace(predictor.timings)
            predictor(frame)
            pre.append(predictor.timings.pre_ms - before.pre_ms)
            post.append(predictor.timings.post_ms - before.post_ms)
    pre_ms, post_ms = float(np.median(pre[1:])), float(np.median(post[1:]))
    total = pre_ms + infer_ms + post_ms
    return {"camera": f"{camera[0]}x{camera[1]}", "e2e_pre_ms": pre_ms, "e2e_post_ms": post_ms, "e2e_ms": total,
            "e2e_fps": 1000.0 / total}


def _describe(row: dict) -> str:
    mark = STATUS_MARK.get(row["status"], "?")
    if row["status"] == "failed":
        return f"{mark} {row['model']} {row['precision']}: {row['reason']}"
    interval = (f" [{row['drop_low']:+.2f}, {row['drop_high']:+.2f}]" if row.get("drop_low") is not None else "")
    return (f"{mark} {row['model']} {row['precision']}: {row['median_ms']:.1f} ms median ({row['fps']:.1f} FPS), "
            f"mIoU {100 * row['miou']:.2f} (drop {row['miou_drop']:+.2f}{interval} points on {row['eval_images']} "
            f"images, tolerance {row['tolerance']})")
