"""The export chain, stage by stage: torch → ONNX → simplified → FP16 / INT8, each parity-gated.

Every stage writes a *candidate* file, runs it against the torch FP32 reference on held-out synthetic
images, and only then renames it to its final name and records it in ``manifest.json``. A stage whose
inputs hash the same as a recorded one is reused, not recomputed. A failing stage leaves no file behind
and never replaces a good artifact from an earlier run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from segedge.core.artifacts import (DEFAULT_STORE, ArtifactDir, sha256_file, sidecar_names, tool_versions,
                                    verified_stage_file)
from segedge.models.checkpoint import Checkpoint, load_checkpoint
from segedge.core.precision import PRECISIONS, STAGES, ParityGate, parse_precisions, stage_for
from segedge.verify.compare import (Reference, compare_to_reference, enforce_gate, reference_from_runner,
                                    require_same_classes)
from segedge.data.fingerprint import data_fingerprint
from segedge.data.synthetic import CLASS_NAMES, SyntheticScenes
from segedge.data.model_io import ModelIO
from segedge.core.errors import ArtifactError, CalibrationError, InputSizeError, SegedgeError, brief
from segedge.graph.export import EXPORT_OPSET, onnx_from_torch
from segedge.graph.fp16 import fp16_from_onnx
from segedge.graph.int8 import (DefaultCount, Int8Config, calibrated_graph, calibration_indices, probe_op_set,
                                saturation_note)
from segedge.models.registry import get_spec
from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.graph.simplify import simplified_onnx
from segedge.flows.sources import (Source, SourceOptions, code_fingerprint, copy_checked_onnx, is_library_model, is_zoo_name,
                                   module_source, onnx_source)
from segedge.flows.sources.library import library_source

SYNTHETIC_EVAL_IMAGES = 8  # the built-in scenes are generated: a small default keeps the first table quick
QUANTIZER_OPSET = 13  # per-axis (per-channel) QuantizeLinear/DequantizeLinear exist from opset 13
CALIB_SPLIT_SIZE = 512  # images the synthetic calibration split offers (it is generated, so any size works)


@dataclass(frozen=True)
class ExportConfig:
    model: str  # a zoo name, or package.module:function building any nn.Module
    checkpoint: Path | None = None  # None: the cached trained weights (trained first if missing)
    untrained: bool = False  # random weights: fast, for smoke tests; parity on random logits is fragile
    width: float = 1.0
    input_size: tuple[int, int] | None = None  # None: the model's default
    dynamic: bool = False
    dynamic_batch: bool = False  # symbolic N, for throughput at batch sizes > 1
    # what to build besides FP32 (always built): names from segedge.core.precision.PRECISIONS
    precisions: tuple[str, ...] = ()
    int8_config: Int8Config = field(default_factory=Int8Config)
    eval_images: int | None = None  # None: 8 synthetic images, or a real dataset's whole evaluation split
    store: Path = DEFAULT_STORE
    threads: int | None = None
    seed: int = 0
    gates: dict[str, ParityGate] = field(default_factory=lambda: {name: s.gate for name, s in STAGES.items()})
    train_iterations: int | None = None  # None: the trainer's default recipe
    onnx: Path | None = None  # bring your own ONNX: it is the FP32 reference, torch stages are skipped
    data: str = "synthetic"  # evaluation (val split) and calibration (calib / train split) data: synthetic or KIND:ROOT
    mean: tuple[float, float, float] | None = None  # bring-your-own models: input normalisation
    std: tuple[float, float, float] | None = None
    num_classes: int | None = None  # bring-your-own models: checked against the model's output
    class_names: tuple[str, ...] | None = None
    layout: str | None = None  # bring-your-own ONNX: NCHW or NHWC where the graph cannot tell
    output: str | None = None  # scores, sigmoid or logit (one channel); None: read from the graph
    threshold: float = 0.5  # one-channel outputs: the foreground cut (a probability)
    calib_data: str | None = None  # calibration images from another dataset (its train split); None: --data's
    output_key: str | None = None  # torch models returning a mapping: the key of the class scores (default: out)
    # a directory `segedge export` wrote, run as it is (a device with the light install: nothing rebuilt, no
    # torch); its FP32 reference is its own model.onnx on onnxruntime, which passed the >= 99.9 % gate vs torch
    artifact: Path | None = None

    def __post_init__(self) -> None:
        wanted = set(parse_precisions(self.precisions)) - {"fp32"}
        object.__setattr__(self, "precisions", tuple(p for p in PRECISIONS if p in wanted))  # registry order

    def builds(self, precision: str) -> bool:
        return precision == "fp32" or precision in self.precisions

    def stage_of(self, precision: str) -> str:
        """The artifact stage a row at ``precision`` runs (INT8 placed by NNCF has its own file)."""
        return stage_for(precision, self.int8_config.scheme.quantizer)


@dataclass
class ExportResult:
    directory: Path
    manifest: dict

    def file(self, stage: str) -> Path:
        """The stage's file, checked against the sha256 its manifest recorded (a swapped file is refused)."""
        return verified_stage_file(self.directory, stage, self.manifest["stages"][stage])


