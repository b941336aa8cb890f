import os
import sqlite3

import pytest

from segedge.core.errors import ArtifactError
from segedge.core.results import ResultsStore

KEY = dict(machine_id="m1", profile="cpu", model="unet", precision="int8", height=64, width=128, batch=1)


def test_rows_are_committed_as_they_are_added(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    store.add({**KEY, "status": "ok", "median_ms": 5.0, "machine": {"cpu": "x"}})
    # a second connection (another process, or after a kill) sees it without close()
    count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    assert count == 1
    store.close()


def test_resume_skips_finished_rows_but_retries_failed_ones(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({**KEY, "status": "failed", "reason": "boom"})
        assert not store.has_finished(**KEY)
        store.add({**KEY, "status": "drop", "median_ms": 5.0})
        assert store.has_finished(**KEY)
        assert not store.has_finished(**{**KEY, "machine_id": "m2"})


def test_latest_rows_keep_the_newest_per_key(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({**KEY, "status": "ok", "median_ms": 5.0})
        store.add({**KEY, "status": "ok", "median_ms": 4.0})
        store.add({**KEY, "precision": "fp32", "status": "ok", "median_ms": 9.0})
        latest = {r["precision"]: r["median_ms"] for r in store.latest_rows()}
    assert latest == {"int8": 4.0, "fp32": 9.0}


def test_merge_adds_another_machines_rows_once(tmp_path):
    with ResultsStore(tmp_path / "jetson.sqlite") as jetson:
        jetson.add({**KEY, "machine_id": "jetson", "profile": "jetson-orin-nano", "status": "ok", "median_ms": 30.0})
    with ResultsStore(tmp_path / "desk.sqlite") as desk:
        desk.add({**KEY, "status": "ok", "median_ms": 5.0})
        assert desk.merge(tmp_path / "jetson.sqlite") == 1
        assert desk.merge(tmp_path / "jetson.sqlite") == 0
        assert {r["profile"] for r in desk.rows()} == {"cpu", "jetson-orin-nano"}


def test_unknown_column_and_bad_files_are_refused(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="unknown result columns"):
            store.add({**KEY, "latency": 1})
        with pytest.raises(ArtifactError, match="does not exist"):
            store.merge(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ArtifactError, match="not a usable SQLite file"):
        ResultsStore(bad)


def older_store(path):
    """A store as the first segedge release wrote it: fewer columns than today's, two rows (one a 3-run smoke row)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE measurements (id INTEGER PRIMARY KEY, created TEXT, machine_id TEXT, machine TEXT, profile TEXT, "
               "backend TEXT, model TEXT, precision TEXT, height INTEGER, width INTEGER, batch INTEGER, status TEXT, "
               "median_ms REAL, runs INTEGER, miou REAL, miou_drop REAL)")
    for precision, runs in (("fp32", 20), ("int8", 3)):
        db.execute("INSERT INTO measurements (created, machine_id, machine, profile, backend, model, precision, height, width, "
                   "batch, status, median_ms, runs, miou, miou_drop) VALUES ('2024-01-01T00:00:00+00:00', 'm1', '{}', 'cpu', "
                   "'onnxruntime', 'unet', ?, 64, 128, 1, 'ok', 5.0, ?, 0.5, 0.1)", (precision, runs))
    db.commit()
    db.close()
    return path


def test_reading_an_older_store_never_writes_it(tmp_path):
    """A read used to ALTER an older store to today's columns: a report must leave the file as it found it."""
    path = older_store(tmp_path / "old.sqlite")
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with ResultsStore(path, read_only=True) as store:
        rows = {r["precision"]: r for r in store.latest_rows()}
    assert rows["fp32"]["e2e_ms"] is None and rows["fp32"]["quick"] == 0 and rows["int8"]["quick"] == 1
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]  # no journal left beside it


def test_reading_needs_no_write_access(tmp_path, monkeypatch):
    """As root a chmod stops nothing, so the check a non-root user meets is played by os.access; the store is also
    opened by SQLite in read-only mode, so any write during the read would fail."""
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.add({**KEY, "status": "ok", "median_ms": 5.0})
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode, **kw))
    with pytest.raises(ArtifactError, match="cannot write the results store"):
        ResultsStore(path)
    with ResultsStore(path, read_only=True) as store:
        assert [r["median_ms"] for r in store.rows()] == [5.0]
        with pytest.raises(ArtifactError, match="cannot save to the results store .*readonly"):
            store.add({**KEY, "status": "ok"})


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="file modes do not stop root")
def test_reading_a_store_in_a_read_only_folder(tmp_path):
    path = tmp_path / "ro" / "r.sqlite"
    with ResultsStore(path) as store:
        store.add({**KEY, "status": "ok", "median_ms": 5.0})
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        with ResultsStore(path, read_only=True) as store:
            assert len(store.rows()) == 1
    finally:
        path.parent.chmod(0o755)


def test_another_programs_database_is_never_written_into(tmp_path):
    path = tmp_path / "photos.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(ArtifactError, match="is not a segedge results store: it has no measurements table"):
            ResultsStore(path, read_only=read_only)
    assert path.read_bytes() == before
