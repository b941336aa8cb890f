"""``segedge sensitivity`` start to finish: export (or reuse) the FP32 ONNX, calibrate once, rank every layer.

The ranking itself lives in :mod:`segedge.verify.sensitivity`; this flow only supplies it with the export's
artifacts, evaluation images and calibration feed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from segedge.core.artifacts import scratch_dir
from segedge.flows.export import (
    ExportConfig,
    quantizable_graph,
    calibration_feed,
    calibration_setup,
    export_model,
    int8_config_for,
    reference_for,
)
from segedge.graph.int8 import calibrated_graph
from segedge.verify.compare import ParityReport, compare_to_reference
from segedge.verify.sensitivity import Log, LayerSensitivity, blocks, checker, layer_sensitivity, torch_scopes


@dataclass(frozen=True)
class SensitivityReport:
    directory: Path  # the export's artifact directory (the ranges cache lands there)
    scheme: str
    full_int8: ParityReport
    results: tuple[LayerSensitivity, ...]


def model_sensitivity(config: ExportConfig, block_depth: int | None = None, log: Log = lambda _: None,
                      progress: bool = False) -> SensitivityReport:
    """Sensitivity of the model an :class:`~segedge.flows.export.ExportConfig` names: exports (or reuses) its FP32
    ONNX, calibrates with ``config.int8_config`` (reusing the export's ranges cache), ranks every layer."""
    fp32 = export_model(replace(config, precisions=()), log=log, progress=progress)
    setup = calibration_setup(config, fp32, log=log)
    reference = reference_for(setup.source, setup.eval_set, fp32.manifest["config"]["eval"]["images"], setup.threads)
    icfg = int8_config_for(setup.int8_config, setup.source.spec)  # the op set the export would quantize with

    calibration_inputs, _ = calibration_feed(setup.calib_set, setup.source.spec, icfg, setup.source.io)
    with scratch_dir("sensitivity-opset") as converted, \
            calibrated_graph(quantizable_graph(fp32.file("sim"), Path(converted) / "sim.onnx")[0], calibration_inputs, icfg,
                             len(setup.calib_set), ranges_cache=setup.ranges_cache) as graph:
        # an ONNX below opset 13 is quantized from onnx's converted copy, as the export's INT8 stage does
        scopes = torch_scopes(fp32.file("onnx"), graph.source)
        groups = blocks(graph, scopes, block_depth) if block_depth else None
        with scratch_dir("sensitivity") as work:
            full_path = Path(work) / f"full{graph.suffix}"
            graph.quantize(full_path)
            full = compare_to_reference(checker(graph, full_path, setup.threads), reference)

        def tick(done: int, total: int) -> None:
            if progress:
                print(f"\rsensitivity {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

        results = layer_sensitivity(graph, reference, setup.threads, groups=groups, scopes=scopes, progress=tick)
    return SensitivityReport(fp32.directory, icfg.scheme.name, full, tuple(results))