Log = Callable[[str], None]


def _zoo_checkpoint(config: ExportConfig, log: Log, progress: bool) -> Checkpoint:
    from segedge.train.loop import TrainConfig, cached_checkpoint_path, trained_checkpoint

    spec = get_spec(config.model)
    if config.checkpoint is not None:
        return load_checkpoint(config.checkpoint, expect_model=spec.name)
    if config.untrained:
        import torch

        torch.manual_seed(config.seed)
        module = spec.build(num_classes=len(CLASS_NAMES), width=config.width)
        return Checkpoint(spec.name, config.width, len(CLASS_NAMES), CLASS_NAMES, module.state_dict())
    kwargs = {"iterations": config.train_iterations} if config.train_iterations else {}
    recipe = TrainConfig(model=spec.name, width=config.width, seed=config.seed, threads=config.threads, **kwargs)
    if not cached_checkpoint_path(recipe).is_file():
        log(f"no trained {spec.name} weights in the cache yet: training them once on synthetic scenes ({recipe.iterations} "
            f"iterations, batch {recipe.batch_size} of {recipe.crop[0]}x{recipe.crop[1]} crops; later commands reuse them)")
    return trained_checkpoint(recipe, progress=progress)


def exported_artifact(config: ExportConfig) -> ExportResult:
    """An artifact directory as it is: every stage ``config`` asks for must be there (nothing is rebuilt)."""
    directory = Path(config.artifact)
    art = ArtifactDir(directory)
    if not art.manifest_path.is_file():
        raise ArtifactError(f"{directory} holds no segedge manifest.json; give a directory `segedge export` wrote")
    manifest = art.read_manifest()
    for precision in ("fp32", *config.precisions):
        stage = config.stage_of(precision)
        entry = manifest["stages"].get(stage)
        if entry is None or not all((directory / name).is_file() for name in (entry["file"], *entry.get("sidecars", {}))):
            raise ArtifactError(f"{directory} has no {stage} stage ({STAGES[stage].file}); export it where torch is "
                                f"installed (segedge export --{precision}), then copy the directory here")
    return ExportResult(directory, manifest)


def _artifact_source(config: ExportConfig) -> Source:
    """The FP32 reference of an artifact directory: its model.onnx with the manifest's normalisation and io."""
    result = exported_artifact(replace(config, precisions=()))
    manifest = result.manifest
    norm, io = manifest.get("normalization", {}), manifest.get("io") or {}
    names = tuple(manifest.get("class_names") or ())
    source = onnx_source(result.file("onnx"), tuple(manifest["config"]["input_size"]), norm.get("mean"), norm.get("std"),
                         len(names) or None, names or None, io.get("input_layout"), io.get("output"),
                         io.get("threshold", 0.5))
    return replace(source, name=manifest.get("model") or source.name)


