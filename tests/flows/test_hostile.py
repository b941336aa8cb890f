"""Hostile use: edited models, two commands on one store, tampered manifests, smoke rows, folders without
splits, a full disk, killed runs. Each test reproduces a defect a probe found (and fails on the code before
its fix); each asserts what the user is promised: nothing stale is served, no finished row is lost, every
mistake is one line."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segedge.backends.profiles import load_profile_file
from segedge.cli.main import main
from segedge.core.artifacts import remove_stale_scratch
from segedge.core.errors import ArtifactError, SegedgeError
from segedge.core.hardware import detect_machine
from segedge.core.results import ResultsStore
from segedge.flows.bench import BenchConfig, run_sweep
from segedge.flows.export import ExportConfig, export_model

SIZE = (64, 128)
SEGEDGE = str(Path(sys.executable).parent / "segedge")
PROFILE = """
name = "cpu-tiny"
description = "test profile"
backend = "onnxruntime"
precisions = ["fp32", "int8"]
input_size = [64, 128]
threads = 1
warmup_runs = 1
min_runs = 4
min_seconds = 0.0
[tolerance]
int8 = 5.0
"""

NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 10, 3, padding=1)  # the built-in scenes label 10 classes

    def forward(self, x):
        return {sign}self.conv(x)


def build():
    torch.manual_seed(0)
    return Net()
"""


def _tiny(tiny_checkpoint, store: Path, **kwargs) -> ExportConfig:
    return ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2, store=store,
                        threads=1, **kwargs)


# stale artifacts ------------------------------------------------------------------------------------------

