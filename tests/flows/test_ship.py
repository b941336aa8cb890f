"""`segedge ship`: the search's rules (pruning by latency and by interval, the time limit, the no-solution
answer) with figures the test sets, then the whole command on a tiny U-Net: a bundle the Predictor loads and
that gives the masks of the very artifact that was measured, and a rerun that reuses every measured row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segedge.cli.main import main
from segedge.core.results import ResultsStore

PROFILE = """
name = "cpu-tiny"
description = "test profile"
backend = "onnxruntime"
precisions = ["fp32", "int8"]
input_size = [64, 128]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
"""


@pytest.fixture
def profile(tmp_path) -> Path:
    path = tmp_path / "cpu-tiny.toml"
    path.write_text(PROFILE)
    return path


def ship(tmp_path, profile, tiny_checkpoint, *extra) -> int:
    return main(["ship", "--profile", str(profile), "--models", "unet", "--checkpoint", f"unet={tiny_checkpoint.path}",
                 "--eval-images", "4", "--results", str(tmp_path / "r.sqlite"), "--artifacts", str(tmp_path / "export"),
                 "--out", str(tmp_path / "ship"), "--quiet", *extra])


# the rules, with figures set by the test ------------------------------------------------------------------

@pytest.fixture
def staged(monkeypatch):
    """Quick times and drop intervals per candidate, as the test says; counts what was exported and scored."""
    import segedge.flows.ship as ship_flow
    from segedge.verify.compare import ParityReport, RunnerAccuracy
    from segedge.verify.interval import DropInterval

    plan = {"quick": {}, "drop": {}, "timed": [], "scored": []}

    def quick(candidate, *_):
        plan["timed"].append(candidate.label)
        candidate.manifest = {"stages": {}, "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}}
        return plan["quick"][candidate.label]

    def score(candidate, profile, backend, machine, bench, config, *_):
        plan["scored"].append(candidate.label)
        drop, low, high = plan["drop"][candidate.label]
        if low > config.max_drop:
            candidate.fate, candidate.why = "over drop", f"lower end {low}"
        candidate.row = {"median_ms": None if low > config.max_drop else plan["quick"][candidate.label] * 1.05,
                         "miou_drop": drop, "drop_low": low, "drop_high": high, "eval_images": 8}

    monkeypatch.setattr(ship_flow, "_quick_time", quick)
    monkeypatch.setattr(ship_flow, "_score_and_measure", score)
    monkeypatch.setattr(ship_flow, "_measured_before", lambda *_: None)  # nothing measured before: no store here
    return plan


def search(tmp_path, checkpoint, budget, max_drop, sizes=((64, 128), (128, 256)), time_limit=None):
    from segedge.backends.profiles import load_profile_file
    from segedge.core.hardware import detect_machine
    from segedge.flows.bench import BenchConfig
    from segedge.flows.ship import ShipConfig, ship_search

    (tmp_path / "p.toml").write_text(PROFILE)
    profile = load_profile_file(tmp_path / "p.toml")
    bench = BenchConfig(models=("unet",), precisions=("fp32", "int8"), input_size=(128, 256),
                        store=tmp_path / "r.sqlite", artifacts=tmp_path / "export",
                        checkpoints={"unet": checkpoint.path})
    config = ShipConfig(bench=bench, budget_ms=budget, max_drop=max_drop, sizes=sizes, time_limit_s=time_limit)
    return ship_search(profile, "onnxruntime", detect_machine(), config)


def fates(result) -> dict[str, str]:
    return {c.label: c.fate for c in result.candidates}


def test_latency_pruning_uses_the_best_speed_up_measured_and_never_exports_what_cannot_meet_it(staged, tiny_checkpoint, tmp_path):
    staged["quick"].update({"unet 64x128 fp32": 10.0, "unet 64x128 int8": 4.0,  # INT8: 2.5x FP32 here
                            "unet 128x256 fp32": 40.0, "unet 128x256 int8": 16.0})
    staged["drop"].update({k: (0.1, -0.2, 0.3) for k in staged["quick"]})
    result = search(tmp_path, tiny_checkpoint, budget=12.0, max_drop=1.0)
    assert "unet 128x256 int8" not in staged["timed"]  # 40 / 2.5 = 16 > 12: pruned before any export
    got = fates(result)
    assert got["unet 128x256 int8"] == "over budget" and "2.50x" in next(
        c.why for c in result.candidates if c.label == "unet 128x256 int8")
    assert got["unet 128x256 fp32"] == "over budget" and got["unet 64x128 int8"] == "picked"
    assert result.pick.label == "unet 64x128 int8" and got["unet 64x128 fp32"] == "slower than the pick"
    assert staged["scored"] == ["unet 64x128 int8"]  # the fastest first; FP32 could no longer win


def test_a_size_that_cannot_meet_the_budget_at_any_precision_prunes_every_larger_one(staged, tiny_checkpoint, tmp_path):
    staged["quick"].update({"unet 64x128 fp32": 30.0, "unet 64x128 int8": 20.0})
    result = search(tmp_path, tiny_checkpoint, budget=12.0, max_drop=1.0)
    assert staged["timed"] == ["unet 64x128 fp32", "unet 64x128 int8"]  # the larger size is never exported
    assert set(fates(result).values()) == {"over budget"} and result.pick is None
    answer = result.answer(12.0, 1.0)
    assert answer.startswith("nothing meets both 12 ms and a drop of 1 points")


def test_interval_pruning_uses_the_lower_end_and_the_pick_the_upper_end(staged, tiny_checkpoint, tmp_path):
    staged["quick"].update({"unet 64x128 fp32": 5.0, "unet 64x128 int8": 2.0,
                            "unet 128x256 fp32": 9.0, "unet 128x256 int8": 3.0})
    staged["drop"].update({"unet 64x128 int8": (2.0, 1.2, 3.0),  # lower end over 1.0: dropped
                           "unet 64x128 fp32": (0.8, 0.6, 1.0),  # upper end exactly at the limit: feasible
                           "unet 128x256 int8": (0.7, 0.2, 1.3),  # straddles: uncertain, not shipped
                           "unet 128x256 fp32": (0.0, 0.0, 0.0)})
    result = search(tmp_path, tiny_checkpoint, budget=100.0, max_drop=1.0)
    got = fates(result)
    assert got["unet 64x128 int8"] == "over drop" and got["unet 128x256 int8"] == "uncertain"
    assert result.pick.label == "unet 64x128 fp32" and got["unet 128x256 fp32"] == "slower than the pick"
    assert "unet 128x256 fp32" not in staged["scored"]  # slower than the pick: never scored


def test_the_time_limit_stops_cleanly_with_what_was_measured(staged, tiny_checkpoint, tmp_path):
    staged["quick"].update({k: 1.0 for k in ("unet 64x128 fp32", "unet 64x128 int8", "unet 128x256 fp32",
                                             "unet 128x256 int8")})
    result = search(tmp_path, tiny_checkpoint, budget=100.0, max_drop=1.0, time_limit=1e-9)
    assert result.pick is None and set(fates(result).values()) == {"not reached"}
    assert "time limit" in result.answer(100.0, 1.0)
    with ResultsStore(tmp_path / "r.sqlite") as store:  # every fate is kept, with why
        assert {r["status"] for r in store.rows()} == {"pruned"}


# the whole command on a tiny U-Net ---------------------------------------------------------------------------

def test_ship_hands_over_a_bundle_the_predictor_runs_as_it_was_measured(tiny_checkpoint, profile, tmp_path, capsys,
                                                                         monkeypatch):
    assert ship(tmp_path, profile, tiny_checkpoint, "--budget-ms", "10000", "--max-drop", "100",
                "--sizes", "64x128,32x64", "--precisions", "fp32,int8") == 0
    out = capsys.readouterr().out
    (bundle,) = list((tmp_path / "ship").iterdir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    shipped = manifest["ship"]
    assert bundle.name == f"unet-{shipped['input_size'][0]}x{shipped['input_size'][1]}-{shipped['precision']}-onnxruntime"
    assert f"bundle {bundle}" in out and (bundle / "report.html").is_file()
    assert "onnxruntime==" in (bundle / "requirements.txt").read_text()
    assert len(shipped["candidates"]) == 4 and shipped["reference_size"] == [64, 128]
    from segedge.flows.predict import Predictor

    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    source = Path(shipped["source_artifact"])
    with Predictor(bundle) as from_bundle, Predictor(source, precision=shipped["precision"]) as from_artifact:
        assert from_bundle.size == tuple(shipped["input_size"])
        np.testing.assert_array_equal(from_bundle(frame), from_artifact(frame))
    # a rerun reuses every row measured under the same identity, whatever this run's quick times say: the first
    # run's pick, made to look slowest now, is reused, not pruned as slower than another candidate
    import segedge.flows.ship as ship_flow

    picked = f"unet {shipped['input_size'][0]}x{shipped['input_size'][1]} {shipped['precision']}"
    quick = ship_flow._quick_time
    monkeypatch.setattr(ship_flow, "_quick_time",
                        lambda candidate, *a: max(quick(candidate, *a), 5000.0 if candidate.label == picked else 0.0))
    assert ship(tmp_path, profile, tiny_checkpoint, "--budget-ms", "10000", "--max-drop", "100",
                "--sizes", "64x128,32x64", "--precisions", "fp32,int8") == 0
    assert f"{picked}: measured before under the same identity (reused)" in capsys.readouterr().err


def test_nothing_within_both_limits_is_one_line_and_writes_nothing(tiny_checkpoint, profile, tmp_path, capsys):
    assert ship(tmp_path, profile, tiny_checkpoint, "--budget-ms", "0.0001", "--max-drop", "1",
                "--precisions", "fp32") == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("segedge: error: nothing meets both 0.0001 ms")
    assert not (tmp_path / "ship").exists()