def resolve_source(config: ExportConfig, log: Log = lambda _: None, progress: bool = False) -> Source:
    """The FP32 reference for ``config``: a given ONNX, a ``package.module:function``, or a zoo model."""
    if config.artifact is not None:
        return _artifact_source(config)
    if config.onnx is not None:
        return onnx_source(config.onnx, config.input_size, config.mean, config.std, config.num_classes, config.class_names,
                           config.layout, config.output, config.threshold)
    if is_library_model(config.model):
        return library_source(config.model, SourceOptions(
            checkpoint=config.checkpoint, input_size=config.input_size, mean=config.mean, std=config.std,
            num_classes=config.num_classes, class_names=config.class_names, output_key=config.output_key))
    if ":" in config.model:
        return module_source(config.model, config.checkpoint, config.input_size, config.mean, config.std,
                             config.num_classes, config.class_names, config.output_key)
    spec = get_spec(config.model)
    spec.check_input_size(*(config.input_size or spec.default_input_size))
    if config.dynamic and not spec.dynamic_hw:
        raise InputSizeError(f"{spec.name} cannot be exported with dynamic H/W: {spec.dynamic_hw_reason or 'not supported'}")
    ckpt = _zoo_checkpoint(config, log, progress)
    trained = (ckpt.train_info.get("config") or {}).get("scene_size")
    if trained and config.input_size is None and config.checkpoint is not None:
        # a checkpoint that says where it was trained runs there by default: a scale the network never saw can
        # cost most of its accuracy (trained at 512x1024 and run at 224x192: 7.08 mIoU against 29.05)
        spec = replace(spec, default_input_size=tuple(trained))
        spec.check_input_size(*spec.default_input_size)
    size = tuple(config.input_size or spec.default_input_size)
    if trained and tuple(trained) != size:
        log(f"warning: these {spec.name} weights were trained at {trained[0]}x{trained[1]} and run here at "
            f"{size[0]}x{size[1]}; a scale the network never saw can cost much of its accuracy "
            f"(--input-size {trained[0]}x{trained[1]} matches the training)")
    weights_id = ckpt.sha256() if ckpt.path else f"untrained-seed{config.seed}-w{config.width}"
    module = ckpt.build()
    return Source(name=spec.name, spec=spec, num_classes=ckpt.num_classes, class_names=ckpt.class_names,
                  weights_id=weights_id, checkpoint=str(ckpt.path) if ckpt.path else None, module=module,
                  extra={"width": ckpt.width}, code_id=code_fingerprint(module, spec.builder))


def evaluation_sets(data: str, size: tuple[int, int], seed: int, log: Log = lambda _: None,
                    calib_data: str | None = None):
    """(evaluation dataset, calibration dataset, holdout): never the same images. A folder without split
    lists is split by a deterministic holdout (``holdout`` is its fraction, else None), said once in the log.
    ``calib_data`` calibrates on another dataset's training split instead."""
    if data == "synthetic":
        val = SyntheticScenes("val", CALIB_SPLIT_SIZE, size=size, seed=seed)
        train, holdout = SyntheticScenes("calib", CALIB_SPLIT_SIZE, size=size, seed=seed), None
    else:
        train, val, holdout = _real_splits(data, size, log)
    if calib_data is not None and calib_data != data:
        train = (SyntheticScenes("calib", CALIB_SPLIT_SIZE, size=size, seed=seed) if calib_data == "synthetic"
                 else _real_splits(calib_data, size, log)[0])
    return val, train, holdout


def _real_splits(data: str, size: tuple[int, int], log: Log):
    from segedge.data.datasets import holdout_note, train_and_val

    kind, sep, root = data.partition(":")
    if not sep or not root:
        raise SegedgeError(f"--data takes synthetic or KIND:ROOT (e.g. cityscapes:/data/cityscapes), got {data!r}")
    train, val, holdout = train_and_val(kind, root, size=size)
    if holdout is not None:
        log(holdout_note(root, holdout))
    return train, val, holdout


