"""`segedge bench` end to end at a tiny size on this CPU: rows, statuses, resume, a failing row."""

import pytest

from segedge.cli.main import main
from segedge.core.hardware import detect_machine
from segedge.backends.profiles import load_profile_file
from segedge.core.results import ResultsStore
from segedge.flows.bench import BenchConfig, run_sweep

PROFILE = """
name = "cpu-tiny"
description = "test profile"
backend = "onnxruntime"
providers = ["CPUExecutionProvider"]
precisions = ["fp32", "int8"]
input_size = [64, 128]
camera_size = [90, 160]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
[tolerance]
int8 = 5.0
"""


@pytest.fixture(scope="module")
def swept(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "p.toml").write_text(PROFILE)
    profile = load_profile_file(root / "p.toml")
    config = BenchConfig(
        models=("unet", "bisenet"), precisions=profile.precisions, input_size=profile.input_size,
        store=root / "results.sqlite", artifacts=root / "export", eval_images=2,
        checkpoints={"unet": tiny_checkpoint.path, "bisenet": tiny_checkpoint.path},  # wrong for bisenet on purpose
    )
    machine = detect_machine()
    logs = []
    rows = run_sweep(profile, "onnxruntime", machine, config, log=logs.append)
    return profile, machine, config, rows, logs


def test_each_model_precision_gets_a_row_with_figures(swept):
    _, _, config, rows, _ = swept
    unet = {r["precision"]: r for r in rows if r["model"] == "unet"}
    assert set(unet) == {"fp32", "int8"}
    for r in unet.values():
        # the interval rule: ✅ when its upper end is within the tolerance, ❎ when its lower end is beyond, else ❔
        assert r["status"] == ("ok" if r["drop_high"] <= r["tolerance"] else
                               "drop" if r["drop_low"] > r["tolerance"] else "uncertain")
        assert r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] >= r["min_ms"] > 0
        assert r["runs"] >= 3 and r["fps"] == pytest.approx(1000 / r["median_ms"])
        assert r["pre_ms"] > 0 and r["post_ms"] > 0
        # the end-to-end column: segedge.Predictor on a camera-size frame, its pre/post plus the row's inference
        assert r["camera"] == "90x160" and r["e2e_pre_ms"] > 0 and r["e2e_post_ms"] > 0
        assert r["e2e_ms"] == pytest.approx(r["e2e_pre_ms"] + r["median_ms"] + r["e2e_post_ms"])
        assert r["e2e_fps"] == pytest.approx(1000 / r["e2e_ms"])
        assert 0 <= r["argmax_agreement"] <= 1 and r["reference_miou"] > 0
    assert unet["fp32"]["status"] == "ok" and abs(unet["fp32"]["miou_drop"]) <= 0.1


def test_a_failing_model_does_not_stop_the_sweep(swept):
    _, _, _, rows, logs = swept
    failed = [r for r in rows if r["model"] == "bisenet"]
    assert len(failed) == 2 and all(r["status"] == "failed" for r in failed)
    assert "holds a unet model, but --model asks for bisenet" in failed[0]["reason"]
    assert any(line.startswith("❌ bisenet") for line in logs)


def test_rows_are_stored_and_a_rerun_resumes(swept):
    profile, machine, config, _, _ = swept
    with ResultsStore(config.store) as store:
        assert len(store.rows()) == 4
    logs = []
    again = run_sweep(profile, "onnxruntime", machine, config, log=logs.append)
    assert [r["model"] for r in again] == ["bisenet", "bisenet"]  # only the failed rows are retried
    assert sum("already measured" in line for line in logs) == 2


