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

from segedge.bench import PeakMemory, measure_latency, median_ms
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.errors import SegedgeError
from segedge.hardware import Machine
from segedge.pipeline import ExportConfig, export_model
from segedge.profiles import Profile
from segedge.quantize import Int8Config
from segedge.registry import get_spec
from segedge.results import STATUS_MARK, ResultsStore
from segedge.runners.onnxrt import OnnxRuntimeRunner

STAGE_OF = {"fp32": "sim", "fp16": "fp16", "int8": "int8"}


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

    providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if backend == "onnxruntime-cuda" else profile.providers
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
            if not config.force and store.has_finished(**key):
                log(f"{model} {precision} batch {batch}: already measured on this machine (resumed; --force to redo)")
                continue
            row = {**key, "machine": machine.fingerprint(), "backend": backend, "threads": threads,
                   "tolerance": profile.tolerance[precision], "eval_images": config.eval_images}
            try:
                row.update(_measure(profile, model, precision, config, threads, providers, backend, batch))
                row["status"] = "ok" if row["miou_drop"] <= profile.tolerance[precision] else "drop"
            except KeyboardInterrupt:
                raise
            except SegedgeError as exc:
                row.update(status="failed", reason=str(exc))
            except Exception as exc:  # a bug in one row must not stop the sweep; keep its reason
                row.update(status="failed", reason=f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})")
            store.add(row)
            rows.append(row)
            log(_describe(row))
    return rows


def _runner_for(profile: Profile, backend: str, artifact: Path, precision: str, result, threads: int, providers,
                input_size: tuple[int, int] = (0, 0)):
    """The runner for this backend; TensorRT engines are built (or reused) from the same ONNX artifact."""
    if backend in ("onnxruntime", "onnxruntime-cuda"):
        return OnnxRuntimeRunner(artifact, threads=threads, providers=providers)
    if backend == "tensorrt":
        from segedge.engine import EngineSettings, engine_from_onnx
        from segedge.runners.tensorrt import TensorRTRunner

        shapes = {}
        if max(profile.batch_sizes) > 1:  # a batch-dynamic ONNX: one optimization profile over the batch sizes
            h, w = input_size
            top = max(profile.batch_sizes)
            shapes = dict(min_shape=(1, 3, h, w), opt_shape=(top, 3, h, w), max_shape=(top, 3, h, w))
        settings = EngineSettings(workspace_mb=profile.tensorrt.workspace_mb, dla_core=profile.tensorrt.dla_core,
                                  builder_optimization_level=profile.tensorrt.builder_optimization_level, **shapes)
        engine = engine_from_onnx(artifact, settings, timing_cache=artifact.parent / "timing.cache")
        return TensorRTRunner(engine, cuda_graph=True)
    if backend == "torch-cuda":
        if precision == "int8":
            raise SegedgeError("torch CUDA has no INT8 path here; INT8 needs TensorRT or onnxruntime")
        from segedge.checkpoint import load_checkpoint
        from segedge.runners.torch import TorchRunner

        module = load_checkpoint(result.manifest["checkpoint"]).build()
        return TorchRunner(module, device="cuda", half=precision == "fp16", channels_last=True)
    raise SegedgeError(f"backend {backend} is not supported by segedge bench")


def export_config_for(profile: Profile, model: str, precision: str, input_size: tuple[int, int], eval_images: int,
                      artifacts: Path, checkpoint: Path | None, threads: int) -> ExportConfig:
    """The export a bench row measures; ``--remote`` builds the same one here so the device reuses it.

    Profiles with batch sizes above 1 get a batch-dynamic graph, so every batch size times one artifact.
    """
    return ExportConfig(
        dynamic_batch=max(profile.batch_sizes) > 1,
        model=get_spec(model).name,
        checkpoint=checkpoint,
        input_size=input_size,
        fp16=precision == "fp16",
        int8=precision == "int8",
        int8_config=Int8Config(activation=profile.int8_activation),
        eval_images=eval_images,
        store=artifacts,
        threads=threads,
    )


def _measure(profile: Profile, model: str, precision: str, config: BenchConfig, threads: int, providers, backend: str,
             batch_size: int = 1) -> dict:
    spec = get_spec(model)
    export = export_config_for(profile, spec.name, precision, config.input_size, config.eval_images, config.artifacts,
                               config.checkpoints.get(spec.name), threads)
    result = export_model(export)
    stage = result.manifest["stages"][STAGE_OF[precision]]
    artifact = result.file(STAGE_OF[precision])

    images, _ = SyntheticScenes("val", batch_size, size=config.input_size).batch(0, batch_size)
    image = images[:1]
    batch = to_network_input(images, spec.mean, spec.std)
    runs = dict(warmup=1, min_runs=3, min_seconds=0.0) if config.quick else dict(
        warmup=profile.warmup_runs, min_runs=profile.min_runs, min_seconds=profile.min_seconds)
    runner = _runner_for(profile, backend, artifact, precision, result, threads, providers, config.input_size)
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
