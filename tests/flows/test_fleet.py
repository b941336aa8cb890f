"""`segedge sweep --ray`: a local Ray head plus a worker node advertising a fake profile resource, on 127.0.0.1.

Checks that jobs go to the node that advertises the profile, that two jobs on one device never overlap in
time, and that their rows land in the local store. Skipped (with the reason) where Ray is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from segedge.cli.main import main
from segedge.core.results import ResultsStore
from test_own_data import blobs, stride4  # noqa: F401,E402  (blobs is a fixture)

PROFILE = """
name = "cpu-tiny"
description = "test profile: one worker node advertises it"
backend = "onnxruntime"
providers = ["CPUExecutionProvider"]
precisions = ["fp32", "fp16"]
input_size = [64, 128]
threads = 1
warmup_runs = 1
min_runs = 3
min_seconds = 0.0
"""


def test_without_ray_the_error_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    assert main(["sweep", "--ray", "127.0.0.1:6379", "--profiles", "cpu"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'segedge[fleet]'" in err


class _Waits:
    """Ray's wait and cancel as the gather loops use them: each wait answers from ``answers`` in turn."""

    def __init__(self, *answers):
        self.answers, self.timeouts, self.cancelled = list(answers), [], []

    def wait(self, refs, num_returns, timeout):
        self.timeouts.append(timeout)
        done = self.answers.pop(0)
        return done, [r for r in refs if r not in done]

    def cancel(self, ref, force):
        self.cancelled.append((ref, force))


def test_the_gather_step_returns_a_finished_job_and_past_the_deadline_cancels_every_pending_one(tmp_path):
    import time

    from segedge.flows.fleet import FleetError, _next_done

    pending = {"a": "job a", "b": "job b"}
    ray = _Waits(["b"])
    assert _next_done(ray, pending, None, None, tmp_path, ["job a", "job b"]) == "b"
    assert ray.timeouts == [None] and ray.cancelled == []  # no --timeout: wait as long as it takes
    ray = _Waits([])
    with pytest.raises(FleetError) as err:
        _next_done(ray, pending, time.monotonic() - 1, 60, tmp_path / "rows.sqlite", ["job a", "job b"])
    assert ray.timeouts == [0.0]  # past the deadline: no wait at all
    assert sorted(ray.cancelled) == [("a", True), ("b", True)]  # nothing keeps running on the devices
    assert str(err.value) == (f"2 jobs unfinished after 60 s (job a, job b); finished rows are in "
                              f"{tmp_path / 'rows.sqlite'}; rerun to resume")


def test_files_a_job_brings_follow_the_umask(tmp_path):
    import os

    from segedge.flows.fleet import _content_addressed

    old = os.umask(0o022)
    try:
        path = _content_addressed(tmp_path, "model.onnx", b"graph")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"graph" and path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import os

    # loopback only: without this Ray swaps 127.0.0.1 for the machine's outward address when connecting
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    ray = pytest.importorskip("ray", reason="needs Ray: pip install 'segedge[fleet]'")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    was = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    loopback = dict(node_ip_address="127.0.0.1", num_cpus=1, object_store_memory=80 * 1024 * 1024)
    cluster = Cluster(initialize_head=True, head_node_args=dict(**loopback, include_dashboard=False))
    try:
        device = cluster.add_node(**loopback, resources={"cpu-tiny": 1})
        root = tmp_path_factory.mktemp("fleet")
        (root / "cpu-tiny.toml").write_text(PROFILE)
        yield cluster, device, root
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = was
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_jobs_run_on_the_advertising_node_one_at_a_time_and_merge_here(cluster, tiny_checkpoint):
    from segedge.flows.fleet import sweep_on_ray

    cluster, device, root = cluster
    logs = []
    result = sweep_on_ray(cluster.address, [str(root / "cpu-tiny.toml")], ("unet",), None, None, root / "local.sqlite",
                          checkpoints={"unet": tiny_checkpoint.path}, eval_images=2, device_dir=str(root / "device"),
                          timeout_s=300, log=logs.append)
    assert sorted(r.job.precision for r in result.jobs) == ["fp16", "fp32"]
    assert [(r.error, r.node_id) for r in result.jobs] == [(None, device.node_id)] * 2
    first, second = sorted(result.jobs, key=lambda r: r.started)
    assert first.ended <= second.started, "two jobs shared the device"
    with ResultsStore(root / "local.sqlite") as store:
        rows = store.rows()
    assert sorted(r["precision"] for r in rows) == ["fp16", "fp32"]
    assert all(r["profile"] == "cpu-tiny" for r in rows)
    assert all(r["status"] == ("ok" if r["drop_high"] <= r["tolerance"] else  # the interval rule: ❔ when it straddles
                               "drop" if r["drop_low"] > r["tolerance"] else "uncertain") for r in rows)
    assert sum("rows (1 new)" in line for line in logs) == 2
    assert (root / "device" / "results.sqlite").is_file()  # the device keeps its rows for a rerun to resume


