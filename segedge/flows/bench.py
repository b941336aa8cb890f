"""``segedge bench``: for each model × precision of a profile, reuse or build the artifacts, then measure.

Latency after warm-up (median, p90, p99, min; FPS at batch 1), pre- and post-processing apart from
inference, peak memory, and the mIoU drop against torch FP32 on held-out images from the artifact's
parity check. Each row gets a status: ✅ within the profile's tolerance, ❎ ran but dropped beyond it,
❌ failed (with the reason). One failing row never stops the sweep; every row is committed as it finishes.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from segedge.verify.timing import PeakMemory, measure_latency, median_ms
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.backends.profiles import Profile
from segedge.backends.registry import get_backend
from segedge.core.artifacts import machine_timing_lock
from segedge.core.errors import ArtifactError, SegedgeError, brief
from segedge.core.hardware import Machine
from segedge.core.precision import get_precision
from segedge.core.results import STATUS_MARK, ResultsStore
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import Int8Config
from segedge.models.registry import get_spec


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    precisions: tuple[str, ...]
    input_size: tuple[int, int]
    store: Path
    artifacts: Path
    eval_images: int = 8
    quick: bool = False
    force: bool = False
    checkpoints: dict[str, Path] = field(default_factory=dict)  # model → checkpoint; default: cached trained weights


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
    for name in config.models:
        get_spec(name).check_input_size(*config.input_size)  # refuse bad input before any work
    batches = tuple(sorted(set(profile.batch_sizes) | {1}))
    jobs = [(m, p, b) for m in config.models for p in config.precisions for b in batches]
    rows = []
    with ResultsStore(config.store) as store:
        bar = tqdm(jobs, desc=f"bench {profile.name}", unit="row", disable=not progress)
        for model, precision, batch in bar:
            bar.set_postfix_str(f"{model} {precision}")
            key = dict(machine_id=machine.machine_id, profile=profile.name, model=get_spec(model).name,
                       precision=precision, height=config.input_size[0], width=config.input_size[1], batch=batch)
            how = dict(quick=config.quick, eval_images=config.eval_images)
            if not config.force and store.has_finished(**key, **how):
                log(f"{model} {precision} batch {batch}: already measured on this machine (resumed; --force to redo)")
                continue
            row = {**key, "machine": machine.fingerprint(), "backend": backend, "threads": threads,
                   "tolerance": profile.tolerance[precision], "eval_images": config.eval_images,
                   "quick": int(config.quick)}
            with machine_timing_lock(log):
                if not config.force and store.has_finished(**key, **how):  # measured while we waited
                    log(f"{model} {precision} batch {batch}: measured meanwhile by another segedge process")
                    continue
                try:
                    row.update(_measure(profile, model, precision, config, threads, backend, scheme, batch, log))
                    row["status"] = "ok" if row["miou_drop"] <= profile.tolerance[precision] else "drop"
                except KeyboardInterrupt:
                    raise
                except SegedgeError as exc:
                    row.update(status="failed", reason=str(exc))
                except Exception as exc:  # a bug in one row must not stop the sweep; keep its reason and where
                    frame = traceback.extract_tb(exc.__traceback__)[-1]
                    row.update(status="failed", reason=f"{type(exc).__name__}: {brief(exc)} "
                                                       f"(at {Path(frame.filename).name}:{frame.lineno})")
            try:
                store.add(row)
            except (OSError, ArtifactError) as exc:  # a full disk must not lose the figure nor stop the sweep
                row["unsaved"] = f"not saved in {config.store}: {exc}"
                log(f"❌ {model} {precision}: the row below could not be saved in {config.store} ({exc}); the sweep goes on")
            rows.append(row)
            log(_describe(row))
    return rows


def export_config_for(profile: Profile, model: str, precision: str, input_size: tuple[int, int], eval_images: int,
                      artifacts: Path, checkpoint: Path | None, threads: int, int8_scheme: str) -> ExportConfig:
    """The export a bench row measures; ``--remote`` builds the same one here so the device reuses it.

    Profiles with batch sizes above 1 get a batch-dynamic graph, so every batch size times one artifact.
    """
    return ExportConfig(
        dynamic_batch=max(profile.batch_sizes) > 1,
        model=get_spec(model).name,
        checkpoint=checkpoint,
        input_size=input_size,
        precisions=(precision,),
        int8_config=Int8Config(scheme=int8_scheme),
        eval_images=eval_images,
        store=artifacts,
        threads=threads,
    )


def _measure(profile: Profile, model: str, precision: str, config: BenchConfig, threads: int, backend_name: str,
             int8_scheme: str, batch_size: int = 1, warn: Callable[[str], None] = lambda _: None) -> dict:
    spec = get_spec(model)
    backend = get_backend(backend_name)
    if precision not in backend.precisions:
        raise SegedgeError(f"{backend.name} does not run {precision} (it runs {', '.join(backend.precisions)})")
    export = export_config_for(profile, spec.name, precision, config.input_size, config.eval_images, config.artifacts,
                               config.checkpoints.get(spec.name), threads, int8_scheme)
    result = export_model(export, log=lambda line: warn(f"{spec.name} {precision}: {line}") if "warning:" in line else None)
    stage_name = get_precision(precision).stage
    stage = result.manifest["stages"][stage_name]
    artifact = result.file(stage_name)

    images, _ = SyntheticScenes("val", batch_size, size=config.input_size).batch(0, batch_size)
    image = images[:1]
    batch = to_network_input(images, spec.mean, spec.std)
    runs = dict(warmup=1, min_runs=3, min_seconds=0.0) if config.quick else dict(
        warmup=profile.warmup_runs, min_runs=profile.min_runs, min_seconds=profile.min_seconds)
    prepared = backend.prepare(artifact, profile, config.input_size)
    runner = backend.runner(prepared, precision=precision, threads=threads, profile=profile, manifest=result.manifest)
    with runner:
        with PeakMemory() as memory:
            latency = measure_latency(runner, batch, **runs)
        logits = runner.infer(batch)
    pre = median_ms(lambda: to_network_input(image, spec.mean, spec.std))
    post = median_ms(lambda: np.argmax(logits[:1], axis=1).astype(np.uint8))  # per image, as pre is
    parity = stage["parity"]
    return {
        "median_ms": latency.median_ms, "p90_ms": latency.p90_ms, "p99_ms": latency.p99_ms, "min_ms": latency.min_ms,
        "runs": latency.runs, "fps": batch_size * latency.fps, "throughput": batch_size * latency.fps, "pre_ms": pre, "post_ms": post,
        "peak_rss_mb": memory.peak_mb, "miou": parity["miou"], "reference_miou": parity["reference_miou"],
        "miou_drop": parity["miou_drop_points"], "argmax_agreement": parity["argmax_agreement"],
        "artifact": str(artifact), "artifact_sha256": stage["sha256"],
    }


def _describe(row: dict) -> str:
    mark = STATUS_MARK[row["status"]]
    if row["status"] == "failed":
        return f"{mark} {row['model']} {row['precision']}: {row['reason']}"
    return (f"{mark} {row['model']} {row['precision']}: {row['median_ms']:.1f} ms median ({row['fps']:.1f} FPS), "
            f"mIoU {100 * row['miou']:.2f} (drop {row['miou_drop']:+.2f} points, tolerance {row['tolerance']})")
