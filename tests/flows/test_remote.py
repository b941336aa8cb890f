"""`--remote user@host` end to end against a real sshd on a loopback port, with throw-away keys.

The "device" is this machine: the test starts Debian's sshd on 127.0.0.1 only, and the remote side runs
segedge from this venv. Skipped (with the reason) where sshd or ssh-keygen is not installed.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segedge.cli.main import build_parser, main
from segedge.core.hardware import detect_machine
from segedge.flows.remote import compatible_versions, remote_path
from segedge.core.results import ResultsStore
from test_own_data import blobs, stride4  # noqa: F401,E402  (blobs is a fixture)

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
SEGEDGE = str(Path(sys.executable).parent / "segedge")  # the device runs segedge from this same venv
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
"""


# pure functions: no sshd needed ---------------------------------------------------------------------

def test_remote_paths_keep_home_expansion_and_quote_the_rest():
    assert remote_path("~/.cache/segedge/remote") == '"$HOME"/.cache/segedge/remote'
    assert remote_path("/tmp/a b") == "'/tmp/a b'"


def test_versions_are_compatible_on_the_same_major_minor():
    assert compatible_versions("0.1.0", "0.1.7")
    assert not compatible_versions("0.1.0", "0.2.0")
    assert not compatible_versions("0.1.0", "")


def test_export_flags_rebuilt_for_the_device_parse_back_the_same():
    from segedge.cli.args import device_argv

    argv = ["export", "--model", "unet", "--input-size", "64x128", "--int8", "--calib-images", "8",
            "--mean", "0.5,0.4,0.3", "--eval-images", "2", "--equalize", "--max-drop", "0.5",
            "--checkpoint", "w.pt", "--out", "here", "--remote", "me@dev"]
    args = build_parser().parse_args(argv)
    flags, files = device_argv(args.command_parser, args)
    assert files == {"\0checkpoint": Path("w.pt")}  # copied to the device, the flag names the copy
    assert "--out" not in flags and "--remote" not in flags  # a local folder, the ssh flags: not sent
    again = build_parser().parse_args(["export", *flags])
    same = [a.dest for a in args.command_parser._actions if a.dest not in ("help", "out", "checkpoint", "command_parser")
            and not a.dest.startswith(("remote", "ssh"))]
    assert {k: getattr(again, k) for k in same} == {k: getattr(args, k) for k in same}
    assert again.checkpoint == "\0checkpoint"


def test_every_export_flag_travels_to_the_device():
    """A flag added to a shared group reaches the device without a list to update: each optional flag of
    export, given a value, comes back from device_argv."""
    from segedge.cli.args import REMOTE_FLAGS, device_argv

    parser = build_parser()
    args = parser.parse_args(["export", "--model", "unet", "--remote", "me@dev"])
    for action in args.command_parser._actions:
        if not action.option_strings or action.dest in ("help", "out", *REMOTE_FLAGS):
            continue
        given = True if action.nargs == 0 else (action.choices[0] if action.choices else "3")
        setattr(args, action.dest, given if action.type is None or action.nargs == 0 else action.type(
            {"size": "8x8", "channel_values": "1,2,3", "probability": "0.3"}.get(action.type.__name__, "3")))
        flags, _ = device_argv(args.command_parser, args)
        assert max(action.option_strings, key=len) in flags, action.dest


def test_exports_for_the_device_use_the_scheme_its_dry_run_names():
    from segedge.backends.profiles import load_profile
    from segedge.flows.remote import device_int8_scheme

    cpu = load_profile("cpu")
    said = ["profile cpu runs here (aarch64 Neoverse, 4 cores) with onnxruntime; INT8 scheme arm"]
    assert device_int8_scheme(said, cpu) == "arm"
    assert device_int8_scheme(["profile cpu runs here (x86_64 EPYC) with onnxruntime; INT8 scheme x86-novnni"], cpu) == "x86-novnni"
    assert device_int8_scheme(["profile cpu runs here (...) with onnxruntime"], cpu) == "x86"  # an older device
    assert device_int8_scheme([], load_profile("jetson-orin-nano")) == "tensorrt"


