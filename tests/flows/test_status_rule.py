"""The ✅ / ❎ / ❔ rule of a bench row, at its exact boundaries: ✅ when the drop's whole 95 % interval is within
the tolerance (its upper end may equal it), ❎ when the whole interval is beyond it (its lower end above it), ❔
otherwise, whatever the point estimate says. Also the pick, which must hold the interval's upper end to the limit."""

from __future__ import annotations

import pytest

TOL = 1.0


@pytest.mark.parametrize("drop, low, high, status", [
    (0.3, -0.4, 0.9, "ok"),
    (0.5, 0.2, 1.0, "ok"),           # the upper end at the tolerance: within it
    (0.5, 0.2, 1.001, "uncertain"),  # just past it
    (0.5, -0.2, 1.4, "uncertain"),   # the point within the tolerance, the interval not: ❔, not ✅
    (1.5, 0.6, 2.4, "uncertain"),    # the point beyond the tolerance, the interval not wholly: ❔, not ❎
    (1.5, 1.0, 2.0, "uncertain"),    # the lower end at the tolerance: not wholly beyond it
    (1.5, 1.001, 2.0, "drop"),
    (3.0, 2.5, 3.5, "drop"),
])
def test_a_rows_status_comes_from_its_interval(drop, low, high, status):
    from segedge.flows.bench import _status

    assert _status({"miou_drop": drop, "drop_low": low, "drop_high": high}, TOL) == status


@pytest.mark.parametrize("drop, status", [(0.99, "ok"), (1.0, "ok"), (1.001, "drop")])
def test_a_row_without_an_interval_is_judged_on_its_drop(drop, status):
    """Rows stored before intervals existed (or from one image) carry only the drop."""
    from segedge.flows.bench import _status

    assert _status({"miou_drop": drop}, TOL) == status
    assert _status({"miou_drop": drop, "drop_low": None, "drop_high": None}, TOL) == status


def _figures(drop: float, low: float, high: float) -> dict:
    return {"median_ms": 10.0, "p90_ms": 11.0, "p99_ms": 12.0, "min_ms": 9.0, "runs": 3, "fps": 100.0,
            "throughput": 100.0, "pre_ms": 1.0, "post_ms": 1.0, "peak_rss_mb": 100.0, "miou": 0.5,
            "reference_miou": 0.5 + drop / 100, "miou_drop": drop, "drop_low": low, "drop_high": high,
            "argmax_agreement": 0.99, "artifact": "/nowhere/model.onnx", "artifact_sha256": "0" * 64, "eval_images": 4}


PROFILE = """
name = "cpu-tiny"
description = "test profile"
backend = "onnxruntime"
providers = ["CPUExecutionProvider"]
precisions = ["fp32"]
input_size = [64, 128]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
[tolerance]
fp32 = 1.0
"""


@pytest.mark.parametrize("drop, low, high, status, mark", [
    (0.5, -0.2, 1.4, "uncertain", "❔"),
    (0.5, 0.1, 1.0, "ok", "✅"),
    (1.5, 1.0, 2.0, "uncertain", "❔"),
    (1.5, 1.05, 2.0, "drop", "❎"),
])
def test_a_sweep_stores_marks_and_reports_the_interval_rule(drop, low, high, status, mark, tiny_checkpoint, tmp_path,
                                                            monkeypatch):
    import segedge.flows.bench as bench
    from segedge.backends.profiles import load_profile_file
    from segedge.core.hardware import detect_machine
    from segedge.core.results import ResultsStore
    from segedge.flows.report import render

    (tmp_path / "p.toml").write_text(PROFILE)
    profile = load_profile_file(tmp_path / "p.toml")
    monkeypatch.setattr(bench, "_measure", lambda *a, **k: _figures(drop, low, high))
    config = bench.BenchConfig(models=("unet",), precisions=("fp32",), input_size=profile.input_size,
                               store=tmp_path / "r.sqlite", artifacts=tmp_path / "export", eval_images=2,
                               checkpoints={"unet": tiny_checkpoint.path})
    logs = []
    (row,) = bench.run_sweep(profile, "onnxruntime", detect_machine(), config, log=logs.append)
    assert (row["status"], row["tolerance"]) == (status, TOL)
    with ResultsStore(config.store) as store:
        (stored,) = store.rows()
    assert stored["status"] == status
    assert logs[-1].startswith(f"{mark} unet fp32") and f"[{low:+.2f}, {high:+.2f}]" in logs[-1]
    table = render([stored])
    assert mark in table and not ({"✅", "❎", "❔"} - {mark}) & set(table)
    if status == "uncertain":
        assert "uncertain: 4 images" in table  # more images, not a guess, decide


def _row(model: str, ms: float, drop: float, high: float | None) -> dict:
    return dict(profile="cpu", machine_id="m", model=model, precision="int8", median_ms=ms, miou=0.5,
                miou_drop=drop, drop_high=high, status="ok", batch=1)


def test_the_pick_holds_the_intervals_upper_end_to_the_limit_inclusive():
    from segedge.flows.report import pick_fastest_within, summarize_pick

    rows = [_row("fast", 5.0, 0.2, 0.5001), _row("edge", 10.0, 0.3, 0.5), _row("slow", 20.0, 0.0, 0.1)]
    assert pick_fastest_within(rows, 100.0, 0.5)["cpu"]["model"] == "edge"  # upper end == limit: within
    rows = [_row("fast", 5.0, 0.2, 0.9), _row("slow", 20.0, 0.0, 0.1)]
    assert pick_fastest_within(rows, 100.0, 0.5)["cpu"]["model"] == "slow"  # fast's point is within, its interval not
    only = [_row("fast", 5.0, 0.2, 0.9)]
    assert pick_fastest_within(only, 100.0, 0.5)["cpu"] is None
    assert "nothing is within 0.5 points at its interval's upper end" in summarize_pick(
        pick_fastest_within(only, 100.0, 0.5), only, 100.0, 0.5)
    legacy = [_row("old", 5.0, 0.5, None)]  # no interval stored: its drop is what is held to the limit
    assert pick_fastest_within(legacy, 100.0, 0.5)["cpu"]["model"] == "old"