def test_a_profile_no_node_advertises_is_a_one_line_error(cluster, capsys):
    cluster, _, _ = cluster
    assert main(["sweep", "--ray", cluster.address, "--profiles", "cpu", "--timeout", "60"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "advertises 'cpu'" in err and """--resources '{"cpu": 1}'""" in err


def test_own_onnx_and_folder_data_are_exported_here_and_reach_the_node_once(cluster, blobs, capsys):
    """The user's ONNX and data on the fleet: exported here, sent through Ray's object store, the data fetched by
    the node once (the second job on it takes it from its own copy), rows scored on the very files scored here."""
    cluster, device, root = cluster
    onnx_path = stride4(root / "theirs.onnx")
    store = root / "own.sqlite"
    argv = ["sweep", "--ray", cluster.address, "--profiles", str(root / "cpu-tiny.toml"), "--onnx", f"s4={onnx_path}",
            "--data", f"folder:{blobs}", "--mean", "0", "--std", "1", "--quick", "--results", str(store),
            "--out", str(root / "own-export"), "--device-dir", str(root / "own-device"), "--timeout", "300"]
    assert main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    fetched = sorted(float(line.rsplit("fetched ", 1)[1].split(" MB")[0]) for line in err.splitlines()
                     if "fetched " in line)
    assert len(fetched) == 2 and fetched[0] == 0.0 < fetched[1], err  # one device: the data reached it once
    with ResultsStore(store) as results:
        rows = {r["precision"]: r for r in results.rows()}
    assert set(rows) == {"fp32", "fp16"} and all(r["status"] != "failed" for r in rows.values()), rows
    assert all(r["data"] == f"folder:{blobs}" and r["eval_images"] == 6 for r in rows.values())
    # the figures a local bench of the same artifact gives on the same folder
    artifact = root / "own-export" / Path(rows["fp32"]["artifact"]).parent.relative_to(root / "own-device" / "export")
    assert main(["bench", "--profile", str(root / "cpu-tiny.toml"), "--artifact", f"s4={artifact}", "--data",
                 f"folder:{blobs}", "--precisions", "fp32", "--quick", "--quiet", "--results", str(root / "here.sqlite"),
                 "--out", str(root / "here-export")]) == 0
    with ResultsStore(root / "here.sqlite") as results:
        (here,) = results.rows()
    for column in ("miou", "reference_miou", "drop_low", "drop_high", "argmax_agreement", "data_fingerprint"):
        assert rows["fp32"][column] == pytest.approx(here[column], abs=1e-9), column


def test_a_split_evaluation_over_two_devices_gives_exactly_the_unsplit_figures(cluster, blobs, capsys):
    """Two nodes advertise one profile: with --split-eval each slice of the evaluation images is scored on its
    own device, and the joined row holds the mIoU, interval and agreement of the unsplit run, bit for bit (an
    INT8 row, whose drop has an interval that is not a point)."""
    cluster, _, root = cluster
    loopback = dict(node_ip_address="127.0.0.1", num_cpus=1, object_store_memory=80 * 1024 * 1024)
    pair = [cluster.add_node(**loopback, resources={"cpu-pair": 1}) for _ in range(2)]
    try:
        (root / "cpu-pair.toml").write_text(PROFILE.replace('name = "cpu-tiny"', 'name = "cpu-pair"')
                                            .replace('precisions = ["fp32", "fp16"]', 'precisions = ["int8"]'))
        onnx_path = stride4(root / "pair.onnx")

        def sweep(store, *extra):
            argv = ["sweep", "--ray", cluster.address, "--profiles", str(root / "cpu-pair.toml"), "--onnx",
                    f"s4={onnx_path}", "--data", f"folder:{blobs}", "--mean", "0", "--std", "1", "--calib-images", "4",
                    "--quantize-classifier", "--quick", "--results",
                    str(store), "--out", str(root / "pair-export"), "--device-dir", str(root / "pair-device"),
                    "--timeout", "300", *extra]
            assert main(argv) == 0, capsys.readouterr().err
            return capsys.readouterr().err

        sweep(root / "whole.sqlite")
        err = sweep(root / "split.sqlite", "--split-eval")
        with ResultsStore(root / "whole.sqlite") as results:
            (whole,) = results.rows()
        with ResultsStore(root / "split.sqlite") as results:
            (split,) = results.rows()
        for column in ("miou", "reference_miou", "miou_drop", "drop_low", "drop_high", "argmax_agreement",
                       "eval_images", "data_fingerprint", "model_fingerprint", "artifact_sha256", "status"):
            assert split[column] == whole[column], column
        assert whole["eval_images"] == 6 and split["drop_low"] < split["drop_high"]
        assert "images 0-2 on" in err and "images 3-5 on" in err, err
        nodes = {n.node_id[:8] for n in pair}
        assert "split over 2 parts" in split["variant"] and all(n in split["variant"] for n in nodes), split["variant"]

        again = sweep(root / "split.sqlite", "--split-eval")  # a rerun measures nothing and fetches nothing
        assert "already measured" in again and "images 0-2" not in again, again
        with ResultsStore(root / "split.sqlite") as results:
            assert len(results.rows()) == 1
    finally:
        for node in pair:
            cluster.remove_node(node)