def test_dry_run_names_backend_and_int8_scheme(capsys):
    assert main(["bench", "--profile", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "with onnxruntime; INT8 scheme " in out and out.strip().split()[-1] in ("x86", "x86-novnni", "arm")


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "segedge 0.2.0"


def test_remote_without_a_usable_ssh_config_is_one_line(capsys, tmp_path):
    code = main(["bench", "--profile", "cpu", "--remote", "dev", "--ssh-config", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "ssh config" in err and "does not exist" in err


# a real sshd on 127.0.0.1 -----------------------------------------------------------------------------

class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True, timeout=30)
        (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin yes\nPubkeyAuthentication yes\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n")
        self.config = root / "ssh_config"
        common = (f"  HostName 127.0.0.1\n  User {getpass.getuser()}\n  IdentityFile {root / 'user_key'}\n"
                  f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
        self.config.write_text(f"Host device\n  Port {self.port}\n{common}\nHost nothing-listens\n  Port {_free_port()}\n{common}")

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.process = subprocess.Popen([SSHD, "-f", str(self.root / "sshd_config"), "-D", "-e"],
                                        stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH's sshd, ssh and ssh-keygen (apt-get install openssh-server)")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        server.stop()
        pytest.skip(f"could not start a loopback sshd here: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    (root / "cpu-tiny.toml").write_text(PROFILE)
    return root


def bench_argv(sshd, work, tiny_checkpoint, device: Path, store: Path, segedge: str = SEGEDGE, profile=None):
    return ["bench", "--profile", profile or str(work / "cpu-tiny.toml"), "--models", "unet",
            "--checkpoint", f"unet={tiny_checkpoint.path}", "--eval-images", "2", "--quiet",
            "--results", str(store), "--out", str(work / "export"),
            "--remote", "device", "--remote-segedge", segedge, "--remote-dir", str(device), "--ssh-config", str(sshd.config)]


def test_bench_runs_on_the_device_merges_rows_and_never_copies_twice(sshd, work, tiny_checkpoint, capsys):
    device, store = work / "device", work / "local.sqlite"
    assert main(bench_argv(sshd, work, tiny_checkpoint, device, store)) == 0
    out, err = capsys.readouterr()
    assert "copied 4 of 4 files" in err  # checkpoint, model.onnx, model.sim.onnx, manifest (and the profile before)
    assert "| unet" in out
    with ResultsStore(store) as local:
        rows = local.rows()
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0
    assert rows[0]["machine_id"] == detect_machine().machine_id and rows[0]["profile"] == "cpu-tiny"
    with sqlite3.connect(device / "results.sqlite") as db:  # the device keeps its own store for resuming
        assert db.execute("SELECT count(*) FROM measurements").fetchone()[0] == 1
    # the device reused the shipped artifacts (hard links to blobs) instead of exporting again
    sim = next((device / "export" / "unet").glob("*/model.sim.onnx"))
    assert sim.stat().st_nlink == 2 and (device / "blobs" / rows[0]["artifact_sha256"]).is_file()

    assert main(bench_argv(sshd, work, tiny_checkpoint, device, store)) == 0
    err = capsys.readouterr().err
    assert "copied 0 of 4 files" in err and "already measured" in err
    with ResultsStore(store) as local:
        assert len(local.rows()) == 1  # merging again adds nothing


def test_a_refusal_on_the_device_comes_back_as_one_line(sshd, work, tiny_checkpoint, capsys):
    argv = bench_argv(sshd, work, tiny_checkpoint, work / "device-refuses", work / "refused.sqlite", profile="jetson-orin-nano")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("segedge: error: device: profile 'jetson-orin-nano' cannot run here")
    assert "a Jetson Orin Nano" in err
    assert not (work / "refused.sqlite").exists()


def test_missing_segedge_on_the_device_says_how_to_install_it(sshd, work, tiny_checkpoint, capsys):
    argv = bench_argv(sshd, work, tiny_checkpoint, work / "device-bare", work / "bare.sqlite", segedge="/nonexistent/segedge")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "segedge is not installed on device" in err and "pip install segedge==0.2.0" in err


def test_an_unreachable_device_is_one_line(sshd, capsys):
    code = main(["check", "unet", "--profile", "cpu", "--remote", "nothing-listens", "--ssh-config", str(sshd.config)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot reach nothing-listens over ssh" in err and "Connection refused" in err


def test_a_dropped_connection_keeps_finished_rows_and_a_rerun_fetches_them(sshd, work, tiny_checkpoint, capsys):
    # a segedge that finishes the sweep, then takes sshd down with the session before the store is fetched
    drops = work / "segedge-then-drop"
    drops.write_text(f'#!/bin/sh\n"{SEGEDGE}" "$@"\nstatus=$?\ncase " $* " in *" --results "*)\n'
                     f'  kill -9 "$(cat {sshd.root / "sshd.pid"})" $PPID;;\nesac\nexit $status\n')
    drops.chmod(0o755)
    device, store = work / "device-drops", work / "dropped.sqlite"
    try:
        assert main(bench_argv(sshd, work, tiny_checkpoint, device, store, segedge=str(drops))) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (
            "segedge: error: lost the connection to device during the sweep; finished rows stay in its store: "
            "rerun the same command to resume there and fetch the rest")
    finally:
        sshd.stop()
        sshd.start()
    with sqlite3.connect(device / "results.sqlite") as db:
        assert db.execute("SELECT count(*) FROM measurements WHERE status = 'ok'").fetchone()[0] == 1
    assert main(bench_argv(sshd, work, tiny_checkpoint, device, store)) == 0
    err = capsys.readouterr().err
    assert "already measured" in err and "merged 1 new rows" in err
    with ResultsStore(store) as local:
        assert [r["status"] for r in local.rows()] == ["ok"]


@pytest.fixture(scope="module")
def small_onnx(work, tiny_checkpoint):
    """An exported ONNX of its own, so the check tests run alone as well as after the bench tests."""
    from segedge.flows.export import ExportConfig, export_model

    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=(64, 128), eval_images=2,
                          store=work / "check-export", threads=2)
    return export_model(config).file("sim")


def test_check_runs_on_the_device_with_the_onnx_copied_there(sshd, work, small_onnx, capsys):
    local = main(["check", str(small_onnx), "--profile", "jetson-orin-nano"])
    here = capsys.readouterr().out
    argv = ["check", str(small_onnx), "--profile", "jetson-orin-nano", "--remote", "device", "--remote-segedge", SEGEDGE,
            "--remote-dir", str(work / "device-check"), "--ssh-config", str(sshd.config)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == local
    assert out.splitlines()[1:] == here.splitlines()[1:]  # the first line names the file, whose path differs
    assert "copied 2 of 2 files" in err  # the ONNX and the profile
    assert main(argv) == local
    assert "copied 0 of 2 files" in capsys.readouterr().err  # content-addressed: nothing is sent twice


def test_readmes_remote_segedge_with_a_tilde_expands_on_the_device(sshd, work, small_onnx, capsys):
    """README's line quotes '~/segedge/bin/segedge' so the workstation's shell leaves it alone: the device's
    shell must expand it (it once reached the device as a literal '~' and failed)."""
    import uuid

    folder = Path.home() / f".segedge-test-{uuid.uuid4().hex[:8]}"
    (folder / "bin").mkdir(parents=True)
    try:
        (folder / "bin" / "segedge").symlink_to(SEGEDGE)
        code = main(["check", str(small_onnx), "--profile", "jetson-orin-nano", "--remote", "device",
                     "--remote-segedge", f"~/{folder.name}/bin/segedge", "--remote-dir", "~/" + folder.name + "/cache",
                     "--ssh-config", str(sshd.config)])
        out, err = capsys.readouterr()
        assert code in (0, 1) and "not installed" not in err
        assert "TensorRT" in out  # the device's report came back
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# the user's model and data on the device (issue 29) ------------------------------------------------------

OWN_PROFILE = PROFILE.replace('precisions = ["fp32"]', 'precisions = ["fp32", "int8"]').replace(
    'name = "cpu-tiny"', 'name = "cpu-tiny-int8"')
COMPARED = ("miou", "reference_miou", "miou_drop", "drop_low", "drop_high", "argmax_agreement", "eval_images",
            "data_fingerprint")


@pytest.fixture(scope="module")
def own(work, blobs):
    """An outside ONNX (a stride-4 head, as mmseg writes them) and a folder dataset without split lists."""
    (work / "own.toml").write_text(OWN_PROFILE)
    return {"onnx": stride4(work / "theirs.onnx"), "data": blobs, "profile": work / "own.toml"}


def own_argv(sshd, own, work, device: Path, store: Path, *extra: str) -> list[str]:
    return ["bench", "--profile", str(own["profile"]), "--onnx", f"s4={own['onnx']}", "--data", f"folder:{own['data']}",
            "--mean", "0", "--std", "1", "--calib-images", "4", "--quantize-classifier", "--quick", "--quiet",
            "--results", str(store), "--out", str(work / "own-export"), "--remote", "device", "--remote-segedge", SEGEDGE,
            "--remote-dir", str(device), "--ssh-config", str(sshd.config), *extra]


def test_an_outside_onnx_on_a_folder_dataset_gives_the_rows_of_a_local_bench_and_its_data_travels_once(
        sshd, work, own, capsys):
    device, store = work / "device-own", work / "own.sqlite"
    assert main(own_argv(sshd, own, work, device, store)) == 0
    out, err = capsys.readouterr()
    assert "copied 13 of 13 data files" in err  # the 6 held-out images, their 6 masks and the index; nothing else
    with ResultsStore(store) as results:
        remote = {r["precision"]: r for r in results.rows()}
    assert set(remote) == {"fp32", "int8"} and all(r["status"] != "failed" for r in remote.values()), remote
    assert all(r["data"] == f"folder:{own['data']}" for r in remote.values())
    assert remote["fp32"]["machine_id"] == detect_machine().machine_id and "| s4" in out

    # a local bench of the same artifacts on the same folder: the same figures, scored on the same bytes
    artifact = work / "own-export" / Path(remote["int8"]["artifact"]).parent.relative_to("export")  # as on the device
    local_store = work / "own-local.sqlite"
    assert main(["bench", "--profile", str(own["profile"]), "--artifact", f"s4={artifact}", "--data",
                 f"folder:{own['data']}", "--quick", "--quiet", "--results", str(local_store),
                 "--out", str(work / "own-local-export")]) == 0
    capsys.readouterr()
    with ResultsStore(local_store) as results:
        local = {r["precision"]: r for r in results.rows()}
    for precision in ("fp32", "int8"):
        for column in COMPARED:
            assert remote[precision][column] == pytest.approx(local[precision][column], abs=1e-9), (precision, column)
    assert remote["int8"]["drop_high"] > remote["int8"]["drop_low"]  # an interval that is not a point

    assert main(own_argv(sshd, own, work, device, store)) == 0  # the second run sends no data byte
    err = capsys.readouterr().err
    assert "copied 0 of 13 data files (0.0 MB)" in err and "already measured" in err


def test_a_dropped_data_copy_resumes_without_resending_finished_files(sshd, work, own, capsys, monkeypatch):
    from segedge.flows import remote as remote_flow

    device, store = work / "device-drop-data", work / "drop-data.sqlite"
    real_run, uploads = remote_flow.SshTarget.run, []

    def drops_after_five(self, command, *args, what="the command", **kwargs):
        if what.startswith("the upload of") and what.endswith(".png"):
            uploads.append(what)
            if len(uploads) > 5:
                raise remote_flow.RemoteError("connection dropped (test)")
        return real_run(self, command, *args, what=what, **kwargs)

    monkeypatch.setattr(remote_flow.SshTarget, "run", drops_after_five)
    assert main(own_argv(sshd, own, work, device, store)) == 1
    assert "connection dropped (test)" in capsys.readouterr().err
    before = {p.name for p in (device / "blobs").iterdir()}
    monkeypatch.setattr(remote_flow.SshTarget, "run", real_run)
    assert main(own_argv(sshd, own, work, device, store)) == 0
    err = capsys.readouterr().err
    data = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (device / "data").rglob("*") if p.is_file()}
    landed = len(data & before)  # the five images, and the index when its hash sorted before the sixth image
    assert len(data) == 13 and landed in (5, 6), (len(data), landed)
    assert f"copied {13 - landed} of 13 data files" in err  # what landed is not sent again


def test_device_data_is_used_where_it_is_the_same_files_and_refused_where_it_is_not(sshd, work, own, capsys):
    device = work / "device-has-data"
    assert main(own_argv(sshd, own, work, device, work / "dd.sqlite", "--device-data", f"folder:{own['data']}")) == 0
    err = capsys.readouterr().err
    assert "data files" not in err  # nothing of the data was sent
    with ResultsStore(work / "dd.sqlite") as results:
        assert {r["status"] for r in results.rows()} <= {"ok", "drop", "uncertain"}

    other = work / "other-copy"
    shutil.copytree(own["data"], other)
    from PIL import Image

    from segedge.data.datasets import SegmentationFolder

    mask = SegmentationFolder(other, "val").samples[0].mask  # a scored one (the holdout), not a training mask

    changed = __import__("numpy").asarray(Image.open(mask)).copy()
    changed[0, :] = 1 - changed[0, :]
    Image.fromarray(changed).save(mask)
    code = main(own_argv(sshd, own, work, work / "device-other-copy", work / "dd2.sqlite", "--device-data",
                         f"folder:{other}"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("segedge: error: device: the evaluation data here (folder:"), last
    assert "is not the data the workstation scored" in last and "nothing was measured" in last
    with ResultsStore(work / "dd2.sqlite") as results:
        assert results.rows() == []


def test_a_device_without_room_for_the_files_is_refused_before_any_copy(sshd, work, own, capsys, monkeypatch):
    from segedge.flows import remote as remote_flow

    real = remote_flow.free_bytes(remote_flow.SshTarget("device", ssh_config=sshd.config, remote_dir=str(work)))
    assert real is not None and real > 0  # df -Pk answers on this device
    monkeypatch.setattr(remote_flow, "free_bytes", lambda target: 1000)
    device = work / "device-full"
    code = main(own_argv(sshd, own, work, device, work / "full.sqlite"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("segedge: error: device has 0.0 MB free under"), last
    assert "nothing was copied" in last
    landed = list((device / "blobs").glob("*"))  # only the profile (under 1000 bytes), sent before the check
    assert len(landed) == 1 and landed[0].read_bytes() == own["profile"].read_bytes()