def data_name(dataset) -> str:
    """How a message names an evaluation set: the built-in scenes, or the layout and root of a real one."""
    root = getattr(dataset, "root", None)
    return f"{getattr(dataset, 'layout', 'dataset')} {root}" if root is not None else "the built-in synthetic scenes"


def reference_for(source: Source, eval_set, count: int, threads: int, first: int = 0) -> Reference:
    """FP32 scores of ``source`` on the first ``count`` evaluation images (from ``first``: one part of a split
    evaluation): what every artifact is compared to."""
    require_same_classes(source.name, source.num_classes, data_name(eval_set), eval_set.num_classes)
    images, masks = eval_set.batch(first, count - first)
    inputs = source.io.feed(images, source.spec.mean, source.spec.std)
    return reference_from_runner(source.reference_runner(threads), inputs, masks, source.num_classes, source.io, images)


def eval_count_for(config: ExportConfig, eval_set) -> int:
    """How many evaluation images: ``eval_images`` when given (capped by the split), else 8 synthetic images or
    the whole split of real data, so a decision rests on all the user's labelled images."""
    if config.eval_images is not None:
        return min(config.eval_images, len(eval_set))
    return min(SYNTHETIC_EVAL_IMAGES, len(eval_set)) if config.data == "synthetic" else len(eval_set)


def ranges_cache_path(directory: Path, icfg: Int8Config, sim_sha: str, calib_data: str | None = None) -> Path:
    """Where the calibration ranges for ``icfg`` live beside the artifacts.

    The key holds only what the ranges depend on (``Int8Config.ranges_key``), so MinMax ranges serve the
    x86, arm and tensorrt schemes alike. A cache written under the older ``calib.<method>.<u8|s8>.`` name
    is picked up when it means the same ranges (u8: asymmetric collection, s8: symmetric).
    """
    if calib_data is not None:  # ranges from another dataset: their own cache
        import hashlib

        return directory / f"calib.{icfg.ranges_key()}.{sim_sha[:12]}.{hashlib.sha256(calib_data.encode()).hexdigest()[:8]}.json"
    path = directory / f"calib.{icfg.ranges_key()}.{sim_sha[:12]}.json"
    legacy = directory / (f"calib.{icfg.calib_method}.{'s8' if icfg.symmetric_calibration else 'u8'}."
                          f"{icfg.calib_images}.{sim_sha[:12]}.json")
    if not path.is_file() and legacy.is_file():
        return legacy
    return path


@dataclass(frozen=True)
class CalibrationSetup:
    """What quantizing an exported model needs besides its graph: for ``segedge sensitivity`` and friends."""

    source: Source
    eval_set: object
    calib_set: object
    ranges_cache: Path
    threads: int
    int8_config: Int8Config | None = None  # the config's, with the count the calibration split can give


def calibration_feed(calib_set, spec, icfg: Int8Config, io: ModelIO | None = None) -> tuple[Callable[[], Iterator[np.ndarray]], dict]:
    """(generator of network inputs for ``calibrated_graph``, selection summary for the manifest)."""
    indices, summary = calibration_indices(calib_set, icfg)
    io = io or ModelIO()

    def inputs():
        for i in indices:
            image, _ = calib_set[i]
            yield io.feed(image, spec.mean, spec.std)

    return inputs, summary


def calibration_setup(config: ExportConfig, exported: "ExportResult", log: Log = lambda _: None) -> CalibrationSetup:
    """The source, evaluation and calibration sets and ranges-cache path of an ``export_model`` result."""
    source = resolve_source(config, log)
    size = tuple(exported.manifest["config"]["input_size"])
    eval_set, calib_set, _ = evaluation_sets(config.data, size, config.seed, calib_data=config.calib_data)
    # the default count shrinks to a smaller split (said); a count the user gave that it cannot give is refused
    icfg = with_calibration_count(replace(config, precisions=("int8",)), calib_set, log).int8_config
    sim_sha = exported.manifest["stages"]["sim"]["sha256"]
    return CalibrationSetup(source, eval_set, calib_set, ranges_cache_path(exported.directory, icfg, sim_sha, config.calib_data),
                            config.threads or os.cpu_count() or 1, icfg)


