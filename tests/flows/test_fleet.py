"""`segedge sweep --ray`: a local Ray head plus a worker node advertising a fake profile resource, on 127.0.0.1.

Checks that jobs go to the node that advertises the profile, that two jobs on one device never overlap in
time, and that their rows land in the local store. Skipped (with the reason) where Ray is not installed.
"""

from __future__ import annotations

import sys

import pytest

from segedge.cli.main import main
from segedge.core.results import ResultsStore

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