@pytest.mark.skipif(detect_machine().jetson_model is not None, reason="on a Jetson the generic profile resolves instead")
def test_cli_bench_refuses_jetson_here_in_one_line(capsys):
    code = main(["bench", "--profile", "jetson"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "this machine is not a Jetson" in err and "--profile cpu" in err


def test_cli_bench_rejects_unknown_precision(capsys):
    assert main(["bench", "--profile", "cpu", "--precisions", "fp8"]) == 1
    assert "unknown precision 'fp8'" in capsys.readouterr().err


def test_cli_report_without_a_store_is_a_clear_error(capsys, tmp_path):
    assert main(["report", "--results", str(tmp_path / "none.sqlite")]) == 1
    assert "no results store" in capsys.readouterr().err


def test_report_writes_plot_and_overlays(swept, tmp_path, capsys):
    _, _, config, _, _ = swept
    code = main(["report", "--results", str(config.store), "--plot", str(tmp_path / "p.png"),
                 "--overlays", str(tmp_path / "overlays"), "--budget-ms", "10000"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ship unet" in out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    overlays = list((tmp_path / "overlays").glob("unet-int8-*.png"))
    assert len(overlays) == 1 and overlays[0].read_bytes()[:4] == b"\x89PNG"
    from figure_checks import png_panels

    width, height, panels = png_panels(overlays[0])
    assert panels == 4 and width > 3 * height  # image | FP32 | INT8 | disagreement, side by side


def test_profiles_with_batch_sizes_get_throughput_rows(tiny_checkpoint, tmp_path):
    text = PROFILE.replace('precisions = ["fp32", "int8"]', 'precisions = ["fp32"]')
    (tmp_path / "p.toml").write_text(text.replace("threads = 1", "threads = 1\nbatch_sizes = [1, 2]"))
    profile = load_profile_file(tmp_path / "p.toml")
    config = BenchConfig(models=("unet",), precisions=profile.precisions, input_size=profile.input_size,
                         store=tmp_path / "r.sqlite", artifacts=tmp_path / "export", eval_images=2,
                         checkpoints={"unet": tiny_checkpoint.path})
    rows = run_sweep(profile, "onnxruntime", detect_machine(), config)
    by_batch = {r["batch"]: r for r in rows}
    assert set(by_batch) == {1, 2} and all(r["status"] == "ok" for r in rows)
    two = by_batch[2]
    assert two["throughput"] == pytest.approx(2 * 1000 / two["median_ms"])
    manifest_dirs = {r["artifact"].rsplit("/", 1)[0] for r in rows}
    assert len(manifest_dirs) == 1  # one batch-dynamic artifact serves both batch sizes
    import onnx

    dims = onnx.load(rows[0]["artifact"]).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"


def test_cli_bench_writes_the_pareto_plot_and_overlays(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROFILE)
    code = main(["bench", "--profile", str(tmp_path / "p.toml"), "--models", "unet", "--checkpoint",
                 f"unet={tiny_checkpoint.path}", "--results", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "export"),
                 "--eval-images", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "pareto-cpu-tiny.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "overlays").glob("unet-int8-*.png"))) == 1
    assert "| cpu-tiny | onnxruntime | unet | int8 |" in out


def test_a_drop_beyond_the_tolerance_is_marked_and_reported(swept, monkeypatch, tmp_path):
    """The ❎ path: a row that ran but lost more than the profile allows is kept, marked, and not ✅."""
    import segedge.flows.bench as bench
    from dataclasses import replace

    profile, machine, config, rows, _ = swept
    measured = next(r for r in rows if r["model"] == "unet" and r["precision"] == "int8")
    figures = {k: measured[k] for k in ("median_ms", "p90_ms", "p99_ms", "min_ms", "runs", "fps", "throughput", "pre_ms",
                                         "post_ms", "peak_rss_mb", "reference_miou", "argmax_agreement", "artifact",
                                         "artifact_sha256")}
    monkeypatch.setattr(bench, "_measure", lambda *a, **k: {**figures, "miou": 0.1, "miou_drop": 5.01})
    again = run_sweep(profile, "onnxruntime", machine, replace(config, models=("unet",), precisions=("int8",),
                      store=tmp_path / "r.sqlite", force=True))
    assert [(r["status"], r["tolerance"]) for r in again] == [("drop", 5.0)]
    from segedge.flows.report import render

    assert "❎" in render(again) and "✅" not in render(again)