def with_calibration_count(config: ExportConfig, calib_set, log: Log) -> ExportConfig:
    """``config`` with a calibration count its split can give. The default count (nobody asked for 32) shrinks to a
    smaller split, said in the log; a count the user gave that the split cannot give is refused."""
    icfg = config.int8_config
    if not config.builds("int8") or len(calib_set) >= icfg.calib_images:
        return config
    if isinstance(icfg.calib_images, DefaultCount) and len(calib_set) > 0:
        log(f"calibration uses the {len(calib_set)} images of the calibration split (fewer than the default "
            f"{icfg.calib_images}; --calib-images asks for a count)")
        return replace(config, int8_config=replace(icfg, calib_images=len(calib_set)))
    raise CalibrationError(
        f"calibration set has {len(calib_set)} images but {icfg.calib_images} were asked for; "
        f"lower --calib-images to at most {len(calib_set)}"
    )


def export_model(config: ExportConfig, log: Log = lambda _: None, progress: bool = False) -> ExportResult:
    """Run the chain for ``config``; returns the artifact directory and its manifest."""
    if config.artifact is not None:
        return exported_artifact(config)
    config.int8_config.validate()
    if config.eval_images is not None and config.eval_images < 1:
        raise ValueError("eval_images must be >= 1")
    if config.onnx is None and is_zoo_name(config.model):  # refuse bad zoo input before any training
        spec = get_spec(config.model)
        spec.check_input_size(*(config.input_size or spec.default_input_size))
    if config.builds("int8") and config.data == "synthetic" and config.int8_config.calib_images > CALIB_SPLIT_SIZE:
        raise CalibrationError(
            f"calibration set has {CALIB_SPLIT_SIZE} images but {config.int8_config.calib_images} were asked for; "
            f"lower --calib-images to at most {CALIB_SPLIT_SIZE}"
        )
    threads = config.threads or os.cpu_count() or 1
    source = resolve_source(config, log, progress)
    spec = source.spec
    size = tuple(config.input_size or spec.default_input_size)
    eval_set, calib_set, holdout = evaluation_sets(config.data, size, config.seed, log, config.calib_data)
    if source.io.channels == 1:
        log(f"{source.name} takes one grey channel: the RGB images of {config.data} are converted to grey (BT.601 luma)")
    if config.data != "synthetic" and eval_set.num_classes < 2:
        raise SegedgeError(f"{config.data} labels a single class: a metric that cannot fail is not reported; give "
                           f"classes.txt at least a background and a foreground class")
    if source.num_classes < 2:
        raise SegedgeError(f"{source.name} scores a single class: a metric that cannot fail is not reported; a "
                           f"one-channel model needs --output sigmoid or logit to be scored as two classes")
    require_same_classes(source.name, source.num_classes, config.data, eval_set.num_classes)
    config = with_calibration_count(config, calib_set, log)
    eval_count = eval_count_for(config, eval_set)
    if eval_count < 1:
        raise SegedgeError(f"{config.data} has no evaluation images")
    base_config = {
        "model": source.name,
        **({"width": source.extra["width"]} if "width" in source.extra else {}),
        "num_classes": source.num_classes,
        "weights": source.weights_id,
        **({"code": source.code_id} if source.code_id else {}),
        "input_size": list(size),
        "dynamic": config.dynamic,
        **({"dynamic_batch": True} if config.dynamic_batch else {}),
        "opset": EXPORT_OPSET if source.onnx is None else "given",
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        **({"io": source.io.as_dict()} if not source.io.canonical else {}),
        **({"torch_output": source.extra["output"]} if "output" in source.extra else {}),  # which output is exported
        "eval": {"data": config.data, "split": "val", "images": eval_count, "seed": config.seed,
                 "fingerprint": data_fingerprint(eval_set, eval_count),  # the files' bytes: swapped data, new key
                 **({"holdout": holdout} if holdout is not None else {})},
    }
    art = ArtifactDir.for_config(config.store, source.name, base_config)
    with art.locked(log):  # one writer per artifact dir: the manifest is read, extended and written under it
        art.remove_leftovers()
        manifest = art.read_manifest() or {
            "model": source.name,
            "created": _now(),
            "config": base_config,
            "checkpoint": source.checkpoint,
            "source_onnx": str(source.onnx) if source.onnx else None,
            "class_names": list(source.class_names),
            "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
            "io": source.io.as_dict(),
            # what the torch model returned and which part is the exported output (a mapping's key, .logits, a
            # tuple's first item) at which stride: the bridging outside the graph, as io is for an ONNX
            **({"torch_output": source.extra["output"]} if "output" in source.extra else {}),
            # how the model arrived: a library and its version, a torch.export or TorchScript file
            **({"source": {k: v for k, v in source.extra.items() if k not in ("output", "width")}}
               if set(source.extra) - {"output", "width"} else {}),
            "size_multiple": spec.size_multiple,  # what a dynamic-size input must be padded to (segedge.Predictor)
            "stages": {},
        }
        manifest["tools"] = tool_versions()

        reference: Reference | None = None

        def get_reference() -> Reference:
            nonlocal reference
            if reference is None:
                if progress:
                    log(f"scoring the torch FP32 reference on {eval_count} {config.data} val images")
                reference = reference_for(source, eval_set, eval_count, threads)
                manifest["reference"] = {"backend": source.reference_backend, "precision": "fp32", "miou": reference.miou,
                                         "images": eval_count, "split": "val", "data": config.data}
            return reference

        def run_stage(stage: str, stage_config: dict, build: Callable[[Path], dict]) -> None:
            if art.reusable_stage(manifest, stage, stage_config):
                log(f"{stage:5s} reused  {art.file(STAGES[stage].file)}")
                return
            art.path.mkdir(parents=True, exist_ok=True)
            final = art.file(STAGES[stage].file)
            candidate = art.file(f".candidate.{os.getpid()}.{STAGES[stage].file}")
            try:
                started = time.perf_counter()
                if progress:
                    log(f"{stage:5s} building {final.name}, then checking its parity against torch FP32")
                info = build(candidate)
                report = _parity(stage, candidate, get_reference(), threads)
                gate = config.gates[stage]
                entry = {
                    "file": final.name,
                    "config": stage_config,
                    "seconds": round(time.perf_counter() - started, 2),
                    **info,
                    "parity": report.as_dict(),
                    "gate": asdict(gate),
                }
                enforce_gate(stage, report, gate, hint=info.get("saturation_note", ""),
                             against="torch FP32" if source.module is not None else "the given FP32 ONNX")
                entry["sha256"] = sha256_file(candidate)
                # an IR's weights file: hashed with it, and in place before the .xml that reads it
                sidecars = list(zip(sidecar_names(candidate.name), sidecar_names(final.name)))
                if sidecars:
                    entry["sidecars"] = {name: sha256_file(art.file(built)) for built, name in sidecars}
                for built, name in sidecars:
                    os.replace(art.file(built), art.file(name))
                os.replace(candidate, final)
            finally:
                for leftover in (candidate, *(art.file(n) for n in sidecar_names(candidate.name))):
                    leftover.unlink(missing_ok=True)
            manifest["stages"][stage] = json.loads(json.dumps(entry))  # as the manifest file holds it (no tuples)
            manifest["updated"] = _now()
            art.write_manifest(manifest)
            p = entry["parity"]
            log(f"{stage:5s} ok      {final}  agreement {100 * p['argmax_agreement']:.3f} %  "
                f"mIoU {100 * p['miou']:.2f} (drop {p['miou_drop_points']:+.2f})  max|Δ| {p['max_abs_diff']:.2e}")

        def onnx_stage(candidate: Path) -> dict:
            if source.onnx is not None:
                return copy_checked_onnx(source.onnx, candidate)
            key = (source.extra.get("output") or {}).get("scores", "the tensor")
            info = onnx_from_torch(source.module, spec, candidate, size, dynamic=config.dynamic,
                                   dynamic_batch=config.dynamic_batch,
                                   **({"output_name": key} if key not in ("the tensor", "0") else {}))
            return {"opset": info.opset, "input_shape": list(info.input_shape), "output_shape": list(info.output_shape),
                    "dynamic_checked_at": list(info.second_size) if info.second_size else None,
                    "run_check": {"max_abs_diff": info.max_abs_diff, "outlier_pixel_share": info.outlier_share}}

        run_stage("onnx", {"base": base_config}, onnx_stage)
        onnx_sha = manifest["stages"]["onnx"]["sha256"]
        onnx_path = art.file(STAGES["onnx"].file)
        # which simplifier ran is recorded in the stage, not keyed: a device without onnxsim reuses the graph the
        # workstation simplified instead of rebuilding every stage after it
        # large folded splats go back to ConstantOfShape (restore_splats): a graph simplified before that is rebuilt
        run_stage("sim", {"source_sha256": onnx_sha, "splats": "ConstantOfShape"}, lambda c: simplified_onnx(onnx_path, c))
        sim_sha = manifest["stages"]["sim"]["sha256"]
        sim_path = art.file(STAGES["sim"].file)

        if config.builds("fp16"):
            run_stage("fp16", {"source_sha256": sim_sha}, lambda c: fp16_from_onnx(sim_path, c))

        if config.builds("int8"):
            # resolved before the key: an artifact of another op set is never reused
            icfg = int8_config_for(config.int8_config, spec)
            spec_op_set = icfg.op_set != config.int8_config.op_set
            ranges = ranges_cache_path(art.path, icfg, sim_sha, config.calib_data)

            def int8_stage(candidate: Path) -> dict:
                from tqdm import tqdm

                started = time.perf_counter()
                calibration_inputs, selection = calibration_feed(calib_set, spec, icfg, source.io)
                quant_source, opsets = quantizable_graph(sim_path, candidate)
                with tqdm(total=icfg.calib_images, desc="calibrating INT8", unit="img", disable=not progress) as bar:
                    with calibrated_graph(quant_source, calibration_inputs, icfg, available_images=len(calib_set),
                                          ranges_cache=ranges, progress=lambda n: bar.update(n - bar.n)) as graph:
                        bar.close()
                        op_set = None
                        if spec_op_set:
                            op_set = {"chosen": icfg.op_set, "why": f"{icfg.op_set}: {spec.name}'s measured default",
                                      "op_types": icfg.op_types()}
                            log(f"int8  op set: {icfg.op_set} ({spec.name}'s measured default)")
                        if icfg.op_set == "auto" and icfg.scheme.quantizer == "onnxruntime":
                            chosen, probe = probe_op_set(graph, next(iter(calibration_inputs())), threads or 1)
                            graph.config = replace(icfg, op_set=chosen)
                            op_set = {"chosen": chosen, **probe, "op_types": graph.config.op_types()}
                            fastest, agree = probe["probe_fastest_ms"], probe["probe_agreement"]
                            log(f"int8  op set: {chosen} (Q/DQ on {'every op onnxruntime quantizes' if chosen == 'all' else 'Conv/MatMul/Gemm only'}; "
                                f"all {fastest['all']:.1f} ms / {100 * agree['all']:.2f} % agreement, layers "
                                f"{fastest['layers']:.1f} ms / {100 * agree['layers']:.2f} %)")
                        try:
                            info = graph.quantize(candidate)
                            if op_set is not None:
                                info["op_set"] = op_set
                        except SegedgeError:
                            raise
                        except Exception as exc:  # onnxruntime's quantizer on a graph it cannot take
                            raise CalibrationError(f"INT8 quantization of {source.name} failed: {brief(exc)}") from None
                        if graph.equalization is not None:
                            info["equalization"] = graph.equalization
                        info["float_classifier"] = [] if icfg.quantize_classifier else graph.classifier()
                        note = saturation_note(icfg.scheme)
                        if note:  # recorded, said now, and named again if the parity gate refuses the graph
                            info["saturation_note"] = note
                            log(f"int8  warning: {note}")
                        if icfg.max_drop is not None:
                            info.update(mixed_precision(graph, candidate, art.file(STAGES["onnx"].file)))
                if opsets:
                    info["opset"] = opsets
                    quant_source.unlink(missing_ok=True)
                split = "calib" if config.data == "synthetic" else "train"
                return {"seconds": round(time.perf_counter() - started, 2), **info,
                        "calibration": {"data": config.calib_data or config.data, "split": split, "ranges_cache": ranges.name if icfg.scheme.quantizer != "nncf" else None, **icfg.as_dict(),
                                        "selection": selection}}

            def mixed_precision(graph, candidate: Path, onnx_path: Path) -> dict:
                from segedge.verify.sensitivity import mixed_precision_search, torch_scopes

                result = mixed_precision_search(graph, get_reference(), candidate, icfg.max_drop, icfg.max_search_steps,
                                                threads=threads, scopes=torch_scopes(onnx_path, graph.source), log=log,
                                                order=icfg.search_order)
                log(f"int8  {result.message}")
                info = {"mixed_precision": result.as_dict(), **graph.counts(candidate)}
                if not result.met:
                    info["warnings"] = [result.message]
                return info

            run_stage(config.stage_of("int8"), {"source_sha256": sim_sha, "int8": icfg.as_dict(),
                               **({"calib_data": config.calib_data} if config.calib_data else {})}, int8_stage)

        return ExportResult(art.path, manifest)


