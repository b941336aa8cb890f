"""A backend that dies natively is met first by the crash-isolation probe in a child process: bench turns the
crash into a failed row naming the signal, and the sweep goes on to the next row."""

from __future__ import annotations

import pytest

PROFILE = """
name = "cpu-tiny"
description = "test profile"
backend = "onnxruntime"
providers = ["CPUExecutionProvider"]
precisions = ["int8", "fp32"]
input_size = [64, 128]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
[tolerance]
int8 = 5.0
"""


def test_a_native_crash_in_the_probe_becomes_a_failed_row_and_the_sweep_goes_on(tiny_checkpoint, tmp_path,
                                                                                  monkeypatch):
    import segedge.flows.bench as bench
    from segedge.backends.profiles import load_profile_file
    from segedge.core.hardware import detect_machine
    from segedge.core.results import ResultsStore
    from tests.fixtures import crash_in_child_backend

    monkeypatch.setattr(crash_in_child_backend, "SAFE_HERE", True)  # only the probe's child crashes
    import segedge.backends.registry as registry

    ours = crash_in_child_backend.BACKEND
    monkeypatch.setattr(bench, "get_backend", lambda name: ours)  # the sweep's backend: ours
    real_get = registry.get_backend  # and what the row's end-to-end Predictor looks up by its name
    monkeypatch.setattr(registry, "get_backend", lambda name: ours if name == ours.name else real_get(name))
    probes = []
    real_probe = bench.probe
    monkeypatch.setattr(bench, "probe", lambda *a, **k: probes.append(a[3:5]) or real_probe(*a, **k))
    (tmp_path / "p.toml").write_text(PROFILE)
    profile = load_profile_file(tmp_path / "p.toml")
    config = bench.BenchConfig(models=("unet",), precisions=("int8", "fp32"), input_size=profile.input_size,
                               store=tmp_path / "r.sqlite", artifacts=tmp_path / "export", eval_images=2, quick=True,
                               checkpoints={"unet": tiny_checkpoint.path})
    logs = []
    rows = bench.run_sweep(profile, "onnxruntime", detect_machine(), config, log=logs.append)
    by_precision = {r["precision"]: r for r in rows}
    assert list(by_precision) == ["int8", "fp32"]
    crashed = by_precision["int8"]
    assert crashed["status"] == "failed", crashed
    assert "int8" in crashed["reason"] and "crashed (SIGSEGV)" in crashed["reason"]
    assert "the sweep goes on without this row" in crashed["reason"]
    assert any(line.startswith("❌ unet int8") for line in logs)
    # the row after the crash was measured, in this process, after its own probe passed
    assert by_precision["fp32"]["status"] in ("ok", "uncertain"), by_precision["fp32"].get("reason")
    assert by_precision["fp32"]["median_ms"] > 0
    assert [precision for _, precision in probes] == ["int8", "fp32"]
    with ResultsStore(config.store) as store:
        assert sorted(r["status"] for r in store.rows()) == sorted([by_precision["fp32"]["status"], "failed"])