def test_editing_a_models_forward_is_never_served_from_the_cache(tmp_path, monkeypatch):
    package = tmp_path / "mynets_edit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NET.format(sign=""))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    config = ExportConfig(model="mynets_edit.nets:build", input_size=(32, 32), eval_images=2, store=tmp_path / "store",
                          threads=1)
    first = export_model(config)

    (package / "nets.py").write_text(NET.format(sign="-"))  # the user edits forward and runs the same command
    for name in ("mynets_edit.nets", "mynets_edit"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    second = export_model(config)

    assert second.directory != first.directory
    assert second.manifest["stages"]["onnx"]["sha256"] != first.manifest["stages"]["onnx"]["sha256"]
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    outputs = []
    for result in (first, second):
        session = ort.InferenceSession(str(result.file("sim")), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    np.testing.assert_allclose(outputs[1], -outputs[0], atol=1e-5)  # the new file runs the edited model


def test_the_zoo_key_covers_the_models_code(tiny_checkpoint, tmp_path):
    result = export_model(_tiny(tiny_checkpoint, tmp_path))
    assert len(result.manifest["config"]["code"]) == 16


# two commands on one store ------------------------------------------------------------------------------

def test_two_exports_of_one_model_at_once_keep_both_stages(tiny_checkpoint, tmp_path):
    common = ["export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
              "--eval-images", "2", "--threads", "1", "--out", str(tmp_path), "--quiet"]
    procs = [subprocess.Popen([SEGEDGE, *common, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in (["--fp16"], ["--int8", "--calib-images", "4"])]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    manifests = list(tmp_path.glob("unet/*/manifest.json"))
    assert len(manifests) == 1
    stages = json.loads(manifests[0].read_text())["stages"]
    assert set(stages) == {"onnx", "sim", "fp16", "int8"}  # neither rewrite lost the other's stage
    for entry in stages.values():
        assert (manifests[0].parent / entry["file"]).is_file()
    assert not list(manifests[0].parent.glob(".candidate.*"))


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tiny_checkpoint, tmp_path):
    result = export_model(_tiny(tiny_checkpoint, tmp_path))
    (result.directory / ".candidate.99999.model.fp16.onnx").write_bytes(b"half")
    (result.directory / ".model.fp16.onnx.abcd.tmp").write_bytes(b"")
    export_model(_tiny(tiny_checkpoint, tmp_path))
    assert sorted(p.name for p in result.directory.iterdir() if p.name.startswith(".")) == []


def test_scratch_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"segedge-int8-{dead.pid}-x1").mkdir()
    (tmp_path / f"segedge-int8-{os.getpid()}-x2").mkdir()  # this live process's own
    assert remove_stale_scratch() == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"segedge-int8-{os.getpid()}-x2"]


# tampering --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../outside.onnx", "/etc/passwd", "..", "sub/model.onnx"])
def test_a_manifest_naming_a_file_outside_its_dir_is_refused(tiny_checkpoint, tmp_path, name):
    result = export_model(_tiny(tiny_checkpoint, tmp_path / "store"))
    path = result.directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["stages"]["sim"]["file"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a plain file name inside its directory"):
        export_model(_tiny(tiny_checkpoint, tmp_path / "store"))


@pytest.mark.parametrize("text, what", [("[]", "a JSON list"), ('{"stages": []}', "'stages' is not an object"),
                                        ('{"stages": {"sim": 3}}', "stage 'sim' is not an object"),
                                        ("{\"stag", "unreadable")])
def test_a_manifest_of_the_wrong_shape_is_one_line_before_any_work(tiny_checkpoint, tmp_path, text, what, capsys):
    result = export_model(_tiny(tiny_checkpoint, tmp_path))
    (result.directory / "manifest.json").write_text(text)
    code = main(["export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
                 "--eval-images", "2", "--threads", "1", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and what in err and "delete" in err


# smoke rows -------------------------------------------------------------------------------------------------

def test_a_quick_row_never_stands_in_for_a_full_measurement(tmp_path):
    key = dict(machine_id="m", profile="p", model="unet", precision="fp32", height=64, width=128, batch=1)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({**key, "status": "ok", "quick": 1, "eval_images": 4, "runs": 3, "median_ms": 1.0})
        assert store.has_finished(**key, quick=True, eval_images=4)
        assert not store.has_finished(**key, quick=False, eval_images=4)
        store.add({**key, "status": "ok", "quick": 0, "eval_images": 8, "runs": 20, "median_ms": 2.0})
        assert store.has_finished(**key, quick=False, eval_images=8)
        assert not store.has_finished(**key, quick=False, eval_images=16)  # measured on other images
        store.add({**key, "status": "ok", "quick": 1, "eval_images": 4, "runs": 3, "median_ms": 0.5})
        assert [r["median_ms"] for r in store.latest_rows()] == [2.0]  # the full row, not the newer smoke row


def test_an_older_store_learns_which_rows_were_smoke(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE measurements (id INTEGER PRIMARY KEY, machine_id TEXT, profile TEXT, model TEXT, "
                   "precision TEXT, height INTEGER, width INTEGER, batch INTEGER, status TEXT, runs INTEGER, "
                   "eval_images INTEGER)")
        db.execute("INSERT INTO measurements VALUES (1, 'm', 'p', 'unet', 'fp32', 64, 128, 1, 'ok', 3, 4)")
        db.execute("INSERT INTO measurements VALUES (2, 'm', 'p', 'unet', 'int8', 64, 128, 1, 'ok', 40, 8)")
    with ResultsStore(path) as store:
        assert [r["quick"] for r in store.rows()] == [1, 0]


def test_a_full_bench_after_a_quick_one_measures_again_and_reports_say_smoke(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROFILE)
    argv = ["bench", "--profile", str(tmp_path / "p.toml"), "--models", "unet", "--precisions", "fp32",
            "--checkpoint", f"unet={tiny_checkpoint.path}", "--eval-images", "2", "--quiet",
            "--results", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "export")]
    assert main([*argv, "--quick"]) == 0
    assert "smoke" in capsys.readouterr().out
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "already measured" not in err and "smoke" not in out
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert [(r["quick"], r["runs"] >= 4) for r in store.rows()] == [(1, False), (0, True)]


# data -------------------------------------------------------------------------------------------------------

def _folder(root: Path, count: int = 8, size=(64, 128)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(rng.integers(0, 2, size, dtype=np.uint8)).save(root / "masks" / f"im{i}.png")
    (root / "classes.txt").write_text("a\nb\n")
    return root


def test_a_folder_without_splits_never_calibrates_on_its_evaluation_images(tmp_path):
    from segedge.flows.export import evaluation_sets

    root = _folder(tmp_path / "data")
    said = []
    eval_set, calib_set, holdout = evaluation_sets(f"folder:{root}", SIZE, 0, log=said.append)
    evaluated = {s.image.name for s in eval_set.samples}
    calibrated = {s.image.name for s in calib_set.samples}
    assert holdout == 0.25 and len(evaluated) == 2 and len(calibrated) == 6
    assert not evaluated & calibrated
    assert len(said) == 1 and "no splits/ lists" in said[0]


def test_training_on_a_folder_uses_its_size_and_export_warns_at_another(tmp_path, capsys):
    from segedge.train.loop import TrainConfig, train

    root = _folder(tmp_path / "data", count=6, size=(70, 140))
    ckpt = train(TrainConfig(model="unet", width=0.125, iterations=2, batch_size=2, crop=(64, 64), val_images=1,
                             data=f"folder:{root}", threads=1), out=tmp_path / "w.pt", progress=False)
    assert tuple(ckpt.train_info["config"]["scene_size"]) == (64, 144)  # 70x140 rounded to U-Net's multiple of 16
    assert "training at 64x144" in capsys.readouterr().err
    said = []
    export_model(ExportConfig(model="unet", checkpoint=ckpt.path, input_size=(64, 128), eval_images=1,
                              data=f"folder:{root}", store=tmp_path / "store", threads=1), log=said.append)
    assert any("trained at 64x144 and run here at 64x128" in line for line in said)


# a full disk, a failed write ------------------------------------------------------------------------------

def test_a_row_that_cannot_be_saved_is_kept_and_the_sweep_goes_on(tiny_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "p.toml").write_text(PROFILE)
    profile = load_profile_file(tmp_path / "p.toml")
    config = BenchConfig(models=("unet",), precisions=("fp32", "int8"), input_size=SIZE, store=tmp_path / "r.sqlite",
                         artifacts=tmp_path / "export", eval_images=2, checkpoints={"unet": tiny_checkpoint.path})
    calls = []

    def full_disk(self, row):
        calls.append(row["precision"])
        if len(calls) == 1:
            raise ArtifactError("cannot save to the results store: database or disk is full")

    monkeypatch.setattr(ResultsStore, "add", full_disk)
    logs = []
    rows = run_sweep(profile, "onnxruntime", detect_machine(), config, log=logs.append)
    assert calls == ["fp32", "int8"]  # the next precision was still measured
    assert "disk is full" in rows[0]["unsaved"] and rows[0]["median_ms"] > 0  # the figure is not lost
    assert "unsaved" not in rows[1]
    assert any("could not be saved" in line for line in logs)


def test_the_store_turns_sqlite_failures_into_one_line(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    store.db.close()
    with pytest.raises(ArtifactError, match="cannot save to the results store"):
        store.add({"status": "ok"})


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_leaves_no_artifact(tiny_checkpoint, tiny_tmpfs, capsys):
    code = main(["export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
                 "--eval-images", "2", "--threads", "1", "--out", str(tiny_tmpfs), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("segedge: error:")
    assert "No space left on device" in err or "produced no data" in err
    left = [p for p in tiny_tmpfs.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == []


@pytest.mark.parametrize("make, expect", [
    (lambda p: p.write_text("a file"), "cannot write to the artifact store"),
])
def test_an_unusable_out_is_one_line(tiny_checkpoint, tmp_path, make, expect, capsys):
    out = tmp_path / "out"
    make(out)
    code = main(["export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
                 "--eval-images", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and expect in err


# interruption -----------------------------------------------------------------------------------------------

def test_sigkill_mid_export_then_rerun_finishes_with_nothing_stale(tiny_checkpoint, tmp_path):
    argv = [SEGEDGE, "export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
            "--eval-images", "2", "--threads", "1", "--out", str(tmp_path), "--int8", "--calib-images", "4"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("unet/*/model.sim.onnx")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (directory,) = tmp_path.glob("unet/*/")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"onnx", "sim", "int8"}
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]


# input validation ---------------------------------------------------------------------------------------------

def test_an_import_that_runs_code_is_said_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "only name code you trust" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


def test_unknown_segedge_errors_are_segedge_errors():
    assert issubclass(ArtifactError, SegedgeError)


def _one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("segedge: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_builder_that_is_not_one_is_one_line(tmp_path, capsys):
    code = main(["export", "--model", "os:system", "--input-size", "64x64", "--out", str(tmp_path), "--quiet"])
    _one_line(capsys, code, "os:system() failed: TypeError", "takes no arguments")
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_a_negative_budget_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as done:
        main(["export", "--model", "unet", "--int8", "--max-drop", "-1"])
    assert done.value.code == 2 and "must be >= 0" in capsys.readouterr().err


def test_a_bad_input_size_leaves_no_artifact_dir(tmp_path, capsys):
    code = main(["export", "--model", "unet", "--untrained", "--input-size", "72x72", "--out", str(tmp_path), "--quiet"])
    _one_line(capsys, code, "not a multiple of 16")
    assert list(tmp_path.iterdir()) == []


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({"machine_id": "m", "profile": "p", "model": "unet", "precision": "fp32", "status": "failed"})
    started = time.perf_counter()
    code = main(["report", "--results", str(tmp_path / "r.sqlite"), "--plot", str(tmp_path / "no" / "p.png")])
    _one_line(capsys, code, "cannot write the plot", "does not exist")
    code = main(["sensitivity", "--model", "unet", "--png", str(tmp_path / "no" / "s.png")])
    _one_line(capsys, code, "cannot write the bar chart")
    assert time.perf_counter() - started < 5  # refused before exporting or calibrating anything


def test_a_damaged_results_store_is_one_line(tmp_path, capsys):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        for i in range(200):
            store.add({"machine_id": "m", "profile": "p", "model": f"m{i}", "precision": "fp32", "status": "failed",
                       "reason": "x" * 200})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated mid-page
    _one_line(capsys, main(["report", "--results", str(path)]), str(path))
    _one_line(capsys, main(["report", "--results", str(tmp_path)]), "is a directory")


def test_a_corrupt_calibration_cache_is_rebuilt(tiny_checkpoint, tmp_path):
    config = _tiny(tiny_checkpoint, tmp_path, precisions=("int8",))
    from dataclasses import replace

    from segedge.graph.int8 import Int8Config

    config = replace(config, int8_config=Int8Config(calib_images=4))
    first = export_model(config)
    (cache,) = first.directory.glob("calib.*.json")
    cache.write_text('{"truncated": ')
    (first.directory / "model.int8.onnx").unlink()  # so the stage is built again from the cache
    again = export_model(config)
    assert again.manifest["stages"]["int8"]["parity"]["argmax_agreement"] > 0.9
    assert json.loads(cache.read_text())  # recalibrated and rewritten


def test_an_onnx_whose_output_is_smaller_than_its_input_is_one_line(tmp_path, capsys):
    import torch

    net = torch.nn.Conv2d(3, 4, 3, stride=3, padding=1)  # 22x22: not a fraction of 64 (a stride-4 head is resized)
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(tmp_path / "small.onnx"), dynamo=False)
    code = main(["export", "--onnx", str(tmp_path / "small.onnx"), "--out", str(tmp_path / "out"), "--quiet"])
    _one_line(capsys, code, "outputs 1x4x22x22 for a 64x64 input")


def test_two_benches_on_one_store_measure_each_row_once_and_never_together(tiny_checkpoint, tmp_path):
    (tmp_path / "p.toml").write_text(PROFILE.replace('["fp32", "int8"]', '["fp32", "fp16"]'))
    argv = [SEGEDGE, "bench", "--profile", str(tmp_path / "p.toml"), "--models", "unet",
            "--checkpoint", f"unet={tiny_checkpoint.path}", "--eval-images", "2", "--quiet",
            "--results", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "export")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    with ResultsStore(tmp_path / "r.sqlite") as store:
        rows = store.rows()
    assert sorted(r["precision"] for r in rows) == ["fp16", "fp32"]  # each measured once, by one of the two
    assert all(r["status"] in ("ok", "drop", "uncertain") for r in rows)  # measured, not failed (❔ is legitimate)