def int8_config_for(icfg: Int8Config, spec) -> Int8Config:
    """``icfg`` with op set "auto" resolved to the model's measured default where its ``ModelSpec`` names one
    (onnxruntime's quantizer only: NNCF places its own Q/DQ)."""
    if icfg.op_set == "auto" and spec.int8_op_set != "auto" and icfg.scheme.quantizer == "onnxruntime":
        return replace(icfg, op_set=spec.int8_op_set)
    return icfg


def _parity(stage: str, candidate: Path, reference: Reference, threads: int | None):
    """The stage's parity report on the CPU runner that checks it (onnxruntime, or OpenVINO for NNCF's graph)."""
    checker = STAGES[stage].checked_on
    if checker == "onnxruntime":
        runner = OnnxRuntimeRunner(candidate, threads=threads)
    else:
        from segedge.backends.isolate import probe
        from segedge.backends.registry import get_backend

        # a native crash compiling the candidate must not take the export down (OpenVINO 2026.4 segfaults on
        # some INT8 graphs): a child meets it first, and the stage fails with the signal's name
        probe(checker, candidate, None, tuple(reference.size), "fp32", threads or 1, {})
        runner = get_backend(checker).runner(candidate, precision="fp32", threads=threads or os.cpu_count() or 1,
                                             profile=None, manifest={})
    try:
        return compare_to_reference(runner, reference)
    except SegedgeError:
        raise
    except Exception as exc:  # the runtime refuses the graph it was given: one line, and the candidate goes
        raise ArtifactError(f"{stage}: {checker} cannot run {candidate.name.split('.', 2)[-1]}: {brief(exc)}") from None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def quantizable_graph(sim_path: Path, candidate: Path) -> tuple[Path, dict | None]:
    """The graph to quantize: ``sim_path`` itself, or, below the opset onnxruntime's quantizer writes (per-axis
    Q/DQ need 13), a copy converted by onnx's version converter; returns (graph, {given, quantized} or None)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(sim_path))
    given = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if given >= QUANTIZER_OPSET:
        return sim_path, None
    try:
        converted = version_converter.convert_version(model, QUANTIZER_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise CalibrationError(f"the model is at opset {given}; INT8 needs opset {QUANTIZER_OPSET}, and onnx's version "
                               f"converter failed: {brief(exc)}") from None
    path = candidate.with_name(candidate.name + f".opset{QUANTIZER_OPSET}.onnx")
    onnx.save(converted, str(path))
    return path, {"given": given, "quantized": QUANTIZER_OPSET}
